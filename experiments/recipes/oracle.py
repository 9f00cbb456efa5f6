"""The oracle search: how much room a setting leaves for re-weighting, measured on tuning seeds.

Candidates are schedules (K x D weights, one row per re-weighting step) over the source and target
groups, searched in two rounds:
  grid     static target shares (`oracle.grid` points in (0, 1)), each group split evenly;
  refine   `oracle.dirichlet` static per-domain mixtures drawn around the best grid point
           (Dirichlet with concentration `oracle.concentration` per domain);
  dynamic  with each group split as the best static candidate (of both rounds) splits it: 2-phase switches of the
           target share (every ordered pair of `oracle.levels`, switching at `oracle.switch`),
           3-phase shapes (up-down, down-up, up-up, down-down) and linear ramps up and down.
Every candidate trains on every tuning seed (`mixbench.tune_seeds`, never the reported ones); the best
static and the best dynamic candidate by mean balanced score there become methods (`best_static`,
`best_dynamic`) that the benchmark runs on the reported seeds.
"""

import numpy as np

from mixing.agent import features

LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)  # target shares the dynamic candidates move between


def group_schedule(shares_K, is_target_D, split_D=None) -> np.ndarray:
  """K x D: at step k, the target group gets shares_K[k], the sources the rest; within each group
  split as split_D is (evenly if None)."""
  is_target_D = np.asarray(is_target_D, bool)
  split_D = np.ones(len(is_target_D)) if split_D is None else np.asarray(split_D, np.float64)
  within_D = np.where(is_target_D, split_D / max(split_D[is_target_D].sum(), 1e-12),
                      split_D / max(split_D[~is_target_D].sum(), 1e-12))
  shares_K = np.asarray(shares_K, np.float64)[:, None]
  return np.where(is_target_D[None], shares_K, 1 - shares_K) * within_D[None]


def grid_candidates(is_target_D, k: int, grid: int) -> dict[str, np.ndarray]:
  """Static target shares on a grid, each group split evenly."""
  return {f'static target {share:.2f}': group_schedule(np.full(k, share), is_target_D)
          for share in np.linspace(0, 1, grid + 2)[1:-1]}


def refine_candidates(center_D, k: int, n: int, concentration: float, seed: int
                      ) -> dict[str, np.ndarray]:
  """n static mixtures ~ Dirichlet(concentration * D * center_D): per-domain moves around a center."""
  rng = np.random.default_rng(seed)
  alpha_D = np.maximum(concentration * len(center_D) * np.asarray(center_D, np.float64), 1e-3)
  return {f'static refine {i}': np.repeat(rng.dirichlet(alpha_D)[None], k, 0) for i in range(n)}


def dynamic_candidates(is_target_D, k: int, switch: float, levels=LEVELS, split_D=None
                       ) -> dict[str, np.ndarray]:
  group = lambda shares, is_target: group_schedule(shares, is_target, split_D)
  out = {}
  cut = int(round(switch * k))
  for a in levels:
    for b in levels:
      if a != b:
        shares = np.where(np.arange(k) < cut, a, b)
        out[f'phases {a:.1f}->{b:.1f}'] = group(shares, is_target_D)
  third = np.arange(k) * 3 // k
  for name, shape in (('up-down', (0.2, 0.8, 0.2)), ('down-up', (0.8, 0.2, 0.8)),
                      ('up-up', (0.1, 0.5, 0.9)), ('down-down', (0.9, 0.5, 0.1))):
    out[f'phases {name}'] = group(np.array(shape)[third], is_target_D)
  for a, b in ((0.1, 0.9), (0.9, 0.1), (0.3, 0.7), (0.7, 0.3)):
    out[f'ramp {a:.1f}->{b:.1f}'] = group(np.linspace(a, b, k), is_target_D)
  return out


def metric_tables(runs: dict, base: dict, names, is_source_D, is_target_D, balance: float,
                  metrics) -> dict[str, list[list[float]]]:
  """Balanced score of every candidate on every tuning seed under each choice metric, for the
  signal-to-noise table that chooses `choices.metric` (the report's).

  runs: {candidate: {seed: final metrics}} of candidates run on every seed; base: the base model's
  final metrics on the same split. Returns {metric: C x S} (candidates sorted, seeds ascending),
  with 'loss' for the held-out loss half alone; a metric some run lacks is left out."""
  seeds = sorted({s for r in runs.values() for s in r})
  cands = sorted(c for c, r in runs.items() if set(r) == set(seeds))
  get = lambda m, fmt: np.array([m.get(fmt.format(n), np.nan) for n in names], np.float64)
  base_loss = get(base, 'eval/{}/loss')
  out = {}
  for metric in (*metrics, 'loss'):
    key = 'eval/{}/choice_' + metric  # 'loss': no such key, so all NaN: the loss half alone
    if metric != 'loss' and any(key.format(names[0]) not in runs[c][s] for c in cands
                                for s in seeds):
      continue  # runs from before the metric existed: no row rather than a loss-only one
    out[metric] = [[features.score_arrays(
        get(runs[c][s], 'eval/{}/loss'), base_loss, get(runs[c][s], key), get(base, key),
        is_source_D, is_target_D, balance)['balanced'] for s in seeds] for c in cands]
  return out


def levels(text) -> tuple[float, ...]:
  try:
    out = tuple(float(x) for x in str(text).split(','))
  except ValueError:
    raise ValueError(f'mixbench.oracle.levels: not a list of numbers: {text!r}') from None
  if not out or any(not 0 < x < 1 for x in out):
    raise ValueError(f'mixbench.oracle.levels: target shares must be in (0, 1), got {text!r}')
  return out


def best(scores: dict[str, list[float]], names) -> str:
  """The candidate (among `names`) with the highest mean balanced score."""
  return max(names, key=lambda n: float(np.mean(scores[n])))
