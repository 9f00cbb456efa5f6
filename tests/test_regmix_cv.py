"""RegMix's regressor chosen by k-fold cross-validation on the training runs: the choice, that it
sees only the rows it is given (within a fold, only that fold's training rows), small-N cases, the
config field, and the fit_regmix CLI (`--regressor`, `--folds`, the comparison with --actual)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from configs import base
from mixing import registry
from mixing.mixers import regmix

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'regmix')
# pylint: disable=protected-access
_FAST = (regmix._lgbm(200, 0.05, 7, 5), regmix._ridge('log', 1.0), regmix._ridge('weights', 1.0))
_BAD = regmix._lgbm(1, 0.5, 2, 5)  # clearly bad: a single stump (two distinct predictions at most)
_PAPER = regmix._lgbm(**regmix.REGMIX_PAPER)
# pylint: enable=protected-access


def _synthetic(n, seed, d=6):
  """y: a smooth function of the mixture (log-linear in the shares, plus a curvature) + noise."""
  rng = np.random.default_rng(seed)
  x = regmix.sample_mixtures(np.ones(d), n, seed)
  coef = np.linspace(-1.0, 0.5, d)
  y = 3.0 + np.log(x + 1e-3) @ coef * 0.1 + 2.0 * ((x - 1 / d) ** 2).sum(1)
  return x, y + rng.normal(0, 0.01, n)


def test_cv_picks_a_candidate_not_worse_than_a_bad_one_on_held_out_rows():
  x, y = _synthetic(120, 0)
  x_test, y_test = _synthetic(200, 1)
  model, table = regmix.choose_by_cv(x, y, folds=5, candidates=(_BAD, *_FAST))
  assert table.chosen != _BAD.name and table.folds == 5
  assert [name for name, _, _ in table.rows] == [c.name for c in (_BAD, *_FAST)]
  bad = _BAD.make().fit(x, y)
  assert regmix.spearman(model.predict(x_test), y_test) >= regmix.spearman(
      bad.predict(x_test), y_test)
  assert regmix.spearman(model.predict(x_test), y_test) > 0.8
  text = table.format()
  assert 'CV Spearman (5 folds)' in text and f'chosen: {table.chosen}' in text


class _Spy:
  """Records the rows it is fit on and asked to predict."""
  seen = []

  def __init__(self):
    self._ridge = regmix.Ridge(1.0)

  def fit(self, x, y):
    _Spy.seen.append(('fit', {tuple(r) for r in x}))
    self._ridge.fit(x, y)
    return self

  def predict(self, x):
    _Spy.seen.append(('predict', {tuple(r) for r in x}))
    return self._ridge.predict(x)


def test_each_fold_fits_on_its_training_rows_and_scores_the_rest():
  x, y = _synthetic(40, 2)
  _Spy.seen = []
  regmix.choose_by_cv(x, y, folds=4, candidates=(regmix.Candidate('spy', _Spy),))
  calls = _Spy.seen
  assert [kind for kind, _ in calls] == ['fit', 'predict'] * 4 + ['fit']  # 4 folds, then the refit
  held_out = [rows for kind, rows in calls[1:8:2]]
  assert all(len(h) == 10 for h in held_out) and len(set().union(*held_out)) == 40
  for (_, fit_rows), (_, predict_rows) in zip(calls[0:8:2], calls[1:8:2]):
    assert not fit_rows & predict_rows and len(fit_rows | predict_rows) == 40
  assert len(calls[-1][1]) == 40  # the winner is refit on all the rows it was given


def test_choice_sees_only_the_training_rows_and_is_deterministic():
  x, y = _synthetic(120, 3)
  x_held, _ = _synthetic(50, 4)  # never passed: the choice cannot depend on it
  x_copy, y_copy = x.copy(), y.copy()
  runs = [regmix.choose_by_cv(x, y, candidates=_FAST, seed=7) for _ in range(2)]
  assert runs[0][1] == runs[1][1]
  np.testing.assert_array_equal(runs[0][0].predict(x_held), runs[1][0].predict(x_held))
  np.testing.assert_array_equal(x, x_copy)  # inputs untouched
  np.testing.assert_array_equal(y, y_copy)
  assert regmix.choose_by_cv(x, y, candidates=_FAST, seed=8)[1].rows != runs[0][1].rows  # folds


def test_folds_beyond_the_runs_shrink_and_too_few_runs_fall_back():
  x, y = _synthetic(12, 5)
  model, table = regmix.choose_by_cv(x, y, folds=50, candidates=_FAST)
  assert table.folds == 4 and 'folds: 50 -> 4' in table.note  # >= 3 held out per fold
  assert model.predict(x).shape == (12,)
  model, table = regmix.choose_by_cv(x[:6], y[:6], folds=5, candidates=_FAST)
  assert table.folds == 0 and not table.rows and 'too few' in table.note
  assert table.chosen == _PAPER.name
  assert model.predict(x).shape == (12,)
  with pytest.raises(ValueError, match='folds: 1'):
    regmix.choose_by_cv(x, y, folds=1)


def test_ridge_recovers_a_linear_function():
  x, _ = _synthetic(60, 6)
  y = x @ np.arange(6.0) + 1.0
  np.testing.assert_allclose(regmix.Ridge(1e-9).fit(x, y).predict(x), y, atol=1e-5)


@pytest.mark.parametrize('value', ['cv', 'lightgbm'])
def test_config_regressor_values_pass(value):
  config = base.get_config().mixer
  config.name, config.regmix.regressor = 'regmix', value
  registry.check(config, 3)


def test_config_regressor_bad_value_is_named():
  config = base.get_config().mixer
  assert config.regmix.regressor == 'cv'
  config.name, config.regmix.regressor = 'regmix', 'xgboost'
  with pytest.raises(ValueError, match="mixer.regmix.regressor: 'xgboost'"):
    registry.check(config, 3)


def _run(args, timeout=120):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'experiments.fit_regmix', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _csvs(tmp_path, n=40, seed=8):
  """Training (30 runs) and prediction (10) CSVs in RegMix's layout, 3 domains."""
  x, y = _synthetic(n, seed, d=3)
  header = 'index,train_a,train_b,train_c\n'
  mix = lambda rows: header + ''.join(
      f'{i},{",".join(str(float(v)) for v in r)}\n' for i, r in enumerate(rows))
  loss = lambda col: 'index,loss\n' + ''.join(f'{i},{float(v)}\n' for i, v in enumerate(col))
  texts = {'mix': mix(x[:30]), 'loss': loss(y[:30]), 'test_mix': mix(x[30:]),
           'test_loss': loss(y[30:])}
  for name, text in texts.items():
    (tmp_path / f'{name}.csv').write_text(text)
  return {name: str(tmp_path / f'{name}.csv') for name in texts}


