"""Build benchmark: streaming file-domain builds (throughput, peak memory), cached re-open, 1,000 domains.

  python -m experiments.bench --only=build

Generates 200 MB and 1 GB corpora of random-word text (a folder of .txt files, and the same lines as
{"text"} JSONL compressed with zstd) under the temporary folder, then builds each with the byte
tokenizer and with a BPE (8,192, trained here on 8 MB of it) in a fresh process using every core, and
measures the process tree's peak RSS (its summed VmRSS, polled every 50 ms). The tokenizer's own speed
is a single-process pass over 32 MB of the same documents; a build's target is half of that times the
worker count. The floor of a byte build (`byte_build_floor`): each step any byte build must take,
in its cheapest form, timed alone in one process, whose sum bounds any byte build in this row
format. About 8 minutes on 2 cores; the corpora (about 2.7 GB) are deleted afterwards.
"""

import glob as glob_lib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

from mixing.data import bpe
from mixing.data import build
from mixing.data import formats
from mixing.data import sampler as sampler_lib
from mixing.data import tokenizer

FILE_MB = 64  # corpus files of this many MB
SEQ_LEN = 1024
_BUILD = '''
import sys, time
from mixing.data import build, tokenizer
start = time.perf_counter()
built = build.open_built('bench', build.BuildSpec((sys.argv[1],), seq_len=int(sys.argv[4])),
                         tokenizer.load(sys.argv[2]), sys.argv[3], 0)
print(time.perf_counter() - start, len(built.train) + len(built.heldout))
'''


def _words(rng, count: int) -> list[bytes]:
  letters = np.frombuffer(b'abcdefghijklmnopqrstuvwxyz', np.uint8)
  return [bytes(rng.choice(letters, rng.integers(2, 10))) for _ in range(count)]


