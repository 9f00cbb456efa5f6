r"""RegMix's regression step on CSVs in RegMix's layout (released runs, or our own proxies' results).

  python -m experiments.fit_regmix --mixtures=../shared/data/regmix/train_mixture_1m.csv \
      --losses=../shared/data/regmix/train_pile_loss_1m.csv \
      --target=metric/the_pile_pile_cc_val_loss \
      --predict=../shared/data/regmix/test_mixture_1m.csv --out=/tmp/pred.csv \
      [--actual=../shared/data/regmix/test_pile_loss_1m.csv]

Writes one prediction per row of --predict (columns index, predicted), in its order; prints the proposed
mixture (simulation over the training mixtures' mean as prior); with --actual, the Spearman correlation.
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


def main(argv):
  del argv
  names, x_NxD, y_N = regmix.load_training_set(_MIXTURES.value, _LOSSES.value, _TARGET.value)
  if _PREDICT.value:
    header, rows = regmix.read_csv(_PREDICT.value, 'predict')
    if [h for h in header if h != 'index'] != names:
      raise ValueError(f'predict: columns of {_PREDICT.value!r} differ from the mixtures\'')
    if not _OUT.value:
      raise ValueError('out: give --out=FILE for the predictions')
    cli.check_writable('out', _OUT.value, directory=False)
  if _SAMPLES.value < _TOP_K.value or _TOP_K.value < 1:
    raise ValueError(f'top_k: {_TOP_K.value} must be in [1, samples={_SAMPLES.value}]')
  if _ACTUAL.value and not _PREDICT.value:
    raise ValueError('actual: --actual needs --predict (the rows it holds the truth for)')
  actual = (regmix.load_training_set(_PREDICT.value, _ACTUAL.value, _TARGET.value)[2]
            if _ACTUAL.value else None)
  model = regmix.Regressor().fit(x_NxD, y_N)
  if _PREDICT.value:
    index_N = rows[:, header.index('index')]
    pred_N = model.predict(rows[:, [i for i, h in enumerate(header) if h != 'index']])
    atomic.write_text(_OUT.value, 'index,predicted\n' + ''.join(
        f'{int(i) if float(i).is_integer() else i},{float(p)!r}\n' for i, p in zip(index_N, pred_N)))
    print(f'wrote {len(pred_N)} predictions to {_OUT.value}')
    if actual is not None:
      print(f'Spearman rank correlation (predicted vs actual {_TARGET.value}): '
            f'{regmix.spearman(pred_N, actual):.4f}')
  best_D = regmix.search(model, x_NxD.mean(0), _SAMPLES.value, _TOP_K.value)
  print('proposed mixture (minimizing the target):')
  for name, w in sorted(zip(names, best_D), key=lambda t: -t[1]):
    print(f'  {name:<40} {w:.4f}')


def console():
  """The `mixlab-fit-regmix` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