def test_cli_cv_prints_the_table_and_the_comparison(tmp_path):
  p = _csvs(tmp_path)
  proc = _run([f'--mixtures={p["mix"]}', f'--losses={p["loss"]}', '--target=loss',
               '--samples=200', '--top_k=10', '--regressor=cv', '--folds=3',
               f'--predict={p["test_mix"]}', f'--actual={p["test_loss"]}',
               f'--out={tmp_path}/pred.csv'])
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  assert 'CV Spearman (3 folds)' in out and '<- chosen' in out and 'chosen: ' in out
  assert all(c.name in out for c in regmix.CANDIDATES)
  assert "lightgbm at RegMix's settings" in out and 'chosen (cv): ' in out
  assert len((tmp_path / 'pred.csv').read_text().splitlines()) == 1 + 10


@pytest.mark.parametrize('flag,expected', [('--regressor=xgboost', 'regressor'),
                                           ('--folds=1', 'folds')])
def test_cli_bad_regressor_flags_are_one_line_exit_2(tmp_path, flag, expected):
  p = _csvs(tmp_path)
  proc = _run([f'--mixtures={p["mix"]}', f'--losses={p["loss"]}', '--target=loss', flag])
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr
  assert lines[0].startswith('error: ') and expected in lines[0]


@pytest.mark.skipif(not os.path.exists(os.path.join(DATA, 'train_mixture_1m.csv')),
                    reason='RegMix released runs not in ../shared/data/regmix')
def test_released_runs_load_and_cross_validate_quickly():
  names, x, y = regmix.load_training_set(os.path.join(DATA, 'train_mixture_1m.csv'),
                                         os.path.join(DATA, 'train_pile_loss_1m.csv'),
                                         'metric/the_pile_pile_cc_val_loss')
  assert x.shape == (512, len(names))
  _, table = regmix.choose_by_cv(x, y, folds=3, candidates=_FAST[1:2])
  assert table.rows[0][1] > 0.5
