"""RegMix (Liu et al. 2024): regress a target metric on the mixture, then search the simplex by simulation.

1. Sample N training mixtures from a Dirichlet prior centred on the token distribution, with
   concentrations spread over two orders of magnitude so both near-prior and extreme mixtures appear.
2. Train N small proxies on them (the pipelines layer runs them as one population).
3. Fit a regressor from mixture to the target metric: LightGBM, as RegMix does.
4. Score a large random sample of mixtures from the same prior, average the top k: the proposed mixture.
"""

import csv

import numpy as np

from mixing import mixer as mixer_lib
from mixing import registry

# RegMix-like LightGBM settings; on RegMix's released 1M-model runs these give Spearman 0.993 on Pile-CC
# (fit on the 512 training runs, scored on the 256 test runs; see the README's results).
LGBM_PARAMS = dict(objective='regression', learning_rate=5e-3, num_leaves=15, min_data_in_leaf=5,
                   bagging_fraction=0.8, bagging_freq=1, feature_fraction=0.8, verbosity=-1,
                   num_threads=1, seed=0, deterministic=True)
LGBM_ROUNDS = 2000


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
  """LightGBM regressor from mixture weights (rows) to a metric."""

  def __init__(self, rounds: int = LGBM_ROUNDS, **params):
    self.rounds = rounds
    self.params = {**LGBM_PARAMS, **params}
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


# --- RegMix's CSV layout: an `index` column, then one column per domain (weights) or metric. ---------

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
  model = Regressor().fit(mixtures_NxD, y_N)
  return mixer_lib.Static(search(model, prior_D, c.samples, c.top_k, seed=config.seed))
