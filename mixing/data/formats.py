"""Reading a researcher's corpora: globs of text, JSONL/JSON, Parquet, ArrayRecord or TFDS, streamed.

A source is a list of globs (`**` recursive; a folder means every file under it, hidden ones aside;
a folder holding `dataset_info.json` is a TFDS dataset). Each file's format comes from its extension
after any `.gz` / `.zst` (`.jsonl`/`.ndjson` JSONL, `.json` a JSON array or JSONL, `.parquet`,
`.array_record` (also TFDS's `.array_record-00000-of-00004` shards), anything else text) or is named
(`text`, `jsonl`, `json`, `parquet`, `array_record`, `tokens`, `tfds`). Every path goes through
`etils.epath`, so `gs://` (and any scheme it supports) works for sources as for local files.

A document is (key, prompt, completion, tokens): text files give chunks of at most `chunk_bytes` UTF-8
bytes ending at a line end where the window has one (else at a character boundary); a record gives its
`field` (default `text`) as one document, or with two fields `input,target` the prompt
`template.format(input=...)` and the completion ' ' + target. `tokens` ArrayRecord records are
little-endian int32 ids (already tokenized; packed as they are). The key (file, byte offset or
record index) is stable, whatever reads it in whatever order, so the held-out split hashes it.

Work is cut into units (`plan`): a byte range of `UNIT_BYTES` of an uncompressed text or JSONL file
(a unit owns the lines that start in it), a compressed file whole, a Parquet row group, a range of
records. Bad input raises ValueError naming the file and the line or record.
"""

import dataclasses
import gzip
import io
import json
import os
import re
from typing import Iterator

from etils import epath
import numpy as np

from mixing.data import records

UNIT_BYTES = 16 << 20  # uncompressed text/JSONL files are read in units of this many bytes
UNIT_RECORDS = 65536  # records per unit of ArrayRecord, Parquet-free record sources
FORMATS = ('text', 'jsonl', 'json', 'parquet', 'array_record', 'tokens', 'tfds')
_COMPRESSION = {'.gz': 'gzip', '.zst': 'zstd', '.zstd': 'zstd'}
_MAGIC = set('*?[')


@dataclasses.dataclass(frozen=True)
class Reading:
  """How to read a source's records into documents."""
  format: str = ''  # '' = from each file's extension; else one of FORMATS
  fields: tuple[str, ...] = ()  # () = ('text',) for records; (field,) or (input, target)
  template: str = 'Question: {input}\nAnswer:'  # prompt of an (input, target) record
  chunk_bytes: int = 4096  # text files: document size in UTF-8 bytes
  split: str = 'train'  # TFDS datasets: the split to read


@dataclasses.dataclass(frozen=True)
class Unit:
  """A piece of work: part of one file (or of one TFDS split)."""
  path: str  # the file (or TFDS folder), as epath spells it
  name: str  # its name relative to the glob's root: stable across machines
  format: str
  compression: str  # '', 'gzip' or 'zstd'
  start: int  # byte offset, row group or record index
  stop: int


def _split_glob(pattern: str) -> tuple[str, str]:
  """'gs://b/data/**/*.jsonl' -> ('gs://b/data', '**/*.jsonl'); no magic -> (pattern, '')."""
  head, sep, rest = pattern.partition('://')
  parts = (rest if sep else head).split('/')
  for i, part in enumerate(parts):
    if _MAGIC & set(part):
      root = '/'.join(parts[:i]) or ('/' if (rest if sep else head).startswith('/') else '.')
      return (head + sep + root if sep else root), '/'.join(parts[i:])
  return pattern, ''


