"""A weighted mixture sampler over grain domain sources whose weights may change at any step.

Batch `step` is a pure function of (seed, step, weights in force, per-domain positions):
  domain_B = inverse-CDF draws of uniforms against the current weights: with draws='iid', uniforms
    from PCG64 seeded by (seed, step); with draws='quasi', the golden-ratio (Weyl) sequence
    u_n = frac(offset_seed + n * 0.618...) at n = step * batch_size + i, a low-discrepancy sequence:
    every window of n draws gives domain d within O(log n) of n * w_d examples (i.i.d. draws: within
    about sqrt(n * w_d)), so a run's realized mixture is its weights, not a sample of them;
  the k-th example ever drawn from domain d is element k of grain's
  `MapDataset.source(rows_d).seed(seed_d).shuffle().repeat()`, a stateless per-epoch permutation.
So the state is only (seed, step, positions_D, weight history), which checkpoints as a few small arrays
and continues the exact same sequence in a fresh process. Nothing is prefetched: a batch is made when it
is asked for, so `set_weights` always takes effect at the next batch (JAX's async dispatch already
overlaps making batch t+1 with the device computing step t). There is no thread or iterator per domain;
a domain costs one lazily built MapDataset. Under several processes every process draws the global
domain vector (cheap) but reads only the rows of its own slice of the global batch.
"""

import functools
import math
from typing import Mapping, Sequence

import grain
import numpy as np


def validate_weights(weights, names: Sequence[str], field: str = 'weights') -> np.ndarray:
  """Returns normalized float64 weights, one per name, or raises a ValueError naming the problem.

  `weights` is a sequence (one per domain, in order) or a mapping name -> weight (missing names get 0).
  """
  if isinstance(weights, Mapping):
    unknown = [k for k in weights if k not in names]
    if unknown:
      raise ValueError(f'{field}: unknown domain {unknown[0]!r} (domains: {", ".join(names)})')
    weights = [weights.get(name, 0.0) for name in names]
  try:
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
  except (TypeError, ValueError):
    raise ValueError(f'{field}: not a list of numbers: {weights!r}') from None
  if w.shape[0] != len(names):
    raise ValueError(f'{field}: expected {len(names)} values (one per domain), got {w.shape[0]}')
  for name, value in zip(names, w):
    if math.isnan(value) or math.isinf(value):
      raise ValueError(f'{field}: {value} for domain {name!r} is not finite')
    if value < 0:
      raise ValueError(f'{field}: negative value {value} for domain {name!r}')
  if w.sum() <= 0:
    raise ValueError(f'{field}: all zero {w.tolist()}')
  return w / w.sum()


DRAWS = ('iid', 'quasi')
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio: the Weyl sequence's step, in 2^-64


@functools.lru_cache(maxsize=256)
def _weyl_offset(seed: int) -> np.uint64:
  """The seed's start in the Weyl sequence (a function of the seed only: cached, not per batch)."""
  return np.random.Generator(np.random.PCG64([seed, 1 << 32])).integers(
      0, 1 << 64, dtype=np.uint64, endpoint=False)


def check_draws(draws) -> None:
  if draws not in DRAWS:
    raise ValueError(f'data.draws: {draws!r} is not one of {", ".join(DRAWS)}')


def draw_domains(seed: int, step: int, weights_D: np.ndarray, batch_size: int,
                 draws: str = 'iid') -> np.ndarray:
  """The domain of each example of batch `step` from `weights_D`, deterministic: i.i.d. draws, or the
  seed's quasi-random (Weyl) sequence (see the module docstring)."""
  if draws == 'iid':
    uniform_B = np.random.Generator(np.random.PCG64([seed, step])).random(batch_size)
  elif draws == 'quasi':
    offset = _weyl_offset(int(seed))
    n_B = np.uint64(step) * np.uint64(batch_size) + np.arange(batch_size, dtype=np.uint64)
    uniform_B = (offset + n_B * _GOLDEN >> np.uint64(11)).astype(np.float64) / 2.0**53  # wraps mod 2^64
  else:
    check_draws(draws)
  cdf_D = np.cumsum(weights_D)
  cdf_D /= cdf_D[-1]
  return np.minimum(np.searchsorted(cdf_D, uniform_B, side='right'), len(weights_D) - 1)


def _rank_within_batch(domain_B: np.ndarray) -> np.ndarray:
  """rank[j] = how many examples before j in the batch share j's domain."""
  order = np.argsort(domain_B, kind='stable')
  sorted_d = domain_B[order]
  first = np.searchsorted(sorted_d, sorted_d, side='left')
  rank = np.empty_like(order)
  rank[order] = np.arange(len(order)) - first
  return rank


