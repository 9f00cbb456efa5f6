"""RegMix (Liu et al. 2024): regress a metric on the mixture, then search the simplex by simulation.

1. Sample N training mixtures from a Dirichlet prior centred on the token distribution, with
   concentrations over two orders of magnitude so both near-prior and extreme mixtures appear.
2. Train N small proxies on them (the pipelines layer runs them as one population).
3. Fit a regressor from mixture to the target metric: LightGBM at RegMix's settings
   (`mixer.regmix.regressor = 'lightgbm'`), or (the default, 'cv') the candidate of a small grid
   (LightGBM settings, ridge on weights / log-weights) with the best mean Spearman in k-fold
   cross-validation on the proxies themselves (`choose_by_cv`).
4. Score many random mixtures from the same prior; the mean of the top k is the proposed mixture.
"""

import csv
import dataclasses
from typing import Callable, Protocol, Sequence

from absl import logging
import numpy as np

from mixing import mixer as mixer_lib
from mixing import registry

# What every LightGBM fit here fixes; everything else is LightGBM's default unless a setting below
# names it. (The settings used before, learning_rate 5e-3, num_leaves 15, 2000 rounds, bagging, came
# with their Spearman on RegMix's 256 test runs, so were likely tuned on them; they are gone: the
# regressor is RegMix's own settings, or chosen by cross-validation on the training runs only.)
LGBM_PARAMS = dict(objective='regression', verbosity=-1, num_threads=1, seed=0, deterministic=True)
# RegMix's own LightGBM settings (their regression code: 1000 rounds at learning rate 0.01, the
# default 31 leaves).
REGMIX_PAPER = dict(rounds=1000, learning_rate=0.01, num_leaves=31)
LGBM_ROUNDS = REGMIX_PAPER['rounds']


def sample_mixtures(prior_D, n: int, seed: int, min_scale: float = 0.1, max_scale: float = 5.0
                    ) -> np.ndarray:
  """n mixtures ~ Dirichlet(s * K * prior), s log-uniform in [min_scale, max_scale] per mixture."""
  rng = np.random.default_rng(seed)
  prior_D = np.asarray(prior_D, np.float64)
  prior_D = prior_D / prior_D.sum()
  k = len(prior_D)
  scale_N = np.exp(rng.uniform(np.log(min_scale), np.log(max_scale), n))
  alpha_NxD = np.maximum(scale_N[:, None] * k * prior_D[None], 1e-3)
  return np.stack([rng.dirichlet(a) for a in alpha_NxD])


class Regressor:
  """LightGBM regressor from mixture weights (rows) to a metric; by default at RegMix's settings."""

  def __init__(self, rounds: int = LGBM_ROUNDS, **params):
    self.rounds = rounds
    self.params = {**LGBM_PARAMS, **{k: v for k, v in REGMIX_PAPER.items() if k != 'rounds'},
                   **params}
    self._booster = None

  def fit(self, mixtures_NxD, y_N) -> 'Regressor':
    import lightgbm as lgb  # pylint: disable=g-import-not-at-top
    x = np.asarray(mixtures_NxD, np.float64)
    y = np.asarray(y_N, np.float64)
    self._booster = lgb.train(self.params, lgb.Dataset(x, y), num_boost_round=self.rounds)
    return self

  def predict(self, mixtures_NxD) -> np.ndarray:
    return self._booster.predict(np.asarray(mixtures_NxD, np.float64))


def search(regressor: Regressor, prior_D, samples: int = 100_000, top_k: int = 100, seed: int = 0,
           minimize: bool = True) -> np.ndarray:
  """Scores `samples` mixtures from the prior; returns the mean of the top_k best predicted."""
  candidates_NxD = sample_mixtures(prior_D, samples, seed)
  score_N = regressor.predict(candidates_NxD)
  order = np.argsort(score_N if minimize else -score_N, kind='stable')[:top_k]
  best_D = candidates_NxD[order].mean(0)
  return best_D / best_D.sum()


