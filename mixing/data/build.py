"""Streaming builds of file domains into ArrayRecord shards of packed rows, and reading them back.

`open_built(spec, ...)` returns the domain's packed train / held-out rows (`ShardRows`, random access
by index, for grain) and its held-out documents (`StoredDocs`, for evaluation items), building it on
first use under `<data_dir>/<name>-<fingerprint>`:
  * the fingerprint is cheap: every matched file's path, size and modification time, the reading
    options, the tokenizer's fingerprint and the packing config (seq_len, loss_on_prompt, split);
    an unchanged source is never re-read;
  * each unit of work (`formats.plan`) is read, tokenized and packed by a worker process into its own
    shards (`train-00007.ar`, `heldout-00007.ar`, `heldout_docs-00007.ar`), then marked done;
    memory is bounded by a unit per worker, not by the corpus;
  * a document is held out when a seeded hash of its content falls below `heldout_fraction`:
    independent of files, reading order and worker count (copies of a text share a split);
  * its folder is trusted only once `index.json`, written last (no folder rename, which object
    stores lack), exists; a killed build re-run keeps the finished units (their shards are
    byte-identical to a fresh build's); a build failing on bad input removes the folder.
Rows and documents are read back by shards.py (a row record: the row's seq_len + 1 token ids in the
tokenizer's dtype, little-endian, then its loss mask as packed bits). Remote (`gs://`) data dirs are written through `etils.epath` and read from a
local copy of each shard.
"""

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import tempfile
import time
from typing import Callable

from absl import logging
from etils import epath
import numpy as np

from mixing.data import formats
from mixing.data import packing
from mixing.data import records
from mixing.data import shards
from mixing.data import tokenizer as tokenizer_lib

_VERSION = 3  # bump to invalidate every cached build
# Chunks of 8 uncompressed records: writes cost a quarter of one-record chunks' and a random read
# decodes at most 8 rows (measured here: 1.7 vs 6.5 us per write, reads about the same).
_OPTIONS = 'group_size:8,uncompressed'


@dataclasses.dataclass(frozen=True)
class BuildSpec:
  """What a built domain depends on, besides its files."""
  globs: tuple[str, ...]
  reading: formats.Reading = formats.Reading()
  heldout_fraction: float = 0.05
  seq_len: int = 128
  loss_on_prompt: bool = True
  seed: int = 0


def _writer(path: str):
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  return array_record_module.ArrayRecordWriter(path, _OPTIONS)


def content_hash(prompt: str, completion: str, ids, seed: int) -> float:
  """A document's seeded hash in [0, 1), of its content: held out when below heldout_fraction, so
  the split depends on neither files, order nor workers, and copies of a text share a split."""
  digest = hashlib.blake2b(f'{seed}\0{prompt}\0'.encode(), digest_size=8)
  digest.update(completion.encode() if ids is None else np.asarray(ids, '<i4').tobytes())
  return int.from_bytes(digest.digest(), 'little') / 2.0**64


def fingerprint(spec: BuildSpec, files, tok: tokenizer_lib.Tokenizer) -> str:
  """Hashes the spec, the tokenizer and each file's path, size and mtime (never its bytes)."""
  entries = []
  for path, name, fmt in files:
    members = sorted(formats.glob_files(path, '**/*'), key=str) if fmt == 'tfds' else [path]
    for member in members:
      if records.is_local(member):
        stat = os.stat(member)
        entries.append([str(member), name, fmt, stat.st_size, stat.st_mtime_ns])
      else:
        stat = member.stat()
        entries.append([str(member), name, fmt, stat.length, stat.mtime])
  key = {'version': _VERSION,
         'units': [formats.UNIT_BYTES, formats.UNIT_RECORDS, formats.BLOCK_BYTES],
         'spec': dataclasses.asdict(spec), 'tokenizer': tok.fingerprint, 'files': entries}
  return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _check_ids(ids, tok, where):
  if ids is not None and ids.size and (ids.min() < 0 or ids.max() >= tok.vocab_size):
    bad = int(ids.min() if ids.min() < 0 else ids.max())
    raise ValueError(f'{where}: token id {bad} outside the tokenizer vocabulary [0, {tok.vocab_size})')


