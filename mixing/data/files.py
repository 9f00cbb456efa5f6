"""File-backed data sources: local text, folders of text, and JSONL files.

A `FileSpec` names a source. `load` turns it once, through a TFDS
`GeneratorBasedBuilder` writing `array_record` files, into a cached dataset
under `data_dir`, and returns random-access `train` / `heldout` sources that
work as `grain.MapDataset.source(src)`.

TensorFlow is never imported: the builder is written and read only through
TFDS's TF-free paths (`download_and_prepare` with `file_format='array_record'`,
`tfds.builder_from_directory(...).as_data_source()`); `tfds.load` and
`as_dataset` would need TF and are not used.

Documents:
  * a text file is split into chunks of about `chunk_chars` characters at line
    boundaries (a longer line is cut into `chunk_chars` pieces); concatenating
    all chunks in order gives back the text exactly;
  * a folder: each file matching `glob` (sorted by relative path) is chunked
    the same way; whitespace-only files add no documents;
  * a JSONL file: each non-blank line is one document, a JSON object whose
    named `fields` must all be strings.

Split: a seeded permutation puts `round(n * heldout_fraction)` documents
(at least 1, at most n - 1) in `heldout`, the rest in `train`; each split keeps
source order (see `split_indices`). A source of a single document puts that
document in both splits (heldout then overlaps train) and logs a warning.

Cache: the dataset folder is `<data_dir>/<stem>-<fingerprint>`, the fingerprint
hashing the path, each file's size, mtime and content, the spec and the seed.
It is built in a temporary folder and renamed into place only when complete,
so a failed build leaves nothing behind. Stale builds are not deleted.
"""

import collections.abc
import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import re
import shutil
import tempfile
from typing import Any, Iterator, Sequence

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

_FORMAT_VERSION = 1  # Bump to invalidate every cached build.
_BUILDER_NAME = 'mixlab_files'
_BUILDER_VERSION = '1.0.0'
_SPLITS = ('train', 'heldout')


@dataclasses.dataclass(frozen=True)
class FileSpec:
  """A file-backed source.

  Attributes:
    path: a text file, a folder of text files, or a `.jsonl` file.
    fields: JSONL only: the fields each line must have, e.g.
      ('question', 'answer'); records hold exactly these fields.
    heldout_fraction: fraction of documents in the seeded heldout split.
    chunk_chars: text/folder: documents are chunks of about this many chars.
    glob: folder only: which files to read (e.g. '*.txt', '**/*.md').
  """
  path: str
  fields: tuple[str, ...] = ()
  heldout_fraction: float = 0.05
  chunk_chars: int = 4096
  glob: str = '*.txt'

  @property
  def kind(self) -> str:
    """'folder', 'jsonl' or 'text'."""
    if os.path.isdir(self.path):
      return 'folder'
    return 'jsonl' if self.path.endswith('.jsonl') else 'text'


class RecordSource(collections.abc.Sequence):
  """Random-access records of one split; values come back as python `str`."""

  def __init__(self, source: Any, names: Sequence[str]):
    self._source = source  # A tfds ArrayRecordDataSource.
    self._names = tuple(names)

  def _decode(self, raw: dict) -> dict[str, str]:
    return {name: _to_str(raw[f'f{i}']) for i, name in enumerate(self._names)}

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.__getitems__(range(*index.indices(len(self))))
    index = index.__index__()
    size = len(self)
    if index < 0:
      index += size
    if not 0 <= index < size:
      raise IndexError(f'record index {index} out of range [0, {size})')
    return self._decode(self._source[index])

  def __getitems__(self, indices: Sequence[int]) -> list[dict[str, str]]:
    indices = [int(i) for i in indices]
    if not indices:
      return []
    size = len(self)
    indices = [i + size if i < 0 else i for i in indices]
    if any(not 0 <= i < size for i in indices):
      raise IndexError(f'record indices out of range [0, {size})')
    return [self._decode(raw) for raw in self._source.__getitems__(indices)]

  def __iter__(self) -> Iterator[dict[str, str]]:
    for start in range(0, len(self), 1024):
      yield from self.__getitems__(range(start, min(start + 1024, len(self))))

  def __repr__(self) -> str:
    return f'RecordSource(len={len(self)}, fields={self._names})'


def _to_str(value: Any) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


