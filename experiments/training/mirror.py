"""A remote workdir (`gs://...`) for the commands that write theirs with plain file IO: a local mirror.

`with mirrored(W, overwrite) as local:` is W itself when W is a path. For a URL it is a local folder
($TMPDIR/mixlab_mirror/<hash of W>) that first gets W's files that changed since this machine last
saw them (and loses those deleted from W), then is uploaded while the command runs, every
SYNC_SECONDS and once more when the command ends, however it ends: files whose size or mtime changed
since their last upload, each replacing its object whole; files deleted here (checkpoints past
`keep_checkpoints`) are deleted there. Left out: the lock file and orbax's temporary folders.

A command killed between syncs loses at most that much work to a fresh machine; it resumes from what
reached W (a checkpoint cut short there fails its checksums, and the one before it is used). Not
supported on a remote W: --overwrite (it would delete the old run before the new one has a
checkpoint) and several processes (each would have its own mirror). The mirror is not locked
against another machine: run one command on a remote workdir at a time.
`experiments.train` does not mirror: it writes a remote workdir directly (see metrics.py, atomic.py).
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading

from etils import epath
import jax

from experiments.training import atomic

SYNC_SECONDS = 60.0  # how often a running command's mirror is uploaded
_MANIFEST = '.mixlab_mirror.json'  # {relative path: [remote length, remote mtime, local size, mtime]}
_SKIP = ('.lock', _MANIFEST)


def _skipped(rel: str) -> bool:
  return os.path.basename(rel) in _SKIP or '.orbax-checkpoint-tmp' in rel


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
  key = hashlib.sha256(workdir.rstrip('/').encode()).hexdigest()[:16]
  mirror = Mirror(workdir, os.path.join(tempfile.gettempdir(), 'mixlab_mirror', key))
  mirror.download()
  print(f'{field}: {workdir} is mirrored in {mirror.local}' +
        (f' (uploaded every {SYNC_SECONDS:g} s and at the end)' if upload else ''), flush=True)
  if not upload:
    yield mirror.local
    return
  stop = threading.Event()
  thread = threading.Thread(target=mirror.sync_every, args=(stop,), daemon=True)
  thread.start()
  try:
    yield mirror.local
  finally:
    stop.set()
    thread.join()
    mirror.sync()


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
    """Gets the remote files that changed since the last sync; drops those deleted there."""
    os.makedirs(self.local, exist_ok=True)
    there = self._remote_files()
    for rel in set(self.manifest) - set(there):  # deleted remotely since this machine synced
      with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(self.local, rel))
      del self.manifest[rel]
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
      for folder, _, files in os.walk(self.local):
        for name in files:
          rel = os.path.relpath(os.path.join(folder, name), self.local)
          if _skipped(rel):
            continue
          try:
            state = self._local_state(rel)
            present.add(rel)
            if self.manifest.get(rel, [None] * 4)[2:] == state:
              continue
            atomic.replace(atomic.join(self.remote, rel), lambda tmp, rel=rel: shutil.copyfile(
                os.path.join(self.local, rel), tmp))
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