class _RowWriter:
  """Packs a stream of documents into rows as they come (packing.rows_of's rows, exactly), writing
  full rows whenever FLUSH_TOKENS are pending: memory holds at most that many tokens per split."""
  FLUSH_TOKENS = 1 << 22

  def __init__(self, path: str, seq_len: int, tok):
    self._writer, self._seq_len, self._tok = _writer(path), seq_len, tok
    self._pieces, self._masks, self._pending = [], [], 0
    self.rows = self.tokens = 0

  def add(self, piece: np.ndarray, mask: np.ndarray) -> None:
    self._pieces.append(piece)
    self._masks.append(mask)
    self._pending += len(piece)
    if self._pending >= self.FLUSH_TOKENS:
      self._flush(final=False)

  def _flush(self, final: bool) -> None:
    if not self._pieces:
      return
    stream, mask = np.concatenate(self._pieces), np.concatenate(self._masks)
    keep = len(stream) if final else len(stream) // (self._seq_len + 1) * (self._seq_len + 1)
    self._pieces, self._masks = [stream[keep:]], [mask[keep:]]
    self._pending = len(stream) - keep
    if not keep:
      return
    rows = packing.rows_of(stream[:keep], mask[:keep], self._seq_len, self._tok)
    self.tokens += rows.num_tokens
    for record in shards.encode_rows(rows.tokens_NxL1, rows.mask_NxL1):
      self._writer.write(record.tobytes())
    self.rows += len(rows)

  def close(self) -> None:
    self._flush(final=True)
    self._writer.close()


def build_unit(job) -> dict:
  """Reads, tokenizes and packs one unit into its shards under `out`; returns its counts."""
  unit, spec, tok_spec, index, out, force = job
  tok = tokenizer_lib.load(tok_spec)
  extreme = {}  # the keys of lowest and highest hash: a fallback when a split ends up empty
  docs = {'train': 0, 'heldout': 0}
  stage = tempfile.mkdtemp(prefix='mixlab-unit-') if not records.is_local(out) else out
  split = {name: _RowWriter(os.path.join(stage, f'{name}-{index:05d}.ar'), spec.seq_len, tok)
           for name in docs}
  doc_writer = _writer(os.path.join(stage, f'heldout_docs-{index:05d}.ar'))
  for key, prompt, completion, ids in formats.documents(unit, spec.reading):
    value = content_hash(prompt, completion, ids, spec.seed)
    if not extreme or value < extreme['low'][0]:
      extreme['low'] = (value, key)
    if value >= extreme.get('high', (-1,))[0]:
      extreme['high'] = (value, key)
    names = force.get(key) or ['heldout' if value < spec.heldout_fraction else 'train']
    _check_ids(ids, tok, f'{unit.path}: {key}')
    piece, mask = packing.encode_doc(tok, prompt, completion, spec.loss_on_prompt, ids)
    for name in names:
      split[name].add(piece, mask)
      docs[name] += 1
    if 'heldout' in names:
      text = completion if ids is None else tok.decode(ids, stop_at_eos=False)
      doc_writer.write(json.dumps([prompt, text]).encode())
  doc_writer.close()
  result = {'docs': docs, **extreme}
  for name, rows in split.items():
    rows.close()
    result[name], result[f'{name}_tokens'] = rows.rows, rows.tokens
  if stage != out:  # remote: upload the finished shards
    for file in sorted(os.listdir(stage)):
      epath.Path(stage, file).copy(epath.Path(out) / file, overwrite=True)
    shutil.rmtree(stage, ignore_errors=True)
  marker = epath.Path(out) / f'unit-{index:05d}.json'
  (epath.Path(out) / f'.unit-{index:05d}.tmp').write_text(json.dumps(result))
  (epath.Path(out) / f'.unit-{index:05d}.tmp').replace(marker)
  return result


@dataclasses.dataclass
class Built:
  """A built file domain: packed rows, held-out documents and its counts."""
  train: shards.ShardRows
  heldout: shards.ShardRows
  heldout_docs: shards.StoredDocs
  train_docs: int
  path: str


def _safe(name: str) -> str:
  return ''.join(c if c.isalnum() or c in '._-' else '_' for c in name)[:40]


def _pool(workers: int):
  return concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context('spawn'))


def _run_units(jobs, workers: int, progress: Callable[[int, int], None]):
  if workers <= 1 or len(jobs) <= 1:
    for n, job in enumerate(jobs, 1):
      build_unit(job)
      progress(n, len(jobs))
    return
  with _pool(min(workers, len(jobs))) as pool:
    futures = [pool.submit(build_unit, job) for job in jobs]
    try:
      for n, future in enumerate(concurrent.futures.as_completed(futures), 1):
        try:
          future.result()
        except ValueError as e:  # bad input in a worker: the same message, raised here
          raise ValueError(str(e)) from None
        progress(n, len(jobs))
    except BaseException:
      for future in futures:
        future.cancel()
      raise


