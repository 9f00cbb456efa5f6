r"""RegMix's regression step on CSVs in RegMix's layout (released runs, or our proxies' results).

  python -m experiments.fit_regmix --mixtures=../shared/data/regmix/train_mixture_1m.csv \
      --losses=../shared/data/regmix/train_pile_loss_1m.csv \
      --target=metric/the_pile_pile_cc_val_loss \
      --predict=../shared/data/regmix/test_mixture_1m.csv --out=/tmp/pred.csv \
      [--actual=../shared/data/regmix/test_pile_loss_1m.csv] [--regressor=cv|lightgbm] [--folds=5]

The regressor: --regressor=cv (default) picks one of a small grid (LightGBM settings, ridge on
weights and log-weights) by mean Spearman over --folds folds of the TRAINING runs, prints the table;
--regressor=lightgbm is LightGBM at RegMix's own settings. The choice is made before --predict and
--actual are read. Writes one prediction per row of --predict (columns index, predicted), in its
order; prints the proposed mixture (simulation over the training mixtures' mean as prior); with
--actual, the Spearman correlation on the --predict rows of the chosen regressor and of LightGBM at
RegMix's settings, both fit on the training runs only.
"""

from absl import flags

from experiments.training import atomic
from experiments.training import cli
from mixing.mixers import regmix

_MIXTURES = flags.DEFINE_string('mixtures', None, 'CSV of training mixtures.', required=True)
_LOSSES = flags.DEFINE_string('losses', None, 'CSV of their metrics, rows matched by index.',
                              required=True)
_TARGET = flags.DEFINE_string('target', None, 'The metric column to regress.', required=True)
_PREDICT = flags.DEFINE_string('predict', None, 'CSV of mixtures to predict (same columns).')
_OUT = flags.DEFINE_string('out', None, 'Where to write the predictions (index, predicted).')
_ACTUAL = flags.DEFINE_string('actual', None, 'CSV with the true target for --predict rows.')
_SAMPLES = flags.DEFINE_integer('samples', 100_000, 'Mixtures scored in the simulation search.')
_TOP_K = flags.DEFINE_integer('top_k', 100, 'Best mixtures averaged into the proposal.')
_REGRESSOR = flags.DEFINE_enum('regressor', 'cv', ['cv', 'lightgbm'],
                               "cv: chosen by k-fold CV on the training runs; lightgbm: RegMix's.")
_FOLDS = flags.DEFINE_integer('folds', 5, 'Folds of the cross-validation (--regressor=cv).',
                              lower_bound=2)


def main(argv):
  del argv
  names, x_NxD, y_N = regmix.load_training_set(_MIXTURES.value, _LOSSES.value, _TARGET.value)
  if _SAMPLES.value < _TOP_K.value or _TOP_K.value < 1:
    raise ValueError(f'top_k: {_TOP_K.value} must be in [1, samples={_SAMPLES.value}]')
  if _ACTUAL.value and not _PREDICT.value:
    raise ValueError('actual: --actual needs --predict (the rows it holds the truth for)')
  if _PREDICT.value:
    if not _OUT.value:
      raise ValueError('out: give --out=FILE for the predictions')
    cli.check_writable('out', _OUT.value, directory=False)
  paper = regmix.Regressor(**regmix.REGMIX_PAPER)
  if _REGRESSOR.value == 'cv':  # on the training runs alone: --predict and --actual are unread yet
    model, table = regmix.choose_by_cv(x_NxD, y_N, folds=_FOLDS.value)
    print(f'regressor chosen by cross-validation on the {len(y_N)} training runs '
          f'(Spearman on held-out folds, mean +- std):')
    print(table.format())
    chosen = table.chosen
  else:
    model, chosen = paper.fit(x_NxD, y_N), "lightgbm at RegMix's settings"
    print(f'regressor: {chosen} {regmix.REGMIX_PAPER}')
  if _PREDICT.value:
    header, rows = regmix.read_csv(_PREDICT.value, 'predict')
    if [h for h in header if h != 'index'] != names:
      raise ValueError(f'predict: columns of {_PREDICT.value!r} differ from the mixtures\'')
    actual = (regmix.load_training_set(_PREDICT.value, _ACTUAL.value, _TARGET.value)[2]
              if _ACTUAL.value else None)
    index_N = rows[:, header.index('index')]
    x_MxD = rows[:, [i for i, h in enumerate(header) if h != 'index']]
    pred_M = model.predict(x_MxD)
    atomic.write_text(_OUT.value, 'index,predicted\n' + ''.join(
        f'{int(i) if float(i).is_integer() else i},{float(p)!r}\n'
        for i, p in zip(index_N, pred_M)))
    print(f'wrote {len(pred_M)} predictions to {_OUT.value}')
    if actual is not None:
      if _REGRESSOR.value == 'cv':
        paper.fit(x_NxD, y_N)
      print(f'Spearman on the {len(pred_M)} --predict rows (predicted vs actual {_TARGET.value}); '
            f'both fit on the {len(y_N)} training runs:')
      rows_out = [(f'chosen ({_REGRESSOR.value}): {chosen}', regmix.spearman(pred_M, actual)),
                  ("lightgbm at RegMix's settings", regmix.spearman(paper.predict(x_MxD), actual))]
      width = max(len(name) for name, _ in rows_out)
      for name, rho in rows_out:
        print(f'  {name:<{width}}  {rho:.4f}')
  best_D = regmix.search(model, x_NxD.mean(0), _SAMPLES.value, _TOP_K.value)
  print('proposed mixture (minimizing the target):')
  for name, w in sorted(zip(names, best_D), key=lambda t: -t[1]):
    print(f'  {name:<40} {w:.4f}')


def console():
  """The `mixlab-fit-regmix` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
