"""Reading corpora (mixing/data/formats.py): every format and compression gives the same documents."""

import gzip
import json
import os

from array_record.python import array_record_module
from etils import epath
import numpy as np
import pytest

from mixing.data import formats
from mixing.data import load as load_lib

DOCS = [f'document {i}: naïve café ✓ 数学 {"x" * (i % 7)}' for i in range(40)]
PAIRS = [{'question': f'What is {i} + 1?', 'answer': f'#### {i + 1}'} for i in range(30)]


def _read(globs, **reading):
  reading = formats.Reading(**reading)
  files = formats.expand(globs, reading)
  return [(prompt, completion, None if ids is None else ids.tolist())
          for unit in formats.plan(files, reading)
          for _, prompt, completion, ids in formats.documents(unit, reading)]


def _zst(data: bytes) -> bytes:
  import zstandard  # pylint: disable=import-outside-toplevel
  return zstandard.ZstdCompressor().compress(data)


def _write_records(path, records):
  writer = array_record_module.ArrayRecordWriter(str(path), 'group_size:1')
  for r in records:
    writer.write(r)
  writer.close()


def _tfds_dir(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  class Corpus(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, disable_shuffling=True,
                                   features=tfds.features.FeaturesDict(
                                       {'text': tfds.features.Text()}))

    def _split_generators(self, dl_manager):
      return {'train': self._generate_examples(DOCS), 'test': self._generate_examples(['held back'])}

    def _generate_examples(self, texts):
      for i, text in enumerate(texts):
        yield i, {'text': text}

  folder = tmp_path / 'tfds'
  if not (folder / 'corpus').exists():
    builder = Corpus(data_dir=str(folder), file_format='array_record')
    tfds.display_progress_bar(False)
    builder.download_and_prepare(download_dir=str(tmp_path / 'dl'),
                                 download_config=tfds.download.DownloadConfig(
                                     compute_stats=tfds.download.ComputeStatsMode.SKIP))
  return str(folder / 'corpus' / '1.0.0')
  return builder.data_dir


def test_every_record_format_and_compression_reads_back_the_same_documents(tmp_path):
  jsonl = ''.join(json.dumps({'text': d, 'id': i}) + '\n' for i, d in enumerate(DOCS)).encode()
  (tmp_path / 'a.jsonl').write_bytes(jsonl)
  (tmp_path / 'a.jsonl.gz').write_bytes(gzip.compress(jsonl))
  (tmp_path / 'a.jsonl.zst').write_bytes(_zst(jsonl))
  (tmp_path / 'a.json').write_text(json.dumps([{'text': d} for d in DOCS]))
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  pq.write_table(pa.table({'text': DOCS, 'n': list(range(40))}), tmp_path / 'a.parquet',
                 row_group_size=16)  # three row groups: three units
  _write_records(tmp_path / 'a.array_record', [d.encode() for d in DOCS])
  expected = [('', d, None) for d in DOCS]
  for name in ('a.jsonl', 'a.jsonl.gz', 'a.jsonl.zst', 'a.json', 'a.parquet', 'a.array_record'):
    assert _read([str(tmp_path / name)]) == expected, name
  assert _read([_tfds_dir(tmp_path)]) == expected
  assert _read([_tfds_dir(tmp_path)], split='test') == [('', 'held back', None)]
  with pytest.raises(ValueError, match="split: .* has no split 'dev'"):
    _read([_tfds_dir(tmp_path)], split='dev')


def test_text_files_chunk_back_to_their_bytes_compressed_or_not(tmp_path):
  text = ''.join(f'line {i} ü✓ {"long " * (i % 50)}\n' for i in range(400)) + 'x' * 9000
  (tmp_path / 'a.txt').write_text(text)
  (tmp_path / 'b.txt.gz').write_bytes(gzip.compress(text.encode()))
  (tmp_path / 'c.md.zst').write_bytes(_zst(text.encode()))
  for name in ('a.txt', 'b.txt.gz', 'c.md.zst'):
    chunks = [c for _, c, _ in _read([str(tmp_path / name)], chunk_bytes=1000)]
    assert ''.join(chunks) == text, name
    assert all(len(c.encode()) <= 1000 for c in chunks)
    assert all(c.endswith('\n') or set(c) == {'x'} for c in chunks)  # at line ends but in long lines


def test_units_split_big_files_at_line_starts(tmp_path, monkeypatch):
  monkeypatch.setattr(formats, 'UNIT_BYTES', 100)
  lines = ''.join(json.dumps({'text': f'{i} ' * (i % 9)}) + '\n' for i in range(200))
  (tmp_path / 'big.jsonl').write_text(lines)
  (tmp_path / 'big.txt').write_text(lines)
  reading = formats.Reading()
  units = formats.plan(formats.expand([str(tmp_path / 'big.jsonl')], reading), reading)
  assert len(units) > 50
  assert [c for _, c, _ in _read([str(tmp_path / 'big.jsonl')])] == [
      json.loads(l)['text'] for l in lines.splitlines()]
  assert ''.join(c for _, c, _ in _read([str(tmp_path / 'big.txt')], chunk_bytes=64)) == lines


def test_recursive_globs_folders_and_hidden_files(tmp_path):
  (tmp_path / 'c' / 'sub' / 'deep').mkdir(parents=True)
  (tmp_path / 'c' / '.git').mkdir()
  for rel, text in {'a.txt': 'top\n', 'sub/extra.md': 'extra\n', 'sub/deep/z.txt': 'deep\n',
                    '.hidden.txt': 'hidden\n', '.git/config': 'git\n'}.items():
    (tmp_path / 'c' / rel).write_text(text)
  texts = lambda *globs: sorted(c for _, c, _ in _read([str(tmp_path / 'c' / g) for g in globs]))
  assert texts('') == ['deep\n', 'extra\n', 'top\n']  # a folder: every file under it
  assert texts('**/*.txt') == ['deep\n', 'top\n']
  assert texts('*.txt') == ['top\n']
  assert texts('sub/**/*') == ['deep\n', 'extra\n']
  assert texts('**/*.md', 'a.txt') == ['extra\n', 'top\n']
  with pytest.raises(ValueError, match=r"path: no files match '.*\*\*/\*\.rst'"):
    texts('**/*.rst')


def test_relative_globs_and_named_hidden_files(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'a.txt').write_text('a\n')
  (tmp_path / '.env').write_text('named\n')
  assert [c for _, c, _ in _read(['*.txt'])] == ['a\n']
  assert [c for _, c, _ in _read(['.env'])] == ['named\n']  # a file named outright is read


def test_prompt_answer_template_and_named_text_field(tmp_path):
  (tmp_path / 'qa.jsonl').write_text(''.join(json.dumps(p) + '\n' for p in PAIRS))
  docs = _read([str(tmp_path / 'qa.jsonl')], fields=('question', 'answer'),
               template='Q: {input}\nA:')
  assert docs[3] == ('Q: What is 3 + 1?\nA:', ' #### 4', None)
  assert [c for _, c, _ in _read([str(tmp_path / 'qa.jsonl')], fields=('answer',))][:2] == [
      '#### 1', '#### 2']


def test_tokenized_array_records_are_ids(tmp_path):
  ids = [np.arange(i, i + 5, dtype='<i4') for i in range(3)]
  _write_records(tmp_path / 'tok.array_record', [a.tobytes() for a in ids])
  got = _read([str(tmp_path / 'tok.array_record')], format='tokens')
  assert [g[2] for g in got] == [a.tolist() for a in ids]


def test_gs_paths_go_through_epath(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # epath's mock maps gs://b/... to ./gs:/b/...
  with epath.testing.mock_epath():
    root = epath.Path('gs://bucket/corpus')
    (root / 'sub').mkdir(parents=True)
    (root / 'sub' / 'a.jsonl').write_text(''.join(json.dumps({'text': d}) + '\n' for d in DOCS))
    assert [c for _, c, _ in _read(['gs://bucket/corpus/**/*.jsonl'])] == DOCS


@pytest.mark.parametrize('content, reading, message', [
    (b'{"text": "a"}\n{"text": "b"\n', {}, r'bad\.jsonl:2: invalid JSON'),
    (b'{"text": "a"}\n\n{"body": "b"}\n', {}, r"bad\.jsonl:3: missing field 'text'"),
    (b'{"text": 3}\n', {}, r"bad\.jsonl:1: field 'text' must be a string, got int: 3"),
    (b'[1]\n', {}, r'bad\.jsonl:1: expected a JSON object, got list'),
    (b'{"text": "ok"}\n{"text": "\xff"}\n', {}, r'bad\.jsonl:2: not valid UTF-8'),
    (b'a\nb\n\xffc\n', {'format': 'text'}, r'bad\.jsonl:3: not valid UTF-8'),
])
def test_bad_records_name_the_file_and_line(tmp_path, content, reading, message):
  (tmp_path / 'bad.jsonl').write_bytes(content)
  with pytest.raises(ValueError, match=message):
    _read([str(tmp_path / 'bad.jsonl')], **reading)


def test_bad_parquet_and_array_record_inputs(tmp_path):
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  pq.write_table(pa.table({'body': ['x']}), tmp_path / 'a.parquet')
  with pytest.raises(ValueError, match=r"a\.parquet: no column 'text' \(has body\)"):
    _read([str(tmp_path / 'a.parquet')])
  _write_records(tmp_path / 'b.array_record', [b'ok', b'\xff\xfe'])
  with pytest.raises(ValueError, match=r'b\.array_record: record 1: not valid UTF-8'):
    _read([str(tmp_path / 'b.array_record')])
  (tmp_path / 'c.array_record').write_text('not an array record')
  with pytest.raises(ValueError, match=r'c\.array_record: not an ArrayRecord file'):
    _read([str(tmp_path / 'c.array_record')])


@pytest.mark.parametrize('flag, expected', [
    ('web=/d/**/*.jsonl.zst', ('web', '/d/**/*.jsonl.zst', '', None)),
    ('gsm=/d/train.jsonl@question,answer:2', ('gsm', '/d/train.jsonl', 'question,answer', 2.0)),
    ('b=gs://bkt/x/*.parquet@content:0.5', ('b', 'gs://bkt/x/*.parquet', 'content', 0.5)),
    ('two=/a/*.txt,/b/*.md', ('two', '/a/*.txt,/b/*.md', '', None)),
])
def test_domain_flag_parses(flag, expected):
  name, spec, weight = load_lib.parse_domain_flag(flag)
  assert (name, spec.path, spec.fields, weight) == expected


def test_domain_flags_join_the_mixture():
  mixture, specs = load_lib.merge_domain_flags('code/python:2,web', ['web=/w/*:3', 'new=/n'])
  assert mixture == 'code/python:2,web:3,new:1' and sorted(specs) == ['new', 'web']
  for bad, message in [('noequals', 'domain: expected NAME=GLOB'), ('x=', 'domain: expected'),
                       ('a=/x', None)]:
    if message:
      with pytest.raises(ValueError, match=message):
        load_lib.parse_domain_flag(bad)
  with pytest.raises(ValueError, match="domain: 'a' is given twice"):
    load_lib.merge_domain_flags('', ['a=/x', 'a=/y'])


def test_file_spec_checks_name_the_field(tmp_path):
  (tmp_path / 'a.txt').write_text('x\n')
  check = lambda **kw: load_lib.check_file_spec('d', load_lib.FileDomainSpec(**kw))
  with pytest.raises(ValueError, match=r'domain_files\.d\.path: no such file'):
    check(path=str(tmp_path / 'missing.txt'))
  with pytest.raises(ValueError, match=r'domain_files\.d\.format: expected one of'):
    check(path=str(tmp_path / 'a.txt'), format='csv')
  with pytest.raises(ValueError, match=r'domain_files\.d\.fields: expected a text field or two'):
    check(path=str(tmp_path / 'a.txt'), fields='a,b,c')
  with pytest.raises(ValueError, match=r'domain_files\.d\.heldout_fraction: must be in'):
    check(path=str(tmp_path / 'a.txt'), heldout_fraction=1.0)
  check(path=[str(tmp_path / '*.txt')])
  assert os.path.exists(tmp_path / 'a.txt')
