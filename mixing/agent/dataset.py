"""Mixing trajectories on disk: the agent's offline training data.

A trajectory is one proxy run split into K re-weighting steps: observations o_0..o_K (each
per-domain features D x F and global features G, from features.observation_features), the actions
a_0..a_{K-1} (the weights used for each step's segment) and rewards r_0..r_{K-1} (features.reward).
It becomes K transitions (o_k, a_k, r_k, o_{k+1}, done = k == K - 1). D varies across trajectories:
every array is padded to the largest D with a mask (1: real domain).

A dataset is a directory:
  transitions.npz  feats_NxDxF, global_NxG, action_NxD, reward_N, next_feats_NxDxF, next_global_NxG,
                   done_N, mask_NxD, traj_N (trajectory index), step_N (k), and names_TxD, roles_TxD
                   (each trajectory's domain names and 'source'/'target' roles, '' on padding)
  config.json      whatever the caller passes to `save` (domain names, feature version, the
                   collection config, ...)
written into a temporary directory, then renamed into place, so a half-written dataset is never
read.
"""

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from typing import Iterator, Mapping, Sequence

import numpy as np

TRANSITIONS = 'transitions.npz'
CONFIG = 'config.json'
_PADDED = ('feats_NxDxF', 'action_NxD', 'next_feats_NxDxF', 'mask_NxD')


@dataclasses.dataclass
class Dataset:
  """Transitions padded to max_domains, with each trajectory's domain names and roles."""
  feats_NxDxF: np.ndarray
  global_NxG: np.ndarray
  action_NxD: np.ndarray
  reward_N: np.ndarray
  next_feats_NxDxF: np.ndarray
  next_global_NxG: np.ndarray
  done_N: np.ndarray
  mask_NxD: np.ndarray
  traj_N: np.ndarray
  step_N: np.ndarray
  names_TxD: np.ndarray
  roles_TxD: np.ndarray
  meta: dict = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.reward_N)

  @property
  def num_trajectories(self) -> int:
    return len(self.names_TxD)

  @property
  def max_domains(self) -> int:
    return self.mask_NxD.shape[1]

  def domain_names(self, traj: int) -> list[str]:
    return [str(n) for n in self.names_TxD[traj] if n]

  @property
  def returns_T(self) -> np.ndarray:
    """Each trajectory's undiscounted return (sum of its rewards)."""
    return np.bincount(self.traj_N, weights=self.reward_N, minlength=self.num_trajectories)

  def arrays(self) -> dict:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != 'meta'}

  def subset(self, trajs: Sequence[int]) -> 'Dataset':
    """The given trajectories (renumbered in that order), padding trimmed to their largest D."""
    trajs = np.asarray(trajs, np.int64)
    renumber = np.full(self.num_trajectories, -1)
    renumber[trajs] = np.arange(len(trajs))
    keep_N = renumber[self.traj_N] >= 0
    arrays = {k: v[keep_N] for k, v in self.arrays().items() if '_N' in k}
    arrays['traj_N'] = renumber[self.traj_N[keep_N]]
    arrays['names_TxD'], arrays['roles_TxD'] = self.names_TxD[trajs], self.roles_TxD[trajs]
    d = int(arrays['mask_NxD'].sum(1).max()) if keep_N.any() else self.max_domains
    for key in _PADDED + ('names_TxD', 'roles_TxD'):
      arrays[key] = arrays[key][:, :d]
    return Dataset(**arrays, meta=dict(self.meta))

  def trajectories(self) -> Iterator[dict]:
    """Each trajectory as `TrajectoryWriter.add`'s arguments."""
    for t in range(self.num_trajectories):
      idx = np.flatnonzero(self.traj_N == t)
      idx = idx[np.argsort(self.step_N[idx])]
      d = len(self.domain_names(t))
      yield {'names': self.domain_names(t), 'roles': [str(r) for r in self.roles_TxD[t, :d]],
             'feats_TxDxF': np.concatenate([self.feats_NxDxF[idx, :d],
                                            self.next_feats_NxDxF[idx[-1:], :d]]),
             'global_TxG': np.concatenate([self.global_NxG[idx], self.next_global_NxG[idx[-1:]]]),
             'actions_KxD': self.action_NxD[idx, :d], 'rewards_K': self.reward_N[idx]}

  def batches(self, batch_size: int, rng) -> 'Minibatches':
    """Endless shuffled minibatches (epoch after epoch): see `Minibatches`."""
    return Minibatches(self, batch_size, rng)

  def fingerprint(self) -> str:
    """A hash of every array (values, dtypes, shapes): equal for the same transitions."""
    h = hashlib.sha256()
    for key, value in sorted(self.arrays().items()):
      value = np.ascontiguousarray(value)
      h.update(f'{key}:{value.dtype.str}:{value.shape}'.encode())
      h.update(value.tobytes())
    return h.hexdigest()[:16]