def expand(globs, reading: Reading) -> list[tuple[epath.Path, str, str]]:
  """[(path, name, format)] of every file the globs match, sorted and de-duplicated."""
  out, seen = [], set()
  for pattern in globs:
    root, rest = _split_glob(pattern)
    root_path = epath.Path(os.path.abspath(root) if records.is_local(root) else root)
    if not rest:
      if not root_path.exists():
        raise ValueError(f'path: no such file or directory: {pattern!r}')
      if root_path.is_dir() and (root_path / 'dataset_info.json').exists():
        matches, rest = [root_path], None
      elif root_path.is_dir():
        matches, rest = glob_files(root_path, '**/*'), '**/*'
      else:
        matches = [root_path]
    else:
      try:
        matches = glob_files(root_path, rest) if root_path.exists() else []
      except (ValueError, OSError) as e:
        raise ValueError(f'path: bad glob {pattern!r}: {e}') from None
    found = 0
    for path in sorted(matches, key=str):
      relative = str(path)[len(str(root_path)):].lstrip('/') or path.name
      if rest and (path.is_dir() or any(p.startswith('.') for p in relative.split('/'))):
        continue
      fmt = 'tfds' if rest is None else _format_of(path.name, reading.format)
      if str(path) not in seen:
        seen.add(str(path))
        out.append((path, relative, fmt))
        found += 1
    if not found:
      raise ValueError(f'path: no files match {pattern!r}')
  return out


def glob_files(root: epath.Path, pattern: str) -> list[epath.Path]:
  """root.glob(pattern) with `**` (any number of folders) on every epath backend."""
  if '**' not in pattern:
    return list(root.glob(pattern))
  regex = re.compile(_glob_regex(pattern) + r'\Z', re.S)
  out = []
  for folder, _, names in root.walk():
    base = str(folder)[len(str(root)):].lstrip('/')
    out += [folder / n for n in names if regex.match(f'{base}/{n}' if base else n)]
  return out


def _glob_regex(pattern: str) -> str:
  """'**/' any folders, '*' and '?' within a name, '[...]' a character class."""
  out, i = [], 0
  while i < len(pattern):
    if pattern.startswith('**/', i):
      out.append('(?:.*/)?')
      i += 3
    elif pattern.startswith('**', i):
      out.append('.*')
      i += 2
    elif pattern[i] in '*?':
      out.append('[^/]*' if pattern[i] == '*' else '[^/]')
      i += 1
    elif pattern[i] == '[' and ']' in pattern[i + 2:]:
      end = pattern.index(']', i + 2)
      out.append('[' + pattern[i + 1:end].replace('!', '^', 1) + ']')
      i = end + 1
    else:
      out.append(re.escape(pattern[i]))
      i += 1
  return ''.join(out)


def _format_of(name: str, declared: str) -> str:
  if declared:
    return declared
  lower = name.lower()
  for suffix in _COMPRESSION:
    if lower.endswith(suffix):
      lower = lower[:-len(suffix)]
  if lower.endswith(('.jsonl', '.ndjson')):
    return 'jsonl'
  if lower.endswith('.json'):
    return 'json'
  if lower.endswith('.parquet'):
    return 'parquet'
  if lower.endswith(('.array_record', '.arrayrecord')) or '.array_record-' in lower:
    return 'array_record'
  return 'text'


def _compression_of(name: str) -> str:
  return next((c for s, c in _COMPRESSION.items() if name.lower().endswith(s)), '')


def plan(files, reading: Reading) -> list[Unit]:
  """The units of work of `expand`'s files, in a fixed order."""
  units = []
  for path, name, fmt in files:
    compression = _compression_of(path.name) if fmt != 'tfds' else ''
    if fmt in ('text', 'jsonl') and not compression:
      size = path.stat().length
      units += [Unit(str(path), name, fmt, '', s, min(s + UNIT_BYTES, size))
                for s in range(0, max(size, 1), UNIT_BYTES)]
    elif fmt == 'parquet':
      import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
      with path.open('rb') as f:
        groups = pq.ParquetFile(f).num_row_groups
      units += [Unit(str(path), name, fmt, '', g, g + 1) for g in range(groups)]
    elif fmt in ('array_record', 'tokens', 'tfds'):
      count = len(records.record_source(str(path), fmt, reading))
      units += [Unit(str(path), name, fmt, '', s, min(s + UNIT_RECORDS, count))
                for s in range(0, count, UNIT_RECORDS)]
    else:
      units.append(Unit(str(path), name, fmt, compression, 0, -1))
  return units


def _open_stream(unit: Unit):
  raw = epath.Path(unit.path).open('rb')
  if unit.compression == 'gzip':
    return gzip.GzipFile(fileobj=raw)
  if unit.compression == 'zstd':
    import zstandard  # pylint: disable=import-outside-toplevel
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
  return raw