def spearman(a_N, b_N) -> float:
  from scipy import stats  # pylint: disable=g-import-not-at-top
  return float(stats.spearmanr(a_N, b_N).statistic)


# --- Choosing the regressor: k-fold cross-validation on the training runs only. -------------------

class Model(Protocol):
  def fit(self, mixtures_NxD, y_N) -> 'Model': ...
  def predict(self, mixtures_NxD) -> np.ndarray: ...


class Ridge:
  """Ridge regression (closed form, unpenalized intercept) on standardized features of the mixture:
  the weights ('weights'), log(weights + eps) ('log'), or both side by side ('both')."""

  def __init__(self, alpha: float, features: str = 'weights', eps: float = 1e-3):
    if features not in ('weights', 'log', 'both'):
      raise ValueError(f'features: {features!r} is not weights, log or both')
    self.alpha, self.features, self.eps = alpha, features, eps
    self._mean = self._scale = self._coef = self._intercept = None

  def _x(self, mixtures_NxD) -> np.ndarray:
    w = np.asarray(mixtures_NxD, np.float64)
    parts = {'weights': [w], 'log': [np.log(w + self.eps)], 'both': [w, np.log(w + self.eps)]}
    return np.concatenate(parts[self.features], axis=1)

  def fit(self, mixtures_NxD, y_N) -> 'Ridge':
    x = self._x(mixtures_NxD)
    y = np.asarray(y_N, np.float64)
    self._mean, std = x.mean(0), x.std(0)
    self._scale = np.where(std > 0, std, 1.0)
    z = (x - self._mean) / self._scale
    gram = z.T @ z + self.alpha * np.eye(z.shape[1])
    self._coef = np.linalg.solve(gram, z.T @ (y - y.mean()))
    self._intercept = y.mean()
    return self

  def predict(self, mixtures_NxD) -> np.ndarray:
    return (self._x(mixtures_NxD) - self._mean) / self._scale @ self._coef + self._intercept


@dataclasses.dataclass(frozen=True)
class Candidate:
  name: str
  make: Callable[[], Model]  # a fresh, unfitted model


def _lgbm(rounds, learning_rate, num_leaves, min_data_in_leaf=20) -> Candidate:
  name = f'lightgbm r={rounds} lr={learning_rate} leaves={num_leaves} min_leaf={min_data_in_leaf}'
  params = dict(learning_rate=learning_rate, num_leaves=num_leaves,
                min_data_in_leaf=min_data_in_leaf)
  return Candidate(name, lambda: Regressor(rounds, **params))


def _ridge(features, alpha) -> Candidate:
  return Candidate(f'ridge {features} alpha={alpha:g}', lambda: Ridge(alpha, features))


# Fixed before any test-set number was seen. LightGBM: RegMix's settings (min_data_in_leaf 20 is
# LightGBM's default) and smaller trees / smaller leaves, plus fewer faster rounds; ridge on the
# weights, on log-weights (loss is closer to log-linear in a domain's share), and on both.
CANDIDATES = (
    _lgbm(**REGMIX_PAPER), _lgbm(1000, 0.01, 31, 5), _lgbm(1000, 0.01, 7, 20),
    _lgbm(1000, 0.01, 7, 5), _lgbm(300, 0.05, 15, 10),
    *(_ridge(f, a) for f in ('weights', 'log', 'both') for a in (0.01, 1.0, 100.0)))
MIN_CV_RUNS = 10  # fewer training runs: RegMix's LightGBM, no CV
MIN_FOLD_ROWS = 3  # rows of each held-out fold (its Spearman needs a few); folds shrink to fit


