"""Streaming builds of file domains (mixing/data/build.py): shards, cache, resume, remote paths."""

import json
import os
import subprocess
import sys

from etils import epath
import numpy as np
import pytest

from mixing.data import bpe
from mixing.data import build
from mixing.data import formats
from mixing.data import load as load_lib
from mixing.data import sampler as sampler_lib
from mixing.data import tokenizer
from experiments.training import evaluate

DOCS = [f'doc {i} ' + 'word ' * (i % 23) + '✓' for i in range(300)]


def _corpus(folder, docs=DOCS, files=3):
  os.makedirs(folder, exist_ok=True)
  for f in range(files):
    with open(os.path.join(folder, f'part-{f}.jsonl'), 'w') as out:
      out.writelines(json.dumps({'text': d}) + '\n' for d in docs[f::files])
  return os.path.join(folder, '*.jsonl')


def _open(glob, data_dir, workers=1, **kw):
  return build.open_built('web', build.BuildSpec((glob,), seq_len=32, **kw), tokenizer.BYTES,
                          str(data_dir), workers)


def _shards(path):
  return {n: (epath.Path(path) / n).read_bytes() for n in sorted(os.listdir(path))
          if n.endswith('.ar')}


def test_rows_hold_every_document_once_split_by_hash(tmp_path, monkeypatch):
  monkeypatch.setattr(formats, 'UNIT_BYTES', 1000)  # several units per file
  built = _open(_corpus(tmp_path / 'c'), tmp_path / 'd', heldout_fraction=0.2)
  heldout = [d.completion for d in built.heldout_docs]
  assert built.train_docs + len(heldout) == len(DOCS) and 30 < len(heldout) < 90
  stream = lambda rows: tokenizer.BYTES.decode(
      np.concatenate([rows[i][0] for i in range(len(rows))]), stop_at_eos=False)
  train_text = stream(built.train)
  assert all((d in train_text) != (d in heldout) for d in DOCS if DOCS.count(d) == 1)
  tokens, mask = built.train[0]
  assert tokens.shape == mask.shape == (33,) and tokens[0] == tokenizer.BOS and mask[0] == 0
  assert built.train.num_tokens == sum(int(built.train[i][1].sum()) for i in range(len(built.train)))
  # The split depends on the documents, not on how they are cut into units or files.
  again = _open(_corpus(tmp_path / 'one', files=1), tmp_path / 'd2', heldout_fraction=0.2)
  assert sorted(d.completion for d in again.heldout_docs) == sorted(heldout)


def test_workers_and_flushes_give_byte_identical_shards(tmp_path, monkeypatch):
  monkeypatch.setattr(formats, 'UNIT_BYTES', 2000)
  glob = _corpus(tmp_path / 'c')
  one, two = _open(glob, tmp_path / 'a', workers=1), _open(glob, tmp_path / 'b', workers=2)
  assert _shards(one.path) == _shards(two.path) and len(_shards(one.path)) > 6
  monkeypatch.setattr(build._RowWriter, 'FLUSH_TOKENS', 50)  # pylint: disable=protected-access
  assert _shards(_open(glob, tmp_path / 'c', workers=1).path) == _shards(one.path)


_KILLED = '''
import os, signal, sys
from mixing.data import build, formats, tokenizer
formats.UNIT_BYTES = 1000
original = build.build_unit
def dies_after_three(job):
  result = original(job)
  if job[3] == 2:
    os.kill(os.getpid(), signal.SIGKILL)
  return result
build.build_unit = dies_after_three
build.open_built('web', build.BuildSpec((sys.argv[1],), seq_len=32), tokenizer.BYTES, sys.argv[2], 1)
'''


def test_killed_build_resumes_from_finished_units_byte_identical(tmp_path, monkeypatch):
  glob = _corpus(tmp_path / 'c')
  done = subprocess.run([sys.executable, '-c', _KILLED, glob, str(tmp_path / 'd')], check=False,
                        cwd=os.path.dirname(os.path.dirname(__file__)))
  assert done.returncode == -9
  (partial,) = os.listdir(tmp_path / 'd')
  assert not os.path.exists(tmp_path / 'd' / partial / 'index.json')  # not trusted
  markers = sorted(n for n in os.listdir(tmp_path / 'd' / partial) if n.startswith('unit-'))
  assert markers == ['unit-00000.json', 'unit-00001.json', 'unit-00002.json']
  kept = {n: os.stat(tmp_path / 'd' / partial / n).st_mtime_ns for n in markers}
  monkeypatch.setattr(formats, 'UNIT_BYTES', 1000)
  resumed = _open(glob, tmp_path / 'd')
  assert {n: os.stat(os.path.join(resumed.path, n)).st_mtime_ns for n in markers} == kept
  assert os.listdir(tmp_path / 'd') == [partial]
  fresh = _open(glob, tmp_path / 'fresh')
  assert _shards(resumed.path) == _shards(fresh.path)


