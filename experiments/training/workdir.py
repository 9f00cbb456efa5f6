"""A workdir belongs to one config and, while a command writes it, to one process.

Ownership: the process that writes W holds an exclusive `fcntl.flock` on W/.lock for its whole life.
`claim` (train, quickstart, taskpgm) takes it; `lock` takes it for commands that write a workdir
without a config (collect_trajectories, train_agent, continual_compare, a sweep's directory). While
the holder lives, another process is refused with one line (ValueError: `workdir: W is in use by pid
N on host H (started T); wait for it or stop it`). The OS drops the lock when its holder exits or is
killed, SIGKILL included, so a dead holder's lock is taken over silently; the file only records the
holder's pid, host and start time for that message. Within one process the lock is re-entrant (the
same lock is handed back). A remote workdir (`gs://...`, only `claim(..., remote=True)`, which
experiments.train passes) has no lock: an object store has no flock. With several JAX processes only process 0 locks, and every process raises
process 0's error, so none is left waiting in a collective.

Config: W/config.json records the config. Resuming a run (same config, possibly more `steps`) is
the normal case; pointing a command at a directory that holds another experiment is a mistake that
would mix two runs' checkpoints and metrics, so it is an error unless the caller passes
overwrite=True (the CLIs' --overwrite). The old run is then moved aside to `<workdir>.replaced`, a
fresh folder, already locked, takes its place, and the old run is deleted only once the new run has
written its first checkpoint (`release_replaced`, called by the training loop after every save), so
a new run that fails early loses nothing: the old one is still there to move back.
"""

import fcntl
import json
import os
import shutil
import socket
import threading
import time
from typing import Any

from etils import epath
import jax
from jax.experimental import multihost_utils
import numpy as np

from experiments.training import atomic

CONFIG_FILE = 'config.json'
LOCK_FILE = '.lock'
# Fields that may change between a run and its resumption without making it another experiment.
# taskpgm.seeds / families: each (family, seed) is its own complete run, so more of them extend one.
# data.build_workers: builds are byte-identical whatever the worker count (absent in older records).
# mixbench.seeds: the reported seeds; nothing chosen depends on them (tuning seeds choose), and their
# runs are cached under keys naming each seed, so other seeds re-run only the methods and rows.
RESUMABLE = frozenset({'steps', 'log_every', 'progress_seconds', 'checkpoint_every',
                       'keep_checkpoints', 'eval_every', 'taskpgm.seeds', 'taskpgm.families',
                       'data.build_workers', 'mixbench.seeds'})
_MESSAGE_BYTES = 1024  # process 0's error, as sent to the other processes
_held: dict[str, 'Lock'] = {}  # os.path.realpath(workdir) -> this process's lock on it
_guard = threading.RLock()


def flatten(tree, prefix: str = '') -> dict[str, Any]:
  """{'a': {'b': 1}, 'c.d': 2} -> {'a.b': 1, 'c.d': 2}, keeping the order."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


# Fields added after older records were written, with the value every run before them used: a record
# without one ran with that value (so upgrading mixlab does not orphan a workdir).
ADDED = {'data.draws': 'iid', 'choices.metric': 'acc_norm', 'agent.drop_features': '',
         'trajectories.settings': '', 'trajectories.settings_num': 128, 'agent.gamma': 0.9,
         'agent.group_shares': False}


def differences(old: dict, new: dict, resumable=()) -> list[str]:
  """Dotted fields whose values differ, ignoring RESUMABLE ones and `resumable` (fields or sections
  that one kind of workdir keys its outputs by), and an ADDED field missing from `old` at the value
  older runs used."""
  a, b = flatten(old), flatten(new)
  a.update({k: v for k, v in ADDED.items() if k not in a and k in b})
  skip = RESUMABLE | set(resumable)
  return sorted(k for k in a.keys() | b.keys()
                if not any(k == s or k.startswith(s + '.') for s in skip) and a.get(k) != b.get(k))


# --- ownership ------------------------------------------------------------------------------------
class Lock:
  """This process's flock on <workdir>/.lock, held until release() or the end of the process."""

  def __init__(self, workdir: str, fd: int):
    self.workdir, self.fd = workdir, fd

  def current(self) -> bool:
    """Whether this still locks the file at <workdir>/.lock (not one moved away or deleted)."""
    try:
      mine, there = os.fstat(self.fd), os.stat(os.path.join(self.workdir, LOCK_FILE))
    except OSError:
      return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)

  def release(self) -> None:
    with _guard:
      if self.fd >= 0:
        os.close(self.fd)  # closing the only descriptor drops the flock
        self.fd = -1
      key = os.path.realpath(self.workdir)
      if _held.get(key) is self:
        del _held[key]