@dataclasses.dataclass(frozen=True)
class CVTable:
  """Each candidate's Spearman over the k held-out folds (mean, std), the winner, and why."""
  rows: tuple[tuple[str, float, float], ...]  # (name, mean, std), in candidate order
  chosen: str
  folds: int  # 0: no cross-validation (too few runs)
  note: str = ''

  def format(self) -> str:
    lines = [self.note] if self.note else []
    if self.rows:
      width = max(len(name) for name, _, _ in self.rows)
      lines.append(f'{"candidate":<{width}}  CV Spearman ({self.folds} folds)')
      lines += [f'{name:<{width}}  {mean:.4f} +- {std:.4f}{"  <- chosen" * (name == self.chosen)}'
                for name, mean, std in self.rows]
    lines.append(f'chosen: {self.chosen}')
    return '\n'.join(lines)


def choose_by_cv(mixtures_NxD, y_N, folds: int = 5, seed: int = 0,
                 candidates: Sequence[Candidate] = CANDIDATES) -> tuple[Model, CVTable]:
  """The candidate with the best mean Spearman over `folds` held-out folds of these (training) runs,
  refit on all of them; and the table. Ties go to the earlier candidate; a fold whose Spearman is
  undefined (constant predictions or targets) counts 0. Folds shrink to min(folds, N // 3) so each
  held-out fold has >= 3 rows; under MIN_CV_RUNS runs there is no CV: RegMix's own LightGBM."""
  x = np.asarray(mixtures_NxD, np.float64)
  y = np.asarray(y_N, np.float64)
  if folds < 2:
    raise ValueError(f'folds: {folds} must be >= 2')
  if not candidates:
    raise ValueError('candidates: none given')
  n = len(y)
  if n < MIN_CV_RUNS:
    note = f'{n} runs (< {MIN_CV_RUNS}) are too few to cross-validate: RegMix\'s own LightGBM'
    paper = Regressor(**REGMIX_PAPER)
    return paper.fit(x, y), CVTable((), _lgbm(**REGMIX_PAPER).name, 0, note)
  k = min(folds, n // MIN_FOLD_ROWS)
  note = f'folds: {folds} -> {k} ({n} runs, >= {MIN_FOLD_ROWS} held out per fold)' * (k != folds)
  fold_N = np.empty(n, int)
  fold_N[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
  rows = []
  for candidate in candidates:
    scores = []
    for f in range(k):
      train, held = fold_N != f, fold_N == f
      pred = candidate.make().fit(x[train], y[train]).predict(x[held])
      rho = spearman(pred, y[held]) if np.ptp(pred) > 0 and np.ptp(y[held]) > 0 else 0.0
      scores.append(0.0 if np.isnan(rho) else rho)
    rows.append((candidate.name, float(np.mean(scores)), float(np.std(scores))))
  best = max(range(len(rows)), key=lambda i: (rows[i][1], -i))
  table = CVTable(tuple(rows), candidates[best].name, k, note)
  return candidates[best].make().fit(x, y), table


# --- RegMix's CSV layout: an `index` column, then one column per domain (weights) or metric. ----

def read_csv(path: str, field: str, nonnegative=None) -> tuple[list[str], np.ndarray]:
  """(header, rows as float64), or a ValueError naming the file.

  nonnegative: the columns (names; None: every column but `index`) whose values must be finite and
  >= 0 (weights, losses), where present; the first that is not is named by its line and column.
  """
  try:
    with open(path, newline='') as f:
      lines = [(number, row) for number, row in enumerate(csv.reader(f), 1) if row]
  except OSError as e:
    raise ValueError(f'{field}: cannot read {path!r}: {e.strerror}') from None
  if len(lines) < 2 or 'index' not in lines[0][1]:
    raise ValueError(f'{field}: {path!r} needs a header with an `index` column and data rows')
  header = lines[0][1]
  if any(len(row) != len(header) for _, row in lines):
    raise ValueError(f'{field}: {path!r} has rows of different lengths')
  try:
    values = np.array([[float(v) for v in row] for _, row in lines[1:]], np.float64)
  except ValueError as e:
    raise ValueError(f'{field}: {path!r} has a value that is not a number ({e})') from None
  columns = [h for h in header if h != 'index'] if nonnegative is None else nonnegative
  for name in (c for c in columns if c in header):
    column = values[:, header.index(name)]
    bad = np.flatnonzero(~(np.isfinite(column) & (column >= 0)))
    if len(bad):
      raise ValueError(f'{field}: {path!r} line {lines[bad[0] + 1][0]}, column {name!r}: '
                       f'{float(column[bad[0]])!r} is not a finite value >= 0')
  return header, values


def load_training_set(mixtures_path: str, losses_path: str, target: str):
  """Mixture rows and the target column, matched by `index`; the weight column names."""
  mix_header, mix = read_csv(mixtures_path, 'mixtures')
  loss_header, loss = read_csv(losses_path, 'losses', [target])
  if target not in loss_header:
    raise ValueError(f'target: column {target!r} is not in {losses_path!r}')
  mix_index = mix[:, mix_header.index('index')]
  loss_index = loss[:, loss_header.index('index')]
  if len(mix_index) != len(loss_index) or set(mix_index) != set(loss_index):
    raise ValueError(f'losses: rows of {losses_path!r} do not match the mixtures of '
                     f'{mixtures_path!r} by index ({len(loss_index)} vs {len(mix_index)} rows)')
  y_by_index = dict(zip(loss_index, loss[:, loss_header.index(target)]))
  weight_cols = [i for i, h in enumerate(mix_header) if h != 'index']
  return [mix_header[i] for i in weight_cols], mix[:, weight_cols], np.array(
      [y_by_index[i] for i in mix_index])


def _check(config, num_domains):
  n = config.regmix.num_proxies
  if n and n < num_domains:
    raise ValueError(f'mixer.regmix.num_proxies: {n} is fewer than the {num_domains} domains')
  if not 1 <= config.regmix.top_k <= config.regmix.samples:
    raise ValueError(f'mixer.regmix.top_k: {config.regmix.top_k} must be in [1, samples]')
  if config.regmix.regressor not in ('cv', 'lightgbm'):
    raise ValueError(f'mixer.regmix.regressor: {config.regmix.regressor!r} is not cv or lightgbm')


@registry.register('regmix', check=_check)
def _build(config, context):
  """N proxies on Dirichlet mixtures (one population), the regression, then the simplex search."""
  c = config.mixer.regmix
  names = list(context.names)
  targets = [t for t in c.target.split(',') if t] or names
  unknown = [t for t in targets if t not in names]
  if unknown:
    raise ValueError(f'mixer.regmix.target: unknown domain {unknown[0]!r}')
  stages = registry.needs_stages(context, 'regmix')
  n = c.num_proxies or 4 * len(names)
  prior_D = np.asarray(stages.domain_sizes(), np.float64)
  mixtures_NxD = sample_mixtures(prior_D, n, config.seed)
  loss_NxD = stages.proxy_losses('regmix', mixtures_NxD, [config.seed] * n,
                                 f'regmix: {n} proxies')
  y_N = loss_NxD[:, [names.index(t) for t in targets]].mean(1)
  return mixer_lib.Static(fit_and_search(c, mixtures_NxD, y_N, prior_D, config.seed))


def fit_and_search(c, mixtures_NxD, y_N, prior_D, seed: int, minimize: bool = True) -> np.ndarray:
  """Steps 3 and 4 for `mixer.regmix` section c: the regressor (by CV or RegMix's), the search."""
  if c.regressor == 'cv':
    model, table = choose_by_cv(mixtures_NxD, y_N, seed=seed)
    logging.info('regmix: regressor chosen by CV on the %d proxies:\n%s', len(y_N), table.format())
  else:
    model = Regressor(**REGMIX_PAPER).fit(mixtures_NxD, y_N)
  return search(model, prior_D, c.samples, c.top_k, seed=seed, minimize=minimize)
