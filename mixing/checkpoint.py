"""Checkpoints with orbax: the train state (model and optimizer) as arrays, the rest as JSON.

The JSON part holds what is small and host-side: step, sampler state, mixer state, loss accumulators
(the caller's `meta`), and under `__checksums__` a CRC32 of that meta's JSON and of the bytes of every
array of the state. The checksums are computed on the host from the values handed to `save`, before
orbax writes them (possibly asynchronously). orbax commits a step atomically (temporary directory,
then rename), so a process killed mid-save leaves the previous checkpoint as the latest.

`restore_latest` tries the newest checkpoint first. One that fails to restore (truncated files), whose
checksums do not match (flipped bytes in an array file, an edited JSON) or whose meta the caller's
`validate` rejects (a key missing, an array of another shape) is reported in one printed line (its step
and why), moved aside to `corrupt_checkpoint_<step>` beside the checkpoints folder (unless read-only),
and the one before it is tried. Checkpoints written before checksums existed restore unchecked (`validate` still runs).

With several processes, an array sharded across processes (no process holds it whole) has no
checksum: each process addresses only its own shards and only one process writes the JSON, so such
arrays are checked only as far as orbax checks them when reading.

The directory may be remote (`gs://...`): orbax writes it itself, and setting a checkpoint aside goes
through etils.epath.
"""

import json
import os
from typing import Any, Callable
import zlib

from absl import logging
from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from mixing.data import records

CHECKSUMS = '__checksums__'  # the key of the checksums in a checkpoint's JSON part


def encode(tree):
  """numpy arrays and scalars inside dicts/lists -> JSON-able values (exact for floats)."""
  if isinstance(tree, dict):
    return {str(k): encode(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [encode(v) for v in tree]
  if isinstance(tree, (np.ndarray, np.generic, jax.Array)):
    x = np.asarray(tree)
    return {'__array__': x.reshape(-1).tolist(), 'dtype': str(x.dtype), 'shape': list(x.shape)}
  return tree


def decode(tree):
  if isinstance(tree, dict):
    if '__array__' in tree:
      return np.asarray(tree['__array__'], dtype=tree['dtype']).reshape(tree['shape'])
    return {k: decode(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return [decode(v) for v in tree]
  return tree


def _host_values(tree) -> list:
  """Every leaf of `tree` as a numpy array on this host; None where no process holds it whole."""
  def addressable(x):
    if not isinstance(x, jax.Array):
      return x
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if x.is_fully_addressable:
      return x
    return x.addressable_data(0) if x.is_fully_replicated else None
  return [None if x is None else np.asarray(x)
          for x in jax.device_get([addressable(x) for x in jax.tree.leaves(tree)])]


def _state_checksums(tree) -> list:
  """CRC32 of the bytes of every leaf of `tree` (None for an array no process holds whole)."""
  return [None if x is None else zlib.crc32(np.ascontiguousarray(x).reshape(-1).view(np.uint8))
          for x in _host_values(tree)]


def _json_checksum(tree) -> int:
  return zlib.crc32(json.dumps(tree, sort_keys=True).encode())


def _verified_meta(raw, state) -> dict:
  """The decoded meta of a restored checkpoint; ValueError if it is not what was saved."""
  if not isinstance(raw, dict):
    raise ValueError(f'its JSON part is a {type(raw).__name__}, not an object')
  raw = dict(raw)
  sums = raw.pop(CHECKSUMS, None)
  if sums is None:  # written before checkpoints had checksums
    return decode(raw)
  if _json_checksum(raw) != sums['meta']:
    raise ValueError('the checksum of its JSON part does not match')
  saved, now = sums['state'], _state_checksums(state)
  if len(saved) != len(now):
    raise ValueError(f'it has {len(saved)} state checksums for {len(now)} arrays')
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]
  bad = [path for path, a, b in zip(paths, saved, now) if None not in (a, b) and a != b]
  if bad:
    more = f' (and {len(bad) - 1} more)' if len(bad) > 1 else ''
    raise ValueError(f'the checksum of state array {bad[0]}{more} does not match')
  return decode(raw)


class Checkpointer:

  def __init__(self, directory: str, keep: int, read_only: bool = False):
    self.directory = os.path.abspath(directory) if records.is_local(directory) else directory
    self.read_only = read_only
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def save(self, step: int, state, meta: dict):
    """Saves `state` (arrays) and `meta` (JSON-able, numpy arrays allowed) with their checksums."""
    encoded = encode(meta)
    sums = {'meta': _json_checksum(encoded), 'state': _state_checksums(state)}
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({**encoded, CHECKSUMS: sums})))

  def wait(self):
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state, validate: Callable[[dict], Any] | None = None):
    """(step, state, meta) of the newest checkpoint that restores, matches its checksums and passes
    `validate(meta)` (which raises to reject it); None if there is none. Module docstring."""
    steps = sorted(self._manager.all_steps(), reverse=True)
    for step in steps:
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        meta = _verified_meta(restored['meta'], restored['state'])
        if validate is not None:
          validate(meta)
        return step, restored['state'], meta
      except (PermissionError, MemoryError, KeyboardInterrupt):
        raise  # the machine, not the checkpoint: moving it aside would lose it
      except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds here
        message = str(e).splitlines()[0][:200] if str(e) else ''
        reason = message if isinstance(e, ValueError) else f'{type(e).__name__}: {message}'
        moved = '' if self.read_only else f'moved aside to corrupt_checkpoint_{step}; '
        print(f'checkpoint at step {step} of {self.directory} failed to restore ({reason}); '
              f'{moved}using the previous one', flush=True)
        logging.info('checkpoint %d failed to restore: %s', step, e)  # the whole message
        if not self.read_only:
          self._set_aside(step)
    if steps:  # starting over would overwrite the run's logs: refuse, keeping what was set aside
      fix = ('pass --overwrite to start the run over' if records.is_local(self.directory) else
             'delete the workdir to start the run over')
      raise ValueError(f'checkpoints: none of the {len(steps)} checkpoints in {self.directory} '
                       f'restores (each is kept beside it as corrupt_checkpoint_<step>); {fix}')
    return None

  def _set_aside(self, step: int):
    path = epath.Path(self.directory) / str(step)
    if jax.process_index() == 0 and path.exists():
      target = path.parent.parent / f'corrupt_checkpoint_{step}'
      n = 1
      while target.exists():  # the same step set aside before: keep both
        target, n = path.parent.parent / f'corrupt_checkpoint_{step}.{n}', n + 1
      try:
        path.rename(target)
      except OSError as e:  # the restore goes on with the previous checkpoint regardless
        print(f'could not move {path} aside ({e.strerror or e}); it is skipped', flush=True)
    if jax.process_count() > 1:  # the others must not list the steps again before it is moved
      multihost_utils.sync_global_devices(f'checkpoint.set_aside.{step}')
    self._manager.reload()

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def abstract_of(tree):
  """Shapes, dtypes and shardings of `tree`: what orbax needs to restore into the same layout."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def load_run_state(run_dir: str, like):
  """The train state of another run's newest checkpoint (e.g. a base model to continue from)."""
  folder = os.path.join(run_dir, 'checkpoints')
  if not epath.Path(folder).is_dir():
    raise ValueError(f'init_from: no checkpoints in {run_dir!r}')
  restored = Checkpointer(folder, keep=1000, read_only=True).restore_latest(abstract_of(like))
  if restored is None:
    raise ValueError(f'init_from: no checkpoint restores from {run_dir!r}')
  return restored[1]
