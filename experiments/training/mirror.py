"""A remote workdir (`gs://...`) for the commands that write theirs with plain file IO: a local mirror.

`with mirrored(W, overwrite) as local:` is W itself when W is a path. For a URL it is a local folder
($TMPDIR/mixlab_mirror/<hash of W>), locked first (a second command on it is refused before it
touches it), that is made W's copy: it gets W's files that changed since this machine last synced
them and loses every file W lacks. It is then uploaded while the command runs, every SYNC_SECONDS,
and once more when the command returns or fails: files whose size or mtime changed since their last
upload, each replacing its object whole; files deleted here (checkpoints past `keep_checkpoints`)
are deleted there. Left out: the lock, the manifest, files being written (`.tmp`) and orbax's
temporary folders.

SIGTERM (a preemption notice) stops the command as an error would, uploads, and exits with 143. A
command killed outright (SIGKILL) skips the last upload, so it loses the work since the previous
sync; it resumes, here or on another machine, from what reached W (a checkpoint cut short there
fails its checksums, and the one before it is used). Not
supported on a remote W: --overwrite (it would delete the old run before the new one has a
checkpoint) and several processes (each would have its own mirror). The mirror is not locked
against another machine: run one command on a remote workdir at a time.
`experiments.train` does not mirror: it writes a remote workdir directly (see metrics.py, atomic.py).
"""

import contextlib
import hashlib
import json
import os
import signal
import tempfile
import threading

from etils import epath
import jax

from experiments.training import atomic
from experiments.training import workdir as workdir_lib

SYNC_SECONDS = 60.0  # how often a running command's mirror is uploaded
_MANIFEST = '.mixlab_mirror.json'  # {relative path: [remote length, remote mtime, local size, mtime]}
_SKIP = ('.lock', _MANIFEST)


def _skipped(rel: str) -> bool:
  """Never synced: the lock, the manifest, and files being written (atomic's and metrics' `.tmp`
  files, orbax's temporary folders)."""
  return os.path.basename(rel) in _SKIP or '.tmp' in rel or '.orbax-checkpoint-tmp' in rel


@contextlib.contextmanager
def mirrored(workdir: str, overwrite: bool = False, field: str = 'workdir', upload: bool = True):
  """The folder a command writes as `workdir` (see the module docstring). upload=False: a remote
  input (e.g. another command's workdir) only downloaded."""
  if not workdir or not atomic.is_remote(workdir):
    yield workdir
    return
  if overwrite and upload:
    raise ValueError(f'{field}: --overwrite is not supported on a remote workdir ({workdir}); '
                     'delete it or give another')
  if jax.distributed.is_initialized() and jax.process_count() > 1:
    raise ValueError(f'{field}: {workdir} is remote, and this command mirrors it in a local folder '
                     'that several processes would not share; give a path every host mounts')
  # An input gets its own copy: downloading it must not touch a mirror another command writes.
  key = hashlib.sha256(f'{workdir.rstrip("/")}{"" if upload else " input"}'.encode()).hexdigest()
  mirror = Mirror(workdir, os.path.join(tempfile.gettempdir(), 'mixlab_mirror', key[:16]))
  try:  # before the download: a live command's mirror is left alone
    workdir_lib.lock(mirror.local)
  except ValueError as e:
    raise ValueError(f'{e} (the local mirror of {workdir})') from None
  mirror.download()
  print(f'{field}: {workdir} is mirrored in {mirror.local}' +
        (f' (uploaded every {SYNC_SECONDS:g} s and when the command ends)' if upload else ''),
        flush=True)
  if not upload:
    yield mirror.local
    return
  stop = threading.Event()
  thread = threading.Thread(target=mirror.sync_every, args=(stop,), daemon=True)
  thread.start()
  old_term = None
  if threading.current_thread() is threading.main_thread() and \
      signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:  # a preemption: the last upload first
    old_term = signal.signal(signal.SIGTERM, _exit_on_term)
  def last_upload():
    stop.set()
    thread.join()
    mirror.sync()

  try:
    yield mirror.local
  except BaseException:  # the command failed or was stopped: its error, not a failed upload, shows
    try:
      last_upload()
    except Exception as e:  # pylint: disable=broad-except
      print(f'warning: the last upload of {mirror.local} to {workdir} failed ({e})', flush=True)
    raise
  finally:
    if old_term is not None:
      signal.signal(signal.SIGTERM, old_term)
  last_upload()