class _FileBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Writes already-parsed documents of each split to array_record files."""

  name = _BUILDER_NAME
  VERSION = tfds.core.Version(_BUILDER_VERSION)

  def __init__(self, *, splits: dict[str, list[tuple[str, ...]]],
               num_fields: int, **kwargs):
    self._split_docs = splits
    self._num_fields = num_fields
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    # Not `dataset_info_from_configs`: it reads metadata from a package dir.
    features = {f'f{i}': tfds.features.Text() for i in range(self._num_fields)}
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict(features),
        disable_shuffling=True)  # Keep source order within each split.

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {name: self._generate_examples(docs)
            for name, docs in self._split_docs.items()}

  def _generate_examples(self, docs):
    for key, doc in enumerate(docs):
      yield key, {f'f{i}': value for i, value in enumerate(doc)}

  def _log_download_bytes(self) -> None:  # Silences TFDS's stdout banner.
    logging.debug('Building %s in %s', self.name, self.data_dir)

  def _log_download_done(self) -> None:  # Silences TFDS's stdout banner.
    logging.debug('Built %s in %s', self.name, self.data_dir)


def load(spec: FileSpec, data_dir: str,
         seed: int = 0) -> dict[str, RecordSource]:
  """Returns {'train': src, 'heldout': src} of `spec`, building it if needed.

  Args:
    spec: the source.
    data_dir: where built datasets are cached.
    seed: seeds the train / heldout split.

  Returns:
    Random-access sources of records: {'text': str} for a text file or folder,
    {field: str for field in spec.fields} for JSONL.

  Raises:
    ValueError: bad spec or input, with one line naming the field and value.
  """
  _check_spec(spec)
  files = _source_files(spec)
  fingerprint = _fingerprint(spec, files, seed)
  stem = re.sub(r'[^A-Za-z0-9_.-]+', '_', pathlib.Path(spec.path).stem)[:40]
  final_dir = os.path.join(data_dir, f'{stem}-{fingerprint[:16]}')
  if not os.path.isdir(final_dir):
    _build(spec, files, seed, data_dir, final_dir)
  builder = tfds.builder_from_directory(
      os.path.join(final_dir, _BUILDER_NAME, _BUILDER_VERSION))
  names = spec.fields if spec.kind == 'jsonl' else ('text',)
  return {split: RecordSource(builder.as_data_source(split=split), names)
          for split in _SPLITS}


def split_indices(num_docs: int, heldout_fraction: float,
                  seed: int) -> tuple[list[int], list[int]]:
  """Returns sorted (train, heldout) document indices: seeded and disjoint.

  With >= 2 documents both are non-empty and together cover range(num_docs);
  a single document goes to both splits.
  """
  if num_docs == 1:
    return [0], [0]
  num_heldout = min(num_docs - 1,
                    max(1, int(round(num_docs * heldout_fraction))))
  order = np.random.default_rng(seed).permutation(num_docs)
  heldout = sorted(order[:num_heldout].tolist())
  train = sorted(order[num_heldout:].tolist())
  return train, heldout


def chunk_text(text: str, chunk_chars: int) -> list[str]:
  """Splits text at line boundaries into chunks of at most ~chunk_chars."""
  chunks, current, size = [], [], 0
  for line in text.splitlines(keepends=True):
    pieces = [line[i:i + chunk_chars] for i in range(0, len(line), chunk_chars)]
    for piece in pieces:
      if current and size + len(piece) > chunk_chars:
        chunks.append(''.join(current))
        current, size = [], 0
      current.append(piece)
      size += len(piece)
  if current:
    chunks.append(''.join(current))
  return chunks


def _check_spec(spec: FileSpec) -> None:
  """Validates the spec's own values (not the files)."""
  if not 0.0 < spec.heldout_fraction < 1.0:
    raise ValueError(
        f'heldout_fraction: must be in (0, 1), got {spec.heldout_fraction!r}')
  if spec.chunk_chars <= 0:
    raise ValueError(f'chunk_chars: must be positive, got {spec.chunk_chars!r}')
  if not isinstance(spec.fields, tuple) or not all(
      isinstance(f, str) and f for f in spec.fields):
    raise ValueError(
        f'fields: must be a tuple of non-empty strings, got {spec.fields!r}')
  if len(set(spec.fields)) != len(spec.fields):
    raise ValueError(f'fields: duplicate names in {spec.fields!r}')
  if not os.path.exists(spec.path):
    raise ValueError(f'file: no such file or directory: {spec.path!r}')
  if spec.kind == 'jsonl' and not spec.fields:
    raise ValueError(
        f"fields: a .jsonl file needs fields, e.g. ('question', 'answer'); "
        f'got () for {spec.path!r}')
  if spec.kind != 'jsonl' and spec.fields:
    raise ValueError(
        f'fields: only for .jsonl files, got {spec.fields!r} for {spec.path!r}')


def _source_files(spec: FileSpec) -> list[pathlib.Path]:
  """Returns the files to read: the file itself or the folder's matches."""
  if spec.kind != 'folder':
    return [pathlib.Path(spec.path)]
  try:
    files = sorted(p for p in pathlib.Path(spec.path).glob(spec.glob)
                   if p.is_file())
  except (ValueError, OSError) as e:
    raise ValueError(f'glob: bad pattern {spec.glob!r}: {e}') from None
  if not files:
    raise ValueError(f'glob: no files match {spec.glob!r} in {spec.path!r}')
  return files