_BUILDS = '''
import sys
from mixing.data import build, formats, tokenizer
formats.UNIT_BYTES = 1000
print(build.open_built('web', build.BuildSpec((sys.argv[1],), seq_len=32), tokenizer.BYTES,
                       sys.argv[2], 1).path)
'''


def test_two_processes_building_one_domain_agree(tmp_path, monkeypatch):
  glob = _corpus(tmp_path / 'c')
  cwd = os.path.dirname(os.path.dirname(__file__))
  procs = [subprocess.Popen([sys.executable, '-c', _BUILDS, glob, str(tmp_path / 'd')], cwd=cwd,
                            stdout=subprocess.PIPE, text=True) for _ in range(2)]
  paths = {p.communicate()[0].strip() for p in procs}
  assert [p.returncode for p in procs] == [0, 0] and len(paths) == 1
  monkeypatch.setattr(formats, 'UNIT_BYTES', 1000)
  assert _shards(paths.pop()) == _shards(_open(glob, tmp_path / 'fresh').path)


def test_cache_is_checked_without_reading_and_rebuilt_on_change(tmp_path, monkeypatch):
  glob = _corpus(tmp_path / 'c')
  first = _open(glob, tmp_path / 'd')
  def must_not_read(*args):
    raise AssertionError('re-read an unchanged source')
  with monkeypatch.context() as m:
    m.setattr(formats, 'documents', must_not_read)
    assert _open(glob, tmp_path / 'd').path == first.path
  with open(tmp_path / 'c' / 'part-1.jsonl', 'a') as f:
    f.write(json.dumps({'text': 'a new document'}) + '\n')
  changed = _open(glob, tmp_path / 'd')
  assert changed.path != first.path
  assert changed.train_docs + len(changed.heldout_docs) == len(DOCS) + 1


def test_failed_build_caches_nothing(tmp_path):
  folder = tmp_path / 'c'
  _corpus(folder)
  with open(folder / 'part-2.jsonl', 'a') as f:
    f.write('{"text": "fine"}\n{"text": broken\n')
  with pytest.raises(ValueError, match=r'part-2\.jsonl:\d+: invalid JSON'):
    _open(str(folder / '*.jsonl'), tmp_path / 'd')
  assert os.listdir(tmp_path / 'd') == []


def test_tiny_sources_still_have_both_splits(tmp_path):
  (tmp_path / 'one.txt').write_text('a single short document\n')
  single = _open(str(tmp_path / 'one.txt'), tmp_path / 'd')
  assert single.train_docs == len(single.heldout_docs) == 1
  (tmp_path / 'two.jsonl').write_text('{"text": "first"}\n{"text": "second"}\n')
  two = _open(str(tmp_path / 'two.jsonl'), tmp_path / 'd')
  assert two.train_docs == len(two.heldout_docs) == 1


def test_a_tfds_dataset_builds_and_reopens_unread(tmp_path, monkeypatch):
  from tests import test_files  # pylint: disable=import-outside-toplevel
  folder = test_files._tfds_dir(tmp_path)  # pylint: disable=protected-access
  built = _open(folder, tmp_path / 'd')
  assert built.train_docs + len(built.heldout_docs) == len(test_files.DOCS)
  monkeypatch.setattr(formats, 'documents', None)  # re-opening reads nothing
  assert _open(folder, tmp_path / 'd').path == built.path