def lock(workdir: str) -> object:
  """Makes `workdir` this process's until it exits; ValueError (one line) if it cannot.

  For commands that write a workdir without `claim` (which takes this lock itself). Creates the
  folder. Refused: a workdir another live process holds, a file, a folder that cannot be created or
  written. Re-entrant: a process that holds the lock gets the same Lock back. Nothing needs to keep
  the returned Lock: the lock lasts as long as the process (Lock.release() gives it up early). Call
  it on every process of a multi-host run: process 0 locks (the others get None), and every process
  raises process 0's error.
  """
  _check_path(workdir)
  return process_0_first(f'workdir: {workdir}', lambda: _lock_here(workdir))


def release(workdir: str) -> None:
  """Gives up this process's lock on `workdir`, if it holds one: for a process (e.g. a test) that
  is done with a workdir another process must write next. Exiting releases every lock anyway."""
  with _guard:
    held = _held.get(os.path.realpath(workdir))
  if held is not None:
    held.release()


def _check_path(workdir: str, remote: bool = False) -> None:
  if not workdir:
    raise ValueError('workdir: give --workdir=DIR')
  if atomic.is_remote(workdir) and not remote:  # os.makedirs would make a local folder 'gs:'
    raise ValueError(f'workdir: {workdir!r} is a URL, and this writes with plain file IO: give a '
                     'path, or its local mirror (mirror.mirrored, as the commands do)')


def _lock_here(workdir: str) -> Lock:
  with _guard:
    held = _held.get(os.path.realpath(workdir))
    if held is not None and held.current():
      return held
    if held is not None:  # its folder was moved or deleted since: that lock guards nothing now
      held.release()
    held = _held[os.path.realpath(workdir)] = _acquire(workdir)
    return held


def _acquire(workdir: str) -> Lock:
  """A new flock on workdir/.lock (creating both); ValueError if another process holds it."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'workdir: {workdir} is a file, not a directory')
  try:
    os.makedirs(workdir, exist_ok=True)
    fd = os.open(os.path.join(workdir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    raise ValueError(f'workdir: cannot create or write {workdir}: {e.strerror or e}') from None
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _holder(fd)
    os.close(fd)
    raise ValueError(f'workdir: {workdir} is in use by {holder}; wait for it or stop it') from None
  except OSError as e:  # a filesystem without locks (some FUSE mounts): run, but say so
    print(f'workdir: {workdir} cannot be locked ({e.strerror}); nothing stops another process '
          'from writing it at the same time', flush=True)
  os.ftruncate(fd, 0)
  os.pwrite(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname(),
                            'started': time.strftime('%Y-%m-%d %H:%M:%S')}).encode(), 0)
  return Lock(workdir, fd)


def _holder(fd: int) -> str:
  """'pid N on host H (started T)' from a lock file, or 'another process' while it is unwritten."""
  try:
    info = json.loads(os.pread(fd, 4096, 0).decode())
    return f'pid {info["pid"]} on host {info["host"]} (started {info["started"]})'
  except (OSError, ValueError, KeyError, TypeError):
    return 'another process'


def _multi() -> bool:
  # Only a multi-host run asks JAX: a sweep must not initialize (and on GPUs, grab) a backend.
  return jax.distributed.is_initialized() and jax.process_count() > 1


def process_0_first(where: str, fn):
  """fn() on process 0 alone (None elsewhere); its ValueError (or OSError, as one starting with
  `where`) is raised on every process.

  On several processes this is also a barrier: no process goes on (e.g. writes into the workdir)
  before process 0 is done (has locked, cleared (--overwrite) and claimed it; has built the data).
  """
  result, error = None, ''
  if not _multi() or jax.process_index() == 0:
    try:
      result = fn()
    except ValueError as e:
      error = str(e).strip() or 'ValueError'
    except OSError as e:
      error = f'{where}: {e.strerror or e}'
    except BaseException as e:  # a bug or an interrupt: the others must not wait for process 0
      if _multi():
        _broadcast(f'{where}: process 0 failed ({type(e).__name__})')
      raise
  if _multi():
    error = _broadcast(error)
  if error:
    raise ValueError(error)
  return result


def _broadcast(error: str) -> str:
  """Process 0's message (its bytes, padded) on every process."""
  sent = np.frombuffer(error.encode()[:_MESSAGE_BYTES].ljust(_MESSAGE_BYTES, b'\0'), np.uint8)
  got = np.asarray(multihost_utils.broadcast_one_to_all(sent), np.uint8)
  return got.tobytes().rstrip(b'\0').decode('utf-8', 'replace')


