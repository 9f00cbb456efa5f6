"""Record sources of mixing/data/formats.py: Parquet row groups, ArrayRecord files (raw, JSON or
tokenized records), TFDS datasets, and the record -> document rule they share with JSON lines.

Remote files (`gs://...`) are read through `etils.epath`; ArrayRecord's reader needs a local file, so
a remote one is copied once into the temporary folder (`local_copy`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile

from etils import epath
import numpy as np


def is_local(path) -> bool:
  return '://' not in str(path)


def local_copy(path: str) -> str:
  """A local path holding `path`'s bytes: itself, or a cached download of a remote file."""
  if is_local(path):
    return path
  stat = epath.Path(path).stat()
  key = hashlib.sha256(f'{path}\0{stat.length}\0{stat.mtime}'.encode()).hexdigest()[:16]
  local = epath.Path(tempfile.gettempdir()) / 'mixlab_remote' / f'{key}-{epath.Path(path).name}'
  if not local.exists():
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.parent / f'.{local.name}.partial'
    epath.Path(path).copy(partial, overwrite=True)
    partial.replace(local)
  return str(local)


def local_folder(path: str, names) -> str:
  """`path` itself, or, for a remote folder (or file), a local folder holding its files `names`
  (those that exist; a file's own name included); returns the local path of `path`.

  Each file is downloaded once (`local_copy`, by path, size and mtime) and hard-linked into the
  folder, replaced by a rename when it changed (a process that memory-maps the old one keeps it
  whole); a name the remote no longer has is removed."""
  if is_local(path):
    return path
  remote = epath.Path(path)
  folder, own = (remote, None) if remote.is_dir() else (remote.parent, remote.name)
  key = hashlib.sha256(str(remote).encode()).hexdigest()[:16]
  local = os.path.join(tempfile.gettempdir(), 'mixlab_remote', key)
  os.makedirs(local, exist_ok=True)
  for name in [n for n in [own, *names] if n]:
    target = os.path.join(local, name)
    if not (folder / name).exists():
      with contextlib.suppress(FileNotFoundError):
        os.remove(target)
      continue
    cached = local_copy(str(folder / name))
    if os.path.exists(target) and os.path.samefile(cached, target):
      continue
    partial = f'{target}.{os.getpid()}.partial'
    try:
      os.link(cached, partial)
    except OSError:  # another file system: a copy
      shutil.copyfile(cached, partial)
    os.replace(partial, target)
  return os.path.join(local, own) if own else local


def record_source(path: str, fmt: str, reading: Reading | None = None):
  """Random access to the records of an ArrayRecord file or (fmt 'tfds') a TFDS split.

  (Reading and Unit, in annotations here, are formats.py's.)
  """
  if fmt == 'tfds':
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    builder = tfds.builder_from_directory(path)
    if reading.split not in builder.info.splits:
      raise ValueError(f'split: {path} has no split {reading.split!r} '
                       f'(has {", ".join(sorted(builder.info.splits))})')
    return builder.as_data_source(split=reading.split)
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  try:
    reader = array_record_module.ArrayRecordReader(local_copy(path),
                                                   'readahead_buffer_size:0,max_parallelism:0')
  except (RuntimeError, ValueError, OSError) as e:
    raise ValueError(f'{path}: not an ArrayRecord file: {str(e).splitlines()[0][:120]}') from None
  if not reader.ok():
    raise ValueError(f'{path}: not an ArrayRecord file (no valid footer)')
  return _Records(reader)


class _Records:
  def __init__(self, reader):
    self._reader = reader

  def __len__(self):
    return self._reader.num_records()

  def __getitems__(self, indices):
    return self._reader.read(list(indices))


def record_doc(where, obj, reading: Reading):
  """(prompt, completion) of a JSON object / record dict; `where` names it (a str or a callable)."""
  if callable(where):
    try:
      return record_doc('', obj, reading)
    except ValueError as e:
      raise ValueError(f'{where()}{e}') from None
  if not isinstance(obj, dict):
    raise ValueError(f'{where}: expected a JSON object, got {type(obj).__name__}')
  fields = reading.fields or ('text',)
  values = []
  for field in fields:
    if field not in obj:
      raise ValueError(f'{where}: missing field {field!r} (has {", ".join(sorted(obj))[:80]})')
    value = obj[field]
    if isinstance(value, bytes):
      try:
        value = value.decode('utf-8')
      except UnicodeDecodeError:
        raise ValueError(f'{where}: field {field!r} is not valid UTF-8') from None
    if not isinstance(value, str):
      shown = json.dumps(value, default=str)
      raise ValueError(f'{where}: field {field!r} must be a string, got {type(value).__name__}: '
                       f'{shown if len(shown) <= 60 else shown[:57] + "..."}')
    values.append(value)
  if len(values) == 1:
    return '', values[0]
  return reading.template.format(input=values[0]), ' ' + values[1]


def parquet(unit: Unit, reading: Reading):
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  fields = list(reading.fields or ('text',))
  with epath.Path(unit.path).open('rb') as f:
    pf = pq.ParquetFile(f)
    missing = [c for c in fields if c not in pf.schema_arrow.names]
    if missing:
      raise ValueError(f'{unit.path}: no column {missing[0]!r} (has {", ".join(pf.schema_arrow.names)})')
    table = pf.read_row_group(unit.start, columns=fields).to_pydict()
  for i, values in enumerate(zip(*(table[c] for c in fields))):
    where = f'{unit.path}: row group {unit.start} row {i}'
    yield (f'{unit.name}#{unit.start}.{i}', *record_doc(where, dict(zip(fields, values)), reading),
           None)


def records(unit: Unit, reading: Reading):
  source = record_source(unit.path, unit.format, reading)
  for start in range(unit.start, unit.stop, 1024):
    batch = source.__getitems__(range(start, min(start + 1024, unit.stop)))
    for i, record in enumerate(batch, start):
      where, key = f'{unit.path}: record {i}', f'{unit.name}#{i}'
      if unit.format == 'tokens':
        if len(record) % 4:
          raise ValueError(f'{where}: {len(record)} bytes is not a whole number of int32 tokens')
        yield key, '', '', np.frombuffer(record, '<i4')
      elif unit.format == 'tfds' or reading.fields:
        obj = record if isinstance(record, dict) else _json_record(where, record)
        yield (key, *record_doc(where, obj, reading), None)
      else:
        try:
          yield key, '', record.decode('utf-8'), None
        except UnicodeDecodeError as e:
          raise ValueError(f'{where}: not valid UTF-8 (byte {e.start}): {e.reason}') from None


def _json_record(where: str, record: bytes):
  try:
    return json.loads(record)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{where}: not a JSON object: {e}') from None