def _text_file(path: str, rng, words, megabytes: int) -> None:
  """Lines of 4-20 Zipf-chosen words in paragraphs of 5-60 lines (about 0.3-4 KB); `megabytes`."""
  weights = 1.0 / np.arange(1, len(words) + 1)
  weights /= weights.sum()
  with open(path, 'wb') as f:
    written = 0
    while written < megabytes << 20:
      ids = rng.choice(len(words), 400_000, p=weights)
      cuts = np.cumsum(rng.integers(4, 21, 40_000))
      lines = [b' '.join(words[i] for i in ids[a:b]) for a, b in zip(cuts[:-1], cuts[1:])
               if b <= len(ids)]
      sizes = np.cumsum(rng.integers(5, 60, len(lines) // 5))  # paragraphs: the JSONL documents
      paragraphs = [b'\n'.join(lines[a:b]) for a, b in zip(sizes[:-1], sizes[1:]) if b <= len(lines)]
      block = b'\n\n'.join(paragraphs) + b'\n\n'
      f.write(block)
      written += len(block)


def make_corpora(root: str, sizes_mb) -> dict:
  """{(kind, mb): glob} for kind 'text' and 'jsonl.zst'."""
  import zstandard  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  words = _words(rng, 20_000)
  out = {}
  for mb in sizes_mb:
    text_dir, json_dir = os.path.join(root, f'text{mb}'), os.path.join(root, f'jsonl{mb}')
    os.makedirs(text_dir, exist_ok=True)
    os.makedirs(json_dir, exist_ok=True)
    for i in range(max(1, mb // FILE_MB)):
      path = os.path.join(text_dir, f'part-{i:04d}.txt')
      _text_file(path, rng, words, min(FILE_MB, mb))
      with open(path, 'rb') as f, open(os.path.join(json_dir, f'part-{i:04d}.jsonl.zst'), 'wb') as z:
        with zstandard.ZstdCompressor(level=3).stream_writer(z) as writer:
          for paragraph in f.read().split(b'\n\n'):
            if paragraph.strip():
              writer.write(json.dumps({'text': paragraph.decode()}).encode() + b'\n')
    out[('text', mb)] = os.path.join(text_dir, '*.txt')
    out[('jsonl.zst', mb)] = os.path.join(json_dir, '*.jsonl.zst')
  return out


def _tree_rss(pid: int) -> int:
  """Summed VmRSS (bytes) of pid and its descendants, from /proc."""
  total, todo = 0, [pid]
  while todo:
    p = todo.pop()
    try:
      with open(f'/proc/{p}/status') as f:
        total += next((int(l.split()[1]) for l in f if l.startswith('VmRSS:')), 0) << 10
      for task in os.listdir(f'/proc/{p}/task'):
        with open(f'/proc/{p}/task/{task}/children') as f:
          todo += [int(c) for c in f.read().split()]
    except (OSError, ValueError):
      continue
  return total


def timed_build(glob: str, tok_spec: str, data_dir: str) -> dict:
  """Builds in a fresh process; wall time, rows and the tree's peak RSS."""
  command = [sys.executable, '-c', _BUILD, glob, tok_spec, data_dir, str(SEQ_LEN)]
  start = time.perf_counter()
  proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
  peak = 0
  while proc.poll() is None:
    peak = max(peak, _tree_rss(proc.pid))
    time.sleep(0.05)
  out = proc.stdout.read().split()
  if proc.returncode:
    raise RuntimeError(f'build of {glob} failed ({proc.returncode})')
  return {'wall_s': time.perf_counter() - start, 'build_s': float(out[0]), 'rows': int(out[1]),
          'peak_rss_gb': peak / 2**30}


def tokenizer_mb_per_s(glob: str, tok, megabytes: int = 32) -> float:
  """One process tokenizing the documents of the first `megabytes` of `glob`, MB/s."""
  reading = formats.Reading()
  units = formats.plan(formats.expand([glob], reading), reading)
  texts, size = [], 0
  for unit in units:
    for _, prompt, completion, _ in formats.documents(unit, reading):
      texts.append(prompt + completion)
      size += len(texts[-1].encode())
      if size > megabytes << 20:
        break
    if size > megabytes << 20:
      break
  start = time.perf_counter()
  for text in texts:
    tok.encode(text, bos=True, eos=True)
  return size / 2**20 / (time.perf_counter() - start)


def _best_ms_per_mb(fn, megabytes: float) -> float:
  best = float('inf')
  for _ in range(3):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best * 1e3 / megabytes


def byte_build_floor(path: str, out_dir: str, seq_len: int = SEQ_LEN) -> dict[str, float]:
  """What any byte build in mixlab's row format must do per MB of a text file, each step in its
  cheapest form (numpy over whole blocks, ids stored as 1 byte, not mixlab's 2), timed alone in one
  process (best of 3, ms per MB); plus the seconds to start 2 spawned build workers."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  with open(path, 'rb') as f:
    data = f.read()
  mb, row = len(data) / 2**20, seq_len + 1
  cuts, pos = [0], 0
  while pos < len(data):  # 4 KB documents ending at a line end, as text files are cut
    pos = max(data.rfind(b'\n', pos, pos + 4096) + 1, pos + 1) if len(data) - pos > 4096 else len(data)
    cuts.append(pos)
  docs = list(zip(cuts[:-1], cuts[1:]))
  view = memoryview(data)

  def pack():  # BOS + document + EOS, cut into rows, the mask's bits beside each row
    stream = np.empty(len(data) + 2 * len(docs), np.uint8)
    at = 0
    for a, b in docs:
      stream[at] = 0xFE
      stream[at + 1:at + 1 + b - a] = np.frombuffer(view[a:b], np.uint8)
      stream[at + 1 + b - a] = 0xFF
      at += b - a + 2
    rows = stream[:len(stream) // row * row].reshape(-1, row)
    return np.concatenate([rows, np.packbits(rows != 0xFE, axis=1)], axis=1)

  records = pack()
  def write():
    writer = array_record_module.ArrayRecordWriter(os.path.join(out_dir, 'floor.ar'),
                                                   'group_size:8,uncompressed')
    for record in records:
      writer.write(record.tobytes())
    writer.close()
  steps = {
      'read the file': lambda: open(path, 'rb').read(),  # pylint: disable=consider-using-with
      'check UTF-8': lambda: data.decode('utf-8'),
      'cut 4 KB documents': lambda: [data.rfind(b'\n', a, a + 4096) for a, _ in docs],
      'hash each document (blake2b, as mixlab)': lambda: [
          hashlib.blake2b(view[a:b], digest_size=8).digest() for a, b in docs],
      'hash each document (crc32, the cheapest)': lambda: [zlib.crc32(view[a:b]) for a, b in docs],
      'frame, cut into rows, mask bits (1-byte ids)': pack,
      'write the rows to ArrayRecord': write,
  }
  out = {name: _best_ms_per_mb(fn, mb) for name, fn in steps.items()}
  os.remove(os.path.join(out_dir, 'floor.ar'))
  start = time.perf_counter()
  with build._pool(2) as pool:  # pylint: disable=protected-access
    list(pool.map(build.content_hash, ['', ''], ['', ''], [None, None], [0, 1]))
  out['start 2 spawned workers (s)'] = time.perf_counter() - start
  return out


def reopen_s(glob: str, tok, data_dir: str) -> float:
  start = time.perf_counter()
  build.open_built('bench', build.BuildSpec((glob,), seq_len=SEQ_LEN), tok, data_dir)
  return time.perf_counter() - start


def thousand_domains(root: str) -> tuple[float, float]:
  """(first build, re-open + sampler + one batch) seconds for 1,000 one-file domains."""
  folder = os.path.join(root, 'many')
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(1)
  for i in range(1000):
    with open(os.path.join(folder, f'd{i:04d}.txt'), 'w') as f:
      f.write(''.join(f'domain {i} line {j} {rng.integers(1e9)}\n' for j in range(400)))
  def open_all():
    return [build.open_built(f'd{i}', build.BuildSpec((os.path.join(folder, f'd{i:04d}.txt'),),
                                                      seq_len=128), tokenizer.BYTES,
                             os.path.join(root, 'many_built'), 1) for i in range(1000)]
  start = time.perf_counter()
  open_all()
  first = time.perf_counter() - start
  start = time.perf_counter()
  built = open_all()
  sampler = sampler_lib.MixtureSampler([b.train for b in built], [f'd{i}' for i in range(1000)],
                                       np.ones(1000), 64)
  sampler.next_batch()
  return first, time.perf_counter() - start


def _floor_lines(floor: dict[str, float], workers: int, target: float) -> list[str]:
  lines = [f'\nFloor of a byte build, one process, a {FILE_MB} MB text file (ms per MB, best of 3):']
  lines += [f'  {name:<46} {ms:>6.2f}' for name, ms in floor.items() if not name.endswith('(s)')]
  for hashed in ('blake2b', 'crc32'):
    total = sum(ms for name, ms in floor.items() if not name.endswith('(s)') and
                ('hash' not in name or hashed in name))
    lines.append(f'  sum with {hashed:<8}: {1e3 / total:.0f} MB/s per process, x {workers} '
                 f'workers = {1e3 / total * workers:.0f} MB/s against the text target '
                 f'{target:.0f} MB/s')
  lines.append(f'  starting 2 spawned workers: {floor["start 2 spawned workers (s)"]:.2f} s')
  return lines


def report(sizes_mb=(200, 1024)) -> str:
  root = tempfile.mkdtemp(prefix='mixlab_bench_build-')
  workers = os.cpu_count() or 1
  try:
    corpora = make_corpora(root, sizes_mb)
    bpe_dir = os.path.join(root, 'bpe')
    sample = [c for _, _, c, _ in formats.documents(formats.plan(formats.expand(
        [corpora[('text', sizes_mb[0])]], formats.Reading()), formats.Reading())[0],
        formats.Reading())][:2000]
    bpe.train(sample, 8192, bpe_dir)
    lines = [f'Streaming builds, {workers} workers, seq_len {SEQ_LEN}, same run '
             f'(target: peak RSS < 1 GB, re-open < 1 s, MB/s >= tokenizer MB/s x workers / 2)',
             f"{'corpus':<16} {'tokenizer':<10} {'MB':>6} {'build s':>8} {'MB/s':>7} "
             f"{'tok MB/s':>9} {'target':>7} {'ratio':>6} {'peak RSS GB':>12} {'re-open s':>10}"]
    text_target = float('nan')
    for (kind, mb), glob in sorted(corpora.items(), key=lambda x: (x[0][1], x[0][0])):
      for name, spec in (('bytes', 'bytes'), ('bpe-8k', bpe_dir)):
        tok = tokenizer.load(spec)
        data_dir = os.path.join(root, 'built')
        speed = tokenizer_mb_per_s(glob, tok)
        result = timed_build(glob, spec, data_dir)
        files = formats.expand([glob], formats.Reading())
        text_mb = mb if kind == 'text' else sum(p.stat().length for p, _, _ in files) / 2**20
        rate = mb / result['build_s']
        target = speed * workers / 2
        if (kind, name) == ('text', 'bytes'):
          text_target = target  # of the largest corpus, for the floor below
        lines.append(f'{kind:<16} {name:<10} {text_mb:>6.0f} {result["build_s"]:>8.1f} {rate:>7.1f} '
                     f'{speed:>9.1f} {target:>7.1f} {rate / target:>6.2f} '
                     f'{result["peak_rss_gb"]:>12.2f} {reopen_s(glob, tok, data_dir):>10.3f}')
        shutil.rmtree(data_dir, ignore_errors=True)
    text_file = sorted(glob_lib.glob(corpora[('text', sizes_mb[-1])]))[0]
    lines += _floor_lines(byte_build_floor(text_file, root), workers, text_target)
    first, again = thousand_domains(root)
    lines.append(f'\n1,000 one-file domains: first build {first:.1f} s; re-open all, sampler and '
                 f'one batch {again:.2f} s')
    lines.append('MB/s counts the corpus as text (uncompressed); the JSONL.zst row shows its '
                 'compressed size.')
    return '\n'.join(lines)
  finally:
    shutil.rmtree(root, ignore_errors=True)