# --- one config per workdir -----------------------------------------------------------------------
def claim(workdir: str, config, overwrite: bool = False, remote: bool = False,
          resumable=()) -> None:
  """Locks workdir (see `lock`) and records `config` in it.

  ValueError (one line, every process): a workdir in use, a file, one that cannot be written, or one
  holding another config's run unless `overwrite` (then that run is moved aside). The first three
  are found before anything is written.
  remote: the caller writes through etils.epath, so `workdir` may be a URL (`gs://...`). A remote
  workdir is not locked (an object store has no flock): one command at a time is the user's to
  keep; --overwrite is refused there (moving a run aside would copy every object of it).
  resumable: fields (or sections) that may differ from the record, besides RESUMABLE, because this
  workdir keys what depends on them (e.g. mixbench's agents).
  """
  new = json.loads(config.to_json_best_effort())
  _check_path(workdir, remote)
  process_0_first(f'workdir: {workdir}',
                  lambda: _claim_here(workdir, new, overwrite, tuple(resumable)))
  if _multi():
    _check_shared(workdir, atomic.join(workdir, CONFIG_FILE))


def _claim_here(workdir: str, new: dict, overwrite: bool, resumable=()) -> None:
  path = atomic.join(workdir, CONFIG_FILE)
  if atomic.is_remote(workdir):
    held = None
    if overwrite:
      raise ValueError(f'workdir: --overwrite is not supported on a remote workdir ({workdir}); '
                       'delete it or give another')
  else:
    held = _lock_here(workdir)  # first: nothing is compared, moved or written under a live run
  if overwrite:
    if set(os.listdir(workdir)) - {LOCK_FILE}:
      _move_aside(workdir, held)
  elif epath.Path(path).exists():
    old = atomic.read_json(path)
    diff = ['<unreadable config.json>'] if old is None else differences(old, new, resumable)
    if diff:
      shown = ', '.join(diff[:4]) + (f' and {len(diff) - 4} more' if len(diff) > 4 else '')
      fix = 'delete it or give another' if held is None else 'pass --overwrite to replace it'
      raise ValueError(f'workdir: {workdir} holds a run of another config (differs in {shown}); '
                       f'{fix}')
  atomic.write_json(path, new, sort_keys=True)
  if held is None:
    print(f'workdir: {workdir} is remote and not locked: run one command on it at a time',
          flush=True)


def replaced_path(workdir: str) -> str:
  return os.path.normpath(workdir) + '.replaced'


def has_replaced(workdir: str) -> bool:
  """Whether --overwrite's previous run is still kept beside `workdir` (never, for a remote one)."""
  return not atomic.is_remote(workdir) and os.path.isdir(replaced_path(workdir))


def _has_checkpoint(workdir: str) -> bool:
  folder = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def _move_aside(workdir: str, held: Lock) -> None:
  """The old run goes to <workdir>.replaced (an older one still there is deleted first), and a new
  folder, locked before it is renamed into place, takes its name: no other process slips in."""
  aside = replaced_path(workdir)
  fresh = f'{os.path.normpath(workdir)}.new-{os.getpid()}'
  shutil.rmtree(fresh, ignore_errors=True)
  new = _acquire(fresh)
  if os.path.exists(aside) and not _has_checkpoint(workdir):
    # An earlier --overwrite's new run never checkpointed: the run it replaced is still the one to
    # keep, and this failed attempt is what goes.
    shutil.rmtree(workdir)
    os.makedirs(workdir)
  elif os.path.exists(aside):
    shutil.rmtree(aside)
  if os.path.exists(workdir) and os.listdir(workdir):
    os.replace(workdir, aside)
  else:
    shutil.rmtree(workdir, ignore_errors=True)
  try:
    os.rename(fresh, workdir)  # fails only if another process made (and locked) workdir meanwhile
  except OSError:
    new.release()
    shutil.rmtree(fresh, ignore_errors=True)
    raise ValueError(f'workdir: {workdir} was taken by another process while --overwrite moved '
                     f'the previous run to {aside}') from None
  with _guard:
    held.release()
    new.workdir = workdir
    _held[os.path.realpath(workdir)] = new
  print(f'--overwrite: the previous run is kept in {aside} until this run writes its first '
        'checkpoint', flush=True)


def release_replaced(workdir: str) -> None:
  """Deletes the run --overwrite moved aside, once this run has a checkpoint of its own."""
  aside = replaced_path(workdir)
  if jax.process_index() == 0 and has_replaced(workdir):
    shutil.rmtree(aside, ignore_errors=True)


def _check_shared(workdir: str, path: str) -> None:
  """ValueError on every process unless every process sees process 0's config.json.

  A checkpoint holds every host's shards in one directory: a workdir on each host's own disk would
  leave no host with a whole checkpoint to resume from.
  """
  seen_P = multihost_utils.process_allgather(np.array(epath.Path(path).exists()))
  if not np.all(seen_P):  # every process raises, so none is left waiting in a collective
    missing = np.flatnonzero(~np.asarray(seen_P, bool)).tolist()
    raise ValueError(f'workdir: {workdir} is not shared by every process (process '
                     f'{missing[0]} does not see process 0\'s {CONFIG_FILE}); put it on storage '
                     'all hosts mount')