class Minibatches:
  """Endless shuffled minibatches of a Dataset's padded transitions, epoch after epoch; resumable.

  Keys: feats_BxDxF, global_BxG, action_BxD, reward_B, next_feats_BxDxF, next_global_BxG, done_B,
  mask_BxD (shapes fixed by the dataset's max D, so a jitted step compiles once). `state()` is
  JSON-able (the RNG's state, the current permutation and the position in it); `restore(state)`
  makes the stream continue exactly where the one that gave the state was.
  """

  KEYS = ('feats_NxDxF', 'global_NxG', 'action_NxD', 'reward_N', 'next_feats_NxDxF',
          'next_global_NxG', 'done_N', 'mask_NxD')

  def __init__(self, dataset: Dataset, batch_size: int, rng):
    if batch_size < 1:
      raise ValueError(f'batch_size: must be >= 1, got {batch_size}')
    if not len(dataset):
      raise ValueError('dataset: no transitions')
    self.dataset, self.batch_size = dataset, batch_size
    self._rng = np.random.default_rng(rng)
    self._order, self._pos = self._rng.permutation(len(dataset)), 0

  def __iter__(self) -> Iterator[dict]:
    return self

  def __next__(self) -> dict:
    while len(self._order) - self._pos < self.batch_size:
      self._order = np.concatenate([self._order[self._pos:],
                                    self._rng.permutation(len(self.dataset))])
      self._pos = 0
    idx = self._order[self._pos:self._pos + self.batch_size]
    self._pos += self.batch_size
    return {k.replace('_N', '_B'): getattr(self.dataset, k)[idx] for k in self.KEYS}

  def state(self) -> dict:
    rng = self._rng.bit_generator.state  # PCG64's 128-bit integers are kept as decimal strings
    return {'rng': {**rng, 'state': {k: str(v) for k, v in rng['state'].items()}},
            'order': self._order.tolist(), 'pos': self._pos}

  def restore(self, state: dict) -> None:
    rng = dict(state['rng'])
    rng['state'] = {k: int(v) for k, v in rng['state'].items()}
    self._rng.bit_generator.state = rng
    self._order = np.asarray(state['order'], np.int64).reshape(-1)
    self._pos = int(state['pos'])


def _jsonable(x):
  """numpy values as JSON numbers and lists; anything else JSON cannot hold as its str."""
  return x.tolist() if isinstance(x, (np.ndarray, np.generic)) else str(x)


def _check(field: str, x, shape: tuple) -> np.ndarray:
  x = np.asarray(x, np.float32)
  if x.shape != shape:
    raise ValueError(f'{field}: expected shape {shape}, got {x.shape}')
  if not np.isfinite(x).all():
    raise ValueError(f'{field}: has non-finite values')
  return x


