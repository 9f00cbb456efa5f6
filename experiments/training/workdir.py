"""A workdir belongs to one config: W/config.json records it, and a different config is refused.

Resuming a run (same config, possibly more `steps`) is the normal case; pointing a command at a
directory that holds another experiment is a mistake that would mix two runs' checkpoints and
metrics, so it is an error unless the caller passes overwrite=True (the CLIs' --overwrite). The old
run is then moved aside to `<workdir>.replaced` and deleted only once the new run has written its first
checkpoint (`release_replaced`, called by the training loop after every save), so a new run that
fails early loses nothing: the old one is still there to move back.
"""

import json
import os
import shutil
from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

from experiments.training import atomic

CONFIG_FILE = 'config.json'
# Fields that may change between a run and its resumption without making it another experiment.
RESUMABLE = frozenset({'steps', 'log_every', 'progress_seconds', 'checkpoint_every',
                       'keep_checkpoints', 'eval_every'})


def flatten(tree, prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}, 'c.d': 2} -> {'a.b': 1, 'c.d': 2}, keeping the order."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


def differences(old: dict, new: dict) -> list[str]:
  """Dotted fields whose values differ, ignoring RESUMABLE ones."""
  a, b = flatten(old), flatten(new)
  return sorted(k for k in a.keys() | b.keys()
                if k.split('.')[0] not in RESUMABLE and a.get(k) != b.get(k))


def claim(workdir: str, config, overwrite: bool = False) -> None:
  """Records `config` in workdir, refusing (ValueError) a workdir that holds another config's run."""
  new = json.loads(config.to_json_best_effort())
  if '://' in workdir:  # os.makedirs would make a local folder named 'gs:' on every host
    raise ValueError(f'workdir: {workdir!r} is a URL; the run writes with plain file IO, so give a '
                     'path (on several hosts, one they all mount: NFS, Filestore, gcsfuse)')
  path = os.path.join(workdir, CONFIG_FILE)
  if overwrite:
    if os.path.isdir(workdir) and os.listdir(workdir) and jax.process_index() == 0:
      _move_aside(workdir)
  elif os.path.exists(path):
    with open(path) as f:
      try:
        old = json.load(f)
      except json.JSONDecodeError:
        old = None
    diff = ['<unreadable config.json>'] if old is None else differences(old, new)
    if diff:
      shown = ', '.join(diff[:4]) + (f' and {len(diff) - 4} more' if len(diff) > 4 else '')
      raise ValueError(f'workdir: {workdir} holds a run of another config (differs in {shown}); '
                       f'pass --overwrite to replace it')
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    atomic.write_json(path, new, sort_keys=True)
  if jax.process_count() > 1:
    # No process may write into the workdir (checkpoints, metrics) before process 0 has cleared it
    # (--overwrite) and claimed it; every process read the same config.json above, so all get here.
    multihost_utils.sync_global_devices('workdir.claim')
    _check_shared(workdir, path)


def replaced_path(workdir: str) -> str:
  return os.path.normpath(workdir) + '.replaced'


def _move_aside(workdir: str) -> None:
  """The old run goes to <workdir>.replaced (an older one still there is deleted first)."""
  aside = replaced_path(workdir)
  if os.path.exists(aside):
    shutil.rmtree(aside)
  os.replace(workdir, aside)
  print(f'--overwrite: the previous run is kept in {aside} until this run writes its first '
        'checkpoint', flush=True)


def release_replaced(workdir: str) -> None:
  """Deletes the run --overwrite moved aside, once this run has a checkpoint of its own."""
  aside = replaced_path(workdir)
  if jax.process_index() == 0 and os.path.isdir(aside):
    shutil.rmtree(aside, ignore_errors=True)


def _check_shared(workdir: str, path: str) -> None:
  """ValueError on every process unless every process sees process 0's config.json.

  A checkpoint holds every host's shards in one directory: a workdir on each host's own disk would
  leave no host with a whole checkpoint to resume from.
  """
  seen_P = multihost_utils.process_allgather(np.array(os.path.exists(path)))
  if not np.all(seen_P):  # every process raises, so none is left waiting in a collective
    missing = np.flatnonzero(~np.asarray(seen_P, bool)).tolist()
    raise ValueError(f'workdir: {workdir} is not shared by every process (process '
                     f'{missing[0]} does not see process 0\'s {CONFIG_FILE}); put it on storage '
                     'all hosts mount')