def test_remote_data_dir_and_sources_through_epath(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # epath's mock maps gs://b/... to ./gs:/b/...
  monkeypatch.setattr('tempfile.tempdir', str(tmp_path / 'local'))
  os.makedirs(tmp_path / 'local')
  with epath.testing.mock_epath():
    src = epath.Path('gs://bucket/corpus')
    src.mkdir(parents=True)
    (src / 'a.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in DOCS))
    remote = _open('gs://bucket/corpus/*.jsonl', 'gs://bucket/cache')
    assert remote.path.startswith('gs://bucket/cache/web-')
    local = _open(str(tmp_path / 'gs:' / 'bucket' / 'corpus' / '*.jsonl'), tmp_path / 'plain')
    assert [remote.train[i][0].tolist() for i in range(5)] == [
        local.train[i][0].tolist() for i in range(5)]
    assert len(remote.heldout_docs) == len(local.heldout_docs)
    bpe.train(DOCS, 300, str(tmp_path / 'tok'))  # a tokenizer on the bucket, too
    epath.Path('gs://bucket/tok').mkdir()
    for name in ('tokenizer.json', 'tokenizer_config.json'):
      epath.Path(tmp_path / 'tok' / name).copy(f'gs://bucket/tok/{name}')
    tok = tokenizer.load('gs://bucket/tok')
    assert tok.kind == 'hf' and tok.fingerprint == tokenizer.load(str(tmp_path / 'tok')).fingerprint


def test_built_rows_feed_the_sampler_and_evaluation(tmp_path):
  (tmp_path / 'qa.jsonl').write_text(''.join(
      json.dumps({'q': f'{i} + {i}?', 'a': f'#### {2 * i}'}) + '\n' for i in range(200)))
  spec = load_lib.FileDomainSpec(str(tmp_path / 'qa.jsonl'), fields='q,a', heldout_fraction=0.2)
  text = load_lib.FileDomainSpec(_corpus(tmp_path / 'c'))
  packed = load_lib.load_domains(['qa', 'web', 'math/easy'], 32, files={'qa': spec, 'web': text},
                                 data_dir=str(tmp_path / 'd'), workers=1, train_docs={'web': 30})
  qa, web, _ = packed
  assert qa.domain.items and qa.domain.items[0].prompt.startswith('Question: ')
  assert qa.domain.answer_regex and qa.domain.is_correct('... #### 4', qa.domain.items[0].target) \
      == (qa.domain.items[0].target == '#### 4')
  assert len(web.train) < len(load_lib.load_domains(
      ['web'], 32, files={'web': text}, data_dir=str(tmp_path / 'd'), workers=1)[0].train) / 5
  sampler = sampler_lib.MixtureSampler([p.train for p in packed], ['qa', 'web', 'm'], [1, 1, 1], 8)
  batch = sampler.next_batch()
  assert batch['inputs_BxL'].shape == (8, 32) and set(batch['domain_B'].tolist()) <= {0, 1, 2}
  batches = evaluate.heldout_batches(packed, 1, 4)
  assert sum(int(b['mask_BxL'].sum() > 0) for b in batches) == 3
  with pytest.raises(ValueError, match="domain 'web': a file domain keeps its training documents"):
    web.domain.train[0]  # pylint: disable=pointless-statement


def test_inspect_builds_and_reopens_a_domain(tmp_path):
  glob = _corpus(tmp_path / 'c')
  command = [sys.executable, '-m', 'mixing.data.inspect', f'--domain=web={glob}',
             f'--data_dir={tmp_path / "d"}', '--examples=1', '--workers=1']
  cwd = os.path.dirname(os.path.dirname(__file__))
  out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=cwd).stdout
  assert 'web ' in out and '=== web ===' in out and 'MB of shards)' in out
  row = next(l for l in out.splitlines() if l.startswith('web '))
  assert int(row.split()[1].replace(',', '')) + int(row.split()[2].replace(',', '')) == len(DOCS)
  bad = subprocess.run(command[:3] + ['--domain=web2=/no/such/*.jsonl'], capture_output=True,
                       text=True, check=False, cwd=cwd)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
      "error: domain_files.web2.path: no files match '/no/such/*.jsonl'"]
  with open(tmp_path / 'c' / 'part-1.jsonl', 'a') as f:
    f.write('{"text": "ok"}\n{"txt": "typo"}\n')
  lines = open(tmp_path / 'c' / 'part-1.jsonl').read().count('\n')
  bad = subprocess.run(command[:4] + ['--workers=2', f'--data_dir={tmp_path / "d2"}'],
                       capture_output=True, text=True, check=False, cwd=cwd)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
      f"error: {tmp_path / 'c' / 'part-1.jsonl'}:{lines}: missing field 'text' (has txt)"]
  assert os.listdir(tmp_path / 'd2') == []  # nothing cached from the failed build


def test_the_byte_build_floor_times_every_step_and_bounds_the_build(tmp_path):
  from experiments.recipes import bench_build  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  path = str(tmp_path / 'c.txt')
  bench_build._text_file(path, rng, bench_build._words(rng, 500), 2)  # pylint: disable=protected-access
  floor = bench_build.byte_build_floor(path, str(tmp_path), seq_len=128)
  assert len(floor) == 8 and all(np.isfinite(v) and v > 0 for v in floor.values())
  assert not os.path.exists(tmp_path / 'floor.ar')
  lines = bench_build._floor_lines(floor, 2, 800.0)  # pylint: disable=protected-access
  steps = sum(v for k, v in floor.items() if not k.endswith('(s)') and 'blake2b' not in k)
  assert f'sum with crc32   : {1e3 / steps:.0f} MB/s per process' in '\n'.join(lines)
