"""Files written whole or not at all: a reader, or a run killed mid-write, never sees half a result.

A local file is written beside its path and renamed into place. A remote one (`gs://...`, any scheme
`etils.epath` supports) is written locally, then uploaded as one object: an object store replaces an
object whole, so readers see the old object or the new one.
"""

import json
import os
import shutil
import tempfile

from etils import epath

from mixing.data import records


def is_remote(path) -> bool:
  """Whether `path` is a URL (`gs://...`), written through etils.epath rather than the OS."""
  return path is not None and not records.is_local(path)


def join(path, *names) -> str:
  """os.path.join that keeps a URL's `//` (as os.path.join does) and strips a trailing slash."""
  return os.path.join(str(path).rstrip('/') or '/', *names)


def replace(path: str, save) -> str:
  """save(tmp) writes a file beside `path` (a local temporary file for a remote path), which then
  takes its place in one rename (one upload)."""
  suffix = os.path.splitext(path)[1]  # np.savez would append .npz to other names
  if is_remote(path):
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix='mixlab-upload-')
    os.close(fd)
    try:
      save(tmp)
      epath.Path(path).parent.mkdir(parents=True, exist_ok=True)  # a no-op on object stores
      epath.Path(tmp).copy(epath.Path(path), overwrite=True)
    finally:
      os.remove(tmp)
    return path
  tmp = path + '.tmp' + suffix
  save(tmp)
  os.replace(tmp, path)
  return path


def write_text(path: str, text: str) -> str:
  def save(tmp):
    with open(tmp, 'w', newline='') as f:
      f.write(text)
  return replace(path, save)


def write_json(path: str, obj, **dump_kwargs) -> str:
  return write_text(path, json.dumps(obj, indent=1, **dump_kwargs))


def read_json(path: str):
  """The JSON at path (local or remote), or None if it is missing or does not parse."""
  try:
    return json.loads(epath.Path(path).read_text())
  except (OSError, ValueError):
    return None


def download(remote: str, local: str, skip=('checkpoints', 'tb')) -> str:
  """Copies a remote folder's files (not the subfolders named in `skip`, at any depth) to `local`;
  returns `local` (e.g. to read a remote run's metrics and summaries with plain file IO)."""
  for path in epath.Path(remote).iterdir():
    if path.is_dir():
      if path.name not in skip:
        download(str(path), os.path.join(local, path.name), skip)
    else:
      os.makedirs(local, exist_ok=True)
      path.copy(epath.Path(local) / path.name, overwrite=True)
  return local


def files_under(folder: str) -> list[str]:
  """The files under a local folder, as paths relative to it."""
  return [os.path.relpath(os.path.join(here, name), folder)
          for here, _, names in os.walk(folder) for name in names]


def upload(local: str, remote: str, names) -> list[str]:
  """Each file `names` (relative to `local`) replaces its remote object whole; the remote paths."""
  return [replace(join(remote, name), lambda tmp, name=name: shutil.copyfile(
      os.path.join(local, name), tmp)) for name in names]