def _read_bytes(path: pathlib.Path) -> bytes:
  try:
    return path.read_bytes()
  except OSError as e:
    raise ValueError(
        f'file: cannot read {str(path)!r}: {e.strerror or e}') from None


def _fingerprint(spec: FileSpec, files: list[pathlib.Path], seed: int) -> str:
  """Hashes the spec, the seed and each file's path, size, mtime and content."""
  entries = []
  for path in files:
    data = _read_bytes(path)
    stat = path.stat()
    entries.append([os.path.relpath(path, spec.path) if spec.kind == 'folder'
                    else '', stat.st_size, stat.st_mtime_ns,
                    hashlib.sha256(data).hexdigest()])
  key = {'format': _FORMAT_VERSION, 'path': os.path.abspath(spec.path),
         'kind': spec.kind, 'spec': dataclasses.asdict(spec), 'seed': seed,
         'files': entries}
  return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _decode_utf8(path: pathlib.Path, data: bytes) -> str:
  try:
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = data.count(b'\n', 0, e.start) + 1
    message = f'{path}:{line}: not valid UTF-8 (byte {e.start}): {e.reason}'
    raise ValueError(message) from None


def _documents(spec: FileSpec,
               files: list[pathlib.Path]) -> list[tuple[str, ...]]:
  """Parses the source into documents: tuples of field values, in order."""
  if spec.kind == 'jsonl':
    return _jsonl_documents(files[0], spec.fields)
  docs = []
  for path in files:
    text = _decode_utf8(path, _read_bytes(path))
    if text.strip():
      docs.extend((chunk,) for chunk in chunk_text(text, spec.chunk_chars))
  if not docs:
    what = 'files' if spec.kind == 'folder' else 'file'
    raise ValueError(f'file: no documents in {spec.path!r} '
                     f'(empty or whitespace-only {what})')
  return docs


def _jsonl_documents(path: pathlib.Path,
                     fields: tuple[str, ...]) -> list[tuple[str, ...]]:
  """Parses JSONL lines into tuples of the named string fields."""
  text = _decode_utf8(path, _read_bytes(path))
  docs = []
  # Not str.splitlines: JSON strings may hold raw U+2028 and similar.
  for line_number, line in enumerate(re.split(r'\r?\n', text), start=1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}:{line_number}: invalid JSON: {e}') from None
    if not isinstance(obj, dict):
      raise ValueError(f'{path}:{line_number}: expected a JSON object, '
                       f'got {type(obj).__name__}')
    values = []
    for field in fields:
      if field not in obj:
        raise ValueError(f'{path}:{line_number}: missing field {field!r}')
      value = obj[field]
      if not isinstance(value, str):
        shown = json.dumps(value)
        shown = shown if len(shown) <= 60 else shown[:57] + '...'
        raise ValueError(f'{path}:{line_number}: field {field!r} must be a '
                         f'string, got {type(value).__name__}: {shown}')
      values.append(value)
    docs.append(tuple(values))
  if not docs:
    raise ValueError(f'file: no documents in {str(path)!r} (no JSON lines)')
  return docs


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
  """Turns TFDS's tqdm progress bars off, restoring their state afterwards."""
  tqdm_utils = tfds.core.utils.tqdm_utils
  was_active = getattr(tqdm_utils, '_active', True)
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(was_active)


def _build(spec: FileSpec, files: list[pathlib.Path], seed: int,
           data_dir: str, final_dir: str) -> None:
  """Builds the dataset in a temporary folder, then renames it to final_dir."""
  docs = _documents(spec, files)  # Bad input fails before any folder is made.
  train, heldout = split_indices(len(docs), spec.heldout_fraction, seed)
  if len(docs) == 1:
    logging.warning('%s has a single document: heldout repeats train.',
                    spec.path)
  splits = {'train': [docs[i] for i in train],
            'heldout': [docs[i] for i in heldout]}
  os.makedirs(data_dir, exist_ok=True)
  tmp_dir = tempfile.mkdtemp(
      dir=data_dir, prefix=f'.tmp-{os.path.basename(final_dir)}-')
  try:
    builder = _FileBuilder(splits=splits, num_fields=len(docs[0]),
                           data_dir=tmp_dir, file_format='array_record')
    config = tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP)
    with _quiet_progress_bars():
      builder.download_and_prepare(
          download_dir=os.path.join(tmp_dir, 'downloads'),
          download_config=config)
    shutil.rmtree(os.path.join(tmp_dir, 'downloads'), ignore_errors=True)
    try:
      os.rename(tmp_dir, final_dir)
    except OSError:
      if not os.path.isdir(final_dir):  # Else a concurrent build won the race.
        raise
  finally:
    shutil.rmtree(tmp_dir, ignore_errors=True)
  logging.info('Built %s (%d train, %d heldout) in %s', spec.path,
               len(train), len(heldout), final_dir)