def _exit_on_term(signum, frame):
  del frame
  raise SystemExit(128 + signum)  # unwinds the command (its checkpoints close), then uploads


class Mirror:
  """A local folder kept in step with a remote one, through a manifest of what was last synced."""

  def __init__(self, remote: str, local: str):
    self.remote, self.local = remote.rstrip('/'), local
    self._lock = threading.Lock()  # one sync at a time
    self._warned = False
    self.manifest = {}
    if os.path.exists(os.path.join(local, _MANIFEST)):
      with open(os.path.join(local, _MANIFEST)) as f:
        self.manifest = json.load(f)

  def _local_state(self, rel: str):
    stat = os.stat(os.path.join(self.local, rel))
    return [stat.st_size, stat.st_mtime_ns]

  def _remote_files(self) -> dict[str, list]:
    root = epath.Path(self.remote)
    if not root.exists():
      return {}
    out, top = {}, None
    for folder, _, files in root.walk():
      top = top or str(folder)  # the walk's own spelling of the root
      for name in files:
        rel = os.path.relpath(str(folder / name), top)
        if not _skipped(rel):
          stat = (root / rel).stat()
          out[rel] = [stat.length, stat.mtime]
    return out

  def download(self) -> None:
    """Makes the folder the remote one: gets the files that changed since the last sync, and drops
    every file the remote lacks (deleted there, or written here after the last sync of a command
    that was killed: the remote is what a command resumes from) and the folders left empty."""
    os.makedirs(self.local, exist_ok=True)
    there = self._remote_files()
    for rel in atomic.files_under(self.local):
      if rel not in there and os.path.basename(rel) not in _SKIP:
        os.remove(os.path.join(self.local, rel))
    for folder, _, _ in sorted(os.walk(self.local), key=lambda f: -len(f[0])):
      if folder != self.local and not os.listdir(folder):  # orbax takes an empty step for one
        os.rmdir(folder)
    self.manifest = {rel: state for rel, state in self.manifest.items() if rel in there}
    for rel, state in there.items():
      known = self.manifest.get(rel)
      here = os.path.join(self.local, rel)
      if known and known[:2] == state and os.path.exists(here) and \
          self._local_state(rel) == known[2:]:
        continue
      os.makedirs(os.path.dirname(here), exist_ok=True)
      (epath.Path(self.remote) / rel).copy(epath.Path(here), overwrite=True)
      self.manifest[rel] = state + self._local_state(rel)
    self._save()

  def sync(self) -> None:
    """Uploads what changed here since the last sync, deletes there what was deleted here."""
    with self._lock:
      present = set()
      for rel in atomic.files_under(self.local):
        if _skipped(rel):
          continue
        try:
          state = self._local_state(rel)
          present.add(rel)
          if self.manifest.get(rel, [None] * 4)[2:] == state:
            continue
          atomic.upload(self.local, self.remote, [rel])
        except FileNotFoundError:  # deleted while this walked (orbax removing an old step)
          present.discard(rel)
          continue
        stat = (epath.Path(self.remote) / rel).stat()
        self.manifest[rel] = [stat.length, stat.mtime] + state
      for rel in set(self.manifest) - present:
        with contextlib.suppress(FileNotFoundError):
          (epath.Path(self.remote) / rel).unlink()
        del self.manifest[rel]
      self._save()

  def sync_every(self, stop: threading.Event) -> None:
    while not stop.wait(SYNC_SECONDS):
      try:
        self.sync()
      except Exception as e:  # pylint: disable=broad-except  # the command goes on; the last sync retries
        if not self._warned:
          self._warned = True
          print(f'warning: syncing {self.local} to {self.remote} failed ({e}); retrying', flush=True)

  def _save(self) -> None:
    atomic.write_json(os.path.join(self.local, _MANIFEST), self.manifest)