class TrajectoryWriter:
  """Collects trajectories in memory; `save` writes them as a dataset directory."""

  def __init__(self):
    self._trajs: list[dict] = []

  def __len__(self) -> int:
    return len(self._trajs)

  def add(self, names: Sequence[str], roles, feats_TxDxF, global_TxG, actions_KxD,
          rewards_K) -> int:
    """Adds one trajectory (K + 1 observations, K actions and rewards); returns its index.

    `roles` is a sequence of 'source'/'target' in the order of `names`, or a mapping name -> role.
    """
    names = [str(n) for n in names]
    roles = [roles[n] for n in names] if isinstance(roles, Mapping) else [str(r) for r in roles]
    d, k = len(names), len(np.asarray(rewards_K).reshape(-1))
    if d < 1 or len(set(names)) != d or '' in names:
      raise ValueError(f'names: need distinct non-empty domain names, got {names}')
    if len(roles) != d or any(r not in ('source', 'target') for r in roles):
      raise ValueError(f"roles: need 'source' or 'target' for each of {names}, got {roles}")
    if k < 1:
      raise ValueError('rewards_K: a trajectory needs at least one step')
    feats = np.asarray(feats_TxDxF)
    if feats.ndim != 3:
      raise ValueError(f'feats_TxDxF: expected 3 axes, got shape {feats.shape}')
    g = np.asarray(global_TxG).shape[-1]
    traj = {'names': names, 'roles': roles,
            'feats_TxDxF': _check('feats_TxDxF', feats, (k + 1, d, feats.shape[2])),
            'global_TxG': _check('global_TxG', global_TxG, (k + 1, g)),
            'actions_KxD': _check('actions_KxD', actions_KxD, (k, d)),
            'rewards_K': _check('rewards_K', np.asarray(rewards_K).reshape(-1), (k,))}
    if self._trajs:
      first = self._trajs[0]
      for key, axis in (('feats_TxDxF', 2), ('global_TxG', 1)):
        if traj[key].shape[axis] != first[key].shape[axis]:
          raise ValueError(f'{key}: {traj[key].shape[axis]} features, but earlier trajectories '
                           f'have {first[key].shape[axis]}')
    self._trajs.append(traj)
    return len(self._trajs) - 1

  def add_dataset(self, dataset: Dataset):
    """Adds a loaded dataset's trajectories (to resume a collection)."""
    for traj in dataset.trajectories():
      self.add(**traj)

  def arrays(self) -> dict:
    if not self._trajs:
      raise ValueError('trajectories: nothing to save (no trajectory was added)')
    d = max(len(t['names']) for t in self._trajs)
    rows = {k: [] for k in ('feats_NxDxF', 'global_NxG', 'action_NxD', 'reward_N',
                            'next_feats_NxDxF', 'next_global_NxG', 'done_N', 'mask_NxD', 'traj_N',
                            'step_N')}
    pad = lambda x: np.pad(x, [(0, 0), (0, d - x.shape[1])] + [(0, 0)] * (x.ndim - 2))
    for i, t in enumerate(self._trajs):
      k, dt = len(t['rewards_K']), len(t['names'])
      rows['feats_NxDxF'].append(pad(t['feats_TxDxF'][:-1]))
      rows['next_feats_NxDxF'].append(pad(t['feats_TxDxF'][1:]))
      rows['global_NxG'].append(t['global_TxG'][:-1])
      rows['next_global_NxG'].append(t['global_TxG'][1:])
      rows['action_NxD'].append(pad(t['actions_KxD']))
      rows['reward_N'].append(t['rewards_K'])
      rows['done_N'].append((np.arange(k) == k - 1).astype(np.float32))
      rows['mask_NxD'].append(pad(np.ones((k, dt), np.float32)))
      rows['traj_N'].append(np.full(k, i, np.int64))
      rows['step_N'].append(np.arange(k, dtype=np.int64))
    arrays = {key: np.concatenate(v) for key, v in rows.items()}
    arrays['names_TxD'] = np.array([t['names'] + [''] * (d - len(t['names'])) for t in self._trajs])
    arrays['roles_TxD'] = np.array([t['roles'] + [''] * (d - len(t['roles'])) for t in self._trajs])
    return arrays

  def dataset(self, meta: dict | None = None) -> Dataset:
    return Dataset(**self.arrays(), meta=dict(meta or {}))

  def save(self, path: str, meta: dict | None = None) -> str:
    """Writes the dataset directory atomically (replacing one already at `path`); returns it."""
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    arrays = self.arrays()
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.tmp-', dir=parent)
    try:
      np.savez(os.path.join(tmp, TRANSITIONS), **arrays)
      with open(os.path.join(tmp, CONFIG), 'w') as f:
        json.dump(meta or {}, f, indent=1, default=_jsonable)
      old = None
      if os.path.exists(path):
        old = tempfile.mkdtemp(prefix=f'.{os.path.basename(path)}.old-', dir=parent)
        os.rename(path, os.path.join(old, 'dataset'))
      os.rename(tmp, path)
      if old:
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    return path


class UnreadableError(ValueError):
  """A dataset directory whose files are there but do not parse (e.g. truncated)."""


def load(path: str) -> Dataset:
  """Reads a dataset directory; ValueError naming the path if it is missing or unreadable."""
  if not os.path.isdir(path):
    raise ValueError(f"dataset: no dataset directory at '{path}'")
  files = {name: os.path.join(path, name) for name in (TRANSITIONS, CONFIG)}
  for file in files.values():
    if not os.path.isfile(file):
      raise ValueError(f"dataset: missing '{file}'")
  try:
    with np.load(files[TRANSITIONS], allow_pickle=False) as npz:
      arrays = {k: npz[k] for k in npz.files}
    with open(files[CONFIG]) as f:
      meta = json.load(f)
    return Dataset(**arrays, meta=meta)
  except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as e:
    raise UnreadableError(f"dataset: cannot read '{path}' ({str(e).splitlines()[0][:200]})") from e


def check_domain_space(dataset: Dataset, names: Sequence[str]):
  """ValueError unless every trajectory ran on exactly `names` (in order), e.g. to resume.

  The agent itself generalizes to unseen domain spaces; call this only where a match is required.
  """
  names = [str(n) for n in names]
  for t in range(dataset.num_trajectories):
    got = dataset.domain_names(t)
    if got != names:
      raise ValueError(f'trajectories: domain space {got} does not match the config {names}')