BLOCK_BYTES = 4 << 20  # compressed files are read in blocks of about this many bytes


def _blocks(unit: Unit) -> Iterator[tuple[int, bytes]]:
  """(byte offset, block of whole lines) covering the lines that start in the unit."""
  with _open_stream(unit) as f:
    offset = 0
    if unit.start > 0:
      f.seek(unit.start - 1)
      offset = unit.start - 1 + len(f.readline())
    while unit.stop < 0 or offset < unit.stop:
      want = BLOCK_BYTES if unit.stop < 0 else unit.stop - offset
      block = f.read(want)
      if not block:
        break
      if not block.endswith(b'\n'):
        block += f.readline()  # finish the last line (it started in the unit)
      yield offset, block
      offset += len(block)


def _lines(unit: Unit) -> Iterator[tuple[int, bytes]]:
  """(byte offset, line with its newline) of the lines that start in the unit."""
  for offset, block in _blocks(unit):
    for line in block.split(b'\n'):
      if line:
        yield offset, line
      offset += len(line) + 1


def _line_number(unit: Unit, offset: int) -> int:
  """1-based line of `offset` (counted only on the error path)."""
  count = 0
  with _open_stream(unit) as f:
    done = 0
    while done < offset:
      block = f.read(min(1 << 20, offset - done))
      if not block:
        break
      count += block.count(b'\n')
      done += len(block)
  return count + 1


def _decode(unit: Unit, offset: int, data: bytes) -> str:
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = _line_number(unit, offset + e.start)
    raise ValueError(f'{unit.path}:{line}: not valid UTF-8 (byte {offset + e.start}): '
                     f'{e.reason}') from None


def _text_chunks(unit: Unit, chunk: int) -> Iterator[tuple[int, bytes]]:
  """(offset, chunk) of at most `chunk` bytes, ending at a line end where the window has one (else at
  a character boundary); chunks never span two blocks."""
  for offset, block in _blocks(unit):
    pos, size = 0, len(block)
    while pos < size:
      cut = size if size - pos <= chunk else block.rfind(b'\n', pos, pos + chunk) + 1
      if cut <= pos:  # a line longer than the chunk: cut at a character boundary
        cut = pos + chunk
        while cut > pos + 1 and (block[cut] & 0xC0) == 0x80:
          cut -= 1
      yield offset + pos, block[pos:cut]
      pos = cut


def documents(unit: Unit, reading: Reading) -> Iterator[tuple[str, str, str, np.ndarray | None]]:
  """(key, prompt, completion, tokens or None) of each document of the unit, in order."""
  name = unit.name
  if unit.format == 'text':
    for offset, data in _text_chunks(unit, reading.chunk_bytes):
      text = _decode(unit, offset, data)
      if text.strip():
        yield f'{name}@{offset}', '', text, None
  elif unit.format == 'jsonl':
    for offset, line in _lines(unit):
      if not line.strip():
        continue
      try:
        obj = json.loads(_decode(unit, offset, line))
      except json.JSONDecodeError as e:
        raise ValueError(f'{unit.path}:{_line_number(unit, offset)}: invalid JSON: {e}') from None
      where = lambda o=offset: f'{unit.path}:{_line_number(unit, o)}'
      yield (f'{name}@{offset}', *records.record_doc(where, obj, reading), None)
  elif unit.format == 'json':
    with _open_stream(unit) as f:
      data = f.read()
    try:
      items = json.loads(_decode(unit, 0, data))
    except json.JSONDecodeError as e:
      raise ValueError(f'{unit.path}:{e.lineno}: invalid JSON: {e.msg}') from None
    if not isinstance(items, list):
      raise ValueError(f'{unit.path}: expected a JSON array of objects, got {type(items).__name__}')
    for i, obj in enumerate(items):
      yield (f'{name}#{i}', *records.record_doc(f'{unit.path}: record {i}', obj, reading), None)
  elif unit.format == 'parquet':
    yield from records.parquet(unit, reading)
  else:
    yield from records.records(unit, reading)