class MixtureSampler:
  """Draws global batches of packed rows from domain sources; see the module docstring."""

  def __init__(self, sources: Sequence, names: Sequence[str], weights, global_batch_size: int,
               seed: int = 0, process_index: int = 0, process_count: int = 1,
               local_rows: Sequence[int] | None = None, draws: str = 'iid'):
    """`local_rows`: the global batch rows this process reads, ascending (default: block
    `process_index` of `process_count` equal blocks); a device mesh may assign other sets.
    `draws`: 'iid' or 'quasi', how each batch's domains are drawn (see the module docstring)."""
    check_draws(draws)
    if len(sources) != len(names) or not names:
      raise ValueError(f'domains: need one source per name, got {len(sources)} for {len(names)}')
    for name, source in zip(names, sources):
      if len(source) == 0:
        raise ValueError(f'domain {name!r}: empty (no sequences)')
    if global_batch_size <= 0 or (local_rows is None and global_batch_size % process_count):
      raise ValueError(f'batch_size: {global_batch_size} must be positive and divisible by the '
                       f'process count {process_count}')
    self.names = list(names)
    self._sources = sources
    self._datasets = [None] * len(sources)
    self.batch_size = global_batch_size
    per_process = global_batch_size // process_count
    self._local = (slice(process_index * per_process, (process_index + 1) * per_process)
                   if local_rows is None else np.asarray(local_rows, np.int64))
    self.seed, self.draws = int(seed), draws
    self.step = 0
    self.positions_D = np.zeros(len(names), np.int64)
    self.history_steps_H = np.zeros(1, np.int64)
    self.history_weights_HxD = validate_weights(weights, self.names)[None]

  @property
  def weights_D(self) -> np.ndarray:
    return self.history_weights_HxD[-1]

  def set_weights(self, weights) -> np.ndarray:
    """Validates and applies new weights from the next batch on; returns them normalized."""
    w = validate_weights(weights, self.names)
    if self.history_steps_H[-1] == self.step:  # several changes before a batch: the last one wins
      self.history_weights_HxD[-1] = w
    elif not np.array_equal(w, self.weights_D):
      self.history_steps_H = np.append(self.history_steps_H, self.step)
      self.history_weights_HxD = np.concatenate([self.history_weights_HxD, w[None]])
    return w

  def _dataset(self, d: int) -> grain.MapDataset:
    if self._datasets[d] is None:
      self._datasets[d] = (grain.MapDataset.source(self._sources[d])
                           .seed(self.seed * 1_000_003 + d).shuffle().repeat())
    return self._datasets[d]

  def next_batch(self) -> dict[str, np.ndarray]:
    """This process's slice of the next global batch: inputs, targets, mask and domain ids."""
    domain_B = draw_domains(self.seed, self.step, self.weights_D, self.batch_size, self.draws)
    index_B = self.positions_D[domain_B] + _rank_within_batch(domain_B)
    rows = [self._dataset(d)[int(i)] for d, i in
            zip(domain_B[self._local], index_B[self._local])]
    tokens_BxL1 = np.stack([r[0] for r in rows]).astype(np.int32)
    mask_BxL1 = np.stack([r[1] for r in rows])
    self.positions_D += np.bincount(domain_B, minlength=len(self.names))
    self.step += 1
    return {
        'inputs_BxL': tokens_BxL1[:, :-1],
        'targets_BxL': tokens_BxL1[:, 1:],
        'mask_BxL': mask_BxL1[:, 1:].astype(np.float32),
        'domain_B': domain_B[self._local].astype(np.int32),
    }

  def realized(self) -> dict[str, np.ndarray]:
    """Examples drawn per domain so far beside what the weight history targeted."""
    ends_H = np.append(self.history_steps_H[1:], self.step)
    steps_H = np.maximum(ends_H - self.history_steps_H, 0)
    expected_D = (steps_H[:, None] * self.history_weights_HxD).sum(0) * self.batch_size
    return {'counts_D': self.positions_D.copy(), 'expected_D': expected_D,
            'target_weights_D': self.weights_D.copy()}

  # Checkpointing: a dict of numpy arrays (orbax- and npz-friendly).
  def state(self) -> dict[str, np.ndarray]:
    return {'seed': np.int64(self.seed), 'step': np.int64(self.step),
            'positions_D': self.positions_D.copy(),
            'history_steps_H': self.history_steps_H.copy(),
            'history_weights_HxD': self.history_weights_HxD.copy()}

  def restore(self, state: Mapping[str, np.ndarray]):
    positions = np.asarray(state['positions_D'], np.int64)
    if positions.shape != (len(self.names),):
      raise ValueError(f'sampler state: {positions.shape[0]} domains, expected {len(self.names)}')
    self.seed = int(state['seed'])
    self.step = int(state['step'])
    self.positions_D = positions.copy()
    self.history_steps_H = np.asarray(state['history_steps_H'], np.int64).copy()
    self.history_weights_HxD = np.asarray(state['history_weights_HxD'], np.float64).copy()
    self._datasets = [None] * len(self._sources)
