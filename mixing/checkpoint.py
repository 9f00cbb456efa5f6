"""Checkpoints with orbax: the train state (model and optimizer) as arrays, the rest as JSON.

The JSON part holds what is small and host-side: step, sampler state, mixer state, the RNG key and loss
accumulators. orbax commits a step atomically (temporary directory, then rename), so a process killed
mid-save leaves the previous checkpoint as the latest. A checkpoint that fails to restore (truncated,
corrupted) is reported, moved aside, and the one before it is used.
"""

import os
import shutil

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp


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


class Checkpointer:

  def __init__(self, directory: str, keep: int, read_only: bool = False):
    self.directory = os.path.abspath(directory)
    self.read_only = read_only
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def save(self, step: int, state, meta: dict):
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(encode(meta))))

  def wait(self):
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state):
    """(step, state, meta) of the newest checkpoint that restores, or None if there is none."""
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return step, restored['state'], decode(restored['meta'])
      except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds here
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        print(f'checkpoint at step {step} of {self.directory} failed to restore ({reason}); '
              'using the previous one', flush=True)
        logging.warning('checkpoint %d failed to restore: %s', step, e)
        if not self.read_only:
          self._set_aside(step)
    return None

  def _set_aside(self, step: int):
    path = os.path.join(self.directory, str(step))
    if jax.process_index() == 0 and os.path.exists(path):
      shutil.move(path, os.path.join(os.path.dirname(self.directory),
                                     f'corrupt_checkpoint_{step}'))
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
  if not os.path.isdir(folder):
    raise ValueError(f'init_from: no checkpoints in {run_dir!r}')
  restored = Checkpointer(folder, keep=1000, read_only=True).restore_latest(abstract_of(like))
  if restored is None:
    raise ValueError(f'init_from: no checkpoint restores from {run_dir!r}')
  return restored[1]