@contextlib.contextmanager
def _build_lock(folder: epath.Path):
  """An exclusive flock on folder/.lock (local folders; a remote one is left unlocked)."""
  if not records.is_local(folder):
    yield
    return
  folder.mkdir(parents=True, exist_ok=True)
  fd = os.open(os.path.join(folder, '.lock'), os.O_CREAT | os.O_RDWR, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield
  finally:
    os.close(fd)


def open_built(name: str, spec: BuildSpec, tok: tokenizer_lib.Tokenizer, data_dir: str,
               workers: int = 0, files=None) -> Built:
  """The built domain, building (or finishing) it first if needed; see the module docstring.

  workers: worker processes (0: one per CPU core; 1: in this process).
  files: `formats.expand(spec.globs, spec.reading)`, when the caller has it already.
  """
  files = formats.expand(spec.globs, spec.reading) if files is None else files
  key = fingerprint(spec, files, tok)
  root = epath.Path(data_dir)
  final = root / f'{_safe(name)}-{key[:16]}'
  if not (final / 'index.json').exists():
    with _build_lock(final):  # a second process building the same domain waits, then reads it
      if not (final / 'index.json').exists():
        _build(name, spec, tok, files, root, final, workers or os.cpu_count() or 1)
  index = json.loads((final / 'index.json').read_text())
  shard = lambda kind: [str(final / f'{kind}-{u:05d}.ar') for u in range(index['units'])]
  counts = index['counts']
  row_len = spec.seq_len + 1
  return Built(shards.ShardRows(shard('train'), counts['train'], row_len, index['dtype'],
                                index['train_tokens']),
               shards.ShardRows(shard('heldout'), counts['heldout'], row_len, index['dtype'],
                                index['heldout_tokens']),
               shards.StoredDocs(shard('heldout_docs'), counts['heldout_docs']),
               index['train_docs'], str(final))


def _build(name, spec, tok, files, root, final, workers):
  units = formats.plan(files, spec.reading)
  folder = final  # trusted only once index.json, written last, exists
  folder.mkdir(parents=True, exist_ok=True)
  todo = [u for u in range(len(units)) if not (folder / f'unit-{u:05d}.json').exists()]
  tok_spec = getattr(tok, 'path', 'bytes')
  start = time.time()
  logging.info('building %s: %d units (%d done before) into %s', name, len(units),
               len(units) - len(todo), folder)
  progress = lambda n, total: logging.info('%s: %d/%d units (%.0f s)', name, n, total,
                                           time.time() - start)
  try:
    _run_units([(units[u], spec, tok_spec, u, str(folder), {}) for u in todo], workers, progress)
    results = [json.loads((folder / f'unit-{u:05d}.json').read_text()) for u in range(len(units))]
    docs = lambda k: sum(r['docs'][k] for r in results)
    if docs('train') + docs('heldout') and not (docs('train') and docs('heldout')):
      # Too few documents for the hash to fill both splits: the lowest-hash document is held out
      # (a single document goes to both splits), or the highest-hash one trains.
      end = 'low' if not docs('heldout') else 'high'
      pick = (min if end == 'low' else max)(range(len(units)), key=lambda u: results[u][end])
      count = docs('train') + docs('heldout')
      split = ['train', 'heldout'] if count == 1 else ['heldout'] if end == 'low' else ['train']
      logging.warning('%s: %d documents, %s: %r goes to %s', name, count,
                      'none held out' if end == 'low' else 'all held out', results[pick][end][1],
                      ' and '.join(split))
      results[pick] = build_unit((units[pick], spec, tok_spec, pick, str(folder),
                                  {results[pick][end][1]: split}))
  except ValueError:
    folder.rmtree(missing_ok=True)  # bad input: nothing of this build is kept
    raise
  total = lambda k: sum(r[k] for r in results)  # rows and tokens
  if not total('train'):
    folder.rmtree(missing_ok=True)
    raise ValueError(f'path: no documents in {", ".join(spec.globs)} (empty or whitespace-only)')
  index = {'units': len(units), 'dtype': np.dtype(tok.token_dtype).name,
           'counts': {'train': [r['train'] for r in results],
                      'heldout': [r['heldout'] for r in results],
                      'heldout_docs': [r['docs']['heldout'] for r in results]},
           'train_tokens': total('train_tokens'), 'heldout_tokens': total('heldout_tokens'),
           'train_docs': sum(r['docs']['train'] for r in results), 'seq_len': spec.seq_len,
           'tokenizer': tok.fingerprint, 'globs': list(spec.globs)}
  (folder / '.index.json.tmp').write_text(json.dumps(index))
  (folder / '.index.json.tmp').replace(folder / 'index.json')
  logging.info('built %s: %d train rows, %d held-out rows in %.1f s', name, total('train'),
               total('heldout'), time.time() - start)
