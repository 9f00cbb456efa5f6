"""Tests of mixing.data.files: TFDS array_record builds of local files."""

import collections
import json
import os
import sys

import grain
import pytest

from mixing.data import files

GSM_LIKE = [
    {'question': 'What is 2 + 3?', 'answer': '2 + 3 = 5\n#### 5', 'id': 1},
    {'question': 'Ünïcödé ✓ and "quotes"?', 'answer': 'yes\u2028no'},
    {'question': '', 'answer': 'empty question'},
] + [{'question': f'q{i}', 'answer': f'a{i}'} for i in range(40)]

TEXT = ''.join(f'Line {i}: to be or not to be, ñ {"x" * (i % 37)}\n'
               for i in range(300)) + 'CRLF line\r\nlast line, no newline'


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(text.encode('utf-8'))
  return str(path)


def _write_jsonl(path, rows):
  return _write(path, ''.join(json.dumps(r, ensure_ascii=False) + '\n'
                                  for r in rows))


def _reassemble(loaded, seed, fraction):
  """Puts train and heldout records back in source order."""
  num_docs = len(loaded['train']) + len(loaded['heldout'])
  train, heldout = files.split_indices(num_docs, fraction, seed)
  docs = [None] * num_docs
  for split, indices in (('train', train), ('heldout', heldout)):
    for position, index in enumerate(indices):
      docs[index] = loaded[split][position]
  return docs


def _cache_entries(data_dir):
  return sorted(os.listdir(data_dir)) if os.path.isdir(data_dir) else []


def test_jsonl_reads_back_without_tensorflow(tmp_path, capsys):
  path = _write_jsonl(tmp_path / 'gsm.jsonl', GSM_LIKE)
  spec = files.FileSpec(path, fields=('question', 'answer'),
                        heldout_fraction=0.2)
  loaded = files.load(spec, str(tmp_path / 'cache'), seed=3)
  expected = [{'question': r['question'], 'answer': r['answer']}
              for r in GSM_LIKE]
  assert _reassemble(loaded, 3, 0.2) == expected
  assert len(loaded['heldout']) == round(len(GSM_LIKE) * 0.2)
  record = loaded['train'][0]
  assert all(isinstance(v, str) for v in record.values())
  assert loaded['train'][-1] == loaded['train'][len(loaded['train']) - 1]
  with pytest.raises(IndexError):
    loaded['train'][len(loaded['train'])]
  assert list(loaded['train']) == [loaded['train'][i]
                                   for i in range(len(loaded['train']))]
  dataset = grain.MapDataset.source(loaded['heldout'])
  assert len(dataset) == len(loaded['heldout'])
  assert dataset[1] == loaded['heldout'][1]
  assert 'tensorflow' not in sys.modules
  assert capsys.readouterr().out == ''  # TFDS banners and bars are silenced.


def test_text_file_chunks_reassemble(tmp_path):
  path = _write(tmp_path / 'play.txt', TEXT)
  spec = files.FileSpec(path, chunk_chars=500, heldout_fraction=0.1)
  loaded = files.load(spec, str(tmp_path / 'cache'))
  chunks = [r['text'] for r in _reassemble(loaded, 0, 0.1)]
  assert ''.join(chunks) == TEXT
  assert len(chunks) > 20
  assert all(len(c) <= 500 for c in chunks)
  assert all(c.endswith('\n') for c in chunks[:-1])  # Cut at line ends.
  assert set(loaded['train'][0]) == {'text'}
  assert 'tensorflow' not in sys.modules


def test_chunk_text_splits_overlong_lines():
  text = 'a' * 25 + '\nbb\n' + 'c' * 3
  chunks = files.chunk_text(text, 10)
  assert ''.join(chunks) == text
  assert all(len(c) <= 10 for c in chunks)


def test_folder_chunks_reassemble(tmp_path):
  folder = tmp_path / 'books'
  _write(folder / 'b.txt', TEXT[:3000])
  _write(folder / 'a.txt', TEXT[3000:])
  _write(folder / 'empty.txt', '\n \n')
  _write(folder / 'notes.md', 'not matched')
  _write(folder / 'sub' / 'c.txt', 'not matched either')
  spec = files.FileSpec(str(folder), chunk_chars=400)
  loaded = files.load(spec, str(tmp_path / 'cache'))
  text = ''.join(r['text'] for r in _reassemble(loaded, 0, 0.05))
  assert text == TEXT[3000:] + TEXT[:3000]  # Files in sorted order.
  spec = files.FileSpec(str(folder), chunk_chars=400, glob='**/*.txt')
  loaded = files.load(spec, str(tmp_path / 'cache'))
  text = ''.join(r['text'] for r in _reassemble(loaded, 0, 0.05))
  assert text == TEXT[3000:] + TEXT[:3000] + 'not matched either'


def test_cache_is_reused_and_rebuilt_on_change(tmp_path, monkeypatch):
  path = tmp_path / 'data.jsonl'
  _write_jsonl(path, GSM_LIKE)
  data_dir = str(tmp_path / 'cache')
  builds = []
  build = files._build
  monkeypatch.setattr(files, '_build',
                      lambda *a: builds.append(a) or build(*a))
  spec = files.FileSpec(str(path), fields=('question',))
  first = files.load(spec, data_dir)
  entries = _cache_entries(data_dir)
  second = files.load(spec, data_dir)
  assert len(builds) == 1 and _cache_entries(data_dir) == entries
  assert list(first['train']) == list(second['train'])

  _write_jsonl(path, GSM_LIKE[:10] + [{'question': 'new one', 'answer': ''}])
  changed = files.load(spec, data_dir)
  assert len(builds) == 2
  assert {'question': 'new one'} in (list(changed['train']) +
                                     list(changed['heldout']))
  files.load(spec, data_dir, seed=1)  # The seed is part of the fingerprint.
  assert len(builds) == 3
  assert not [e for e in _cache_entries(data_dir) if e.startswith('.tmp')]


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
  path = _write_jsonl(tmp_path / 'data.jsonl', GSM_LIKE)
  data_dir = str(tmp_path / 'cache')
  spec = files.FileSpec(path, fields=('answer',))

  def broken(self, docs):
    yield 0, {'f0': docs[0][0]}
    raise RuntimeError('disk on fire')

  with monkeypatch.context() as patch:
    patch.setattr(files._FileBuilder, '_generate_examples', broken)
    with pytest.raises(RuntimeError, match='disk on fire'):
      files.load(spec, data_dir)
  assert _cache_entries(data_dir) == []
  loaded = files.load(spec, data_dir)
  assert len(loaded['train']) + len(loaded['heldout']) == len(GSM_LIKE)


def test_split_is_deterministic_disjoint_and_covering(tmp_path):
  for num_docs in (2, 3, 10, 101):
    train, heldout = files.split_indices(num_docs, 0.05, seed=7)
    assert (train, heldout) == files.split_indices(num_docs, 0.05, seed=7)
    assert train and heldout and not set(train) & set(heldout)
    assert sorted(train + heldout) == list(range(num_docs))
  assert files.split_indices(1, 0.5, seed=0) == ([0], [0])
  assert (files.split_indices(1000, 0.1, 0) !=
          files.split_indices(1000, 0.1, 1))

  rows = [{'question': f'q{i % 7}', 'answer': 'x'} for i in range(50)]
  path = _write_jsonl(tmp_path / 'dupes.jsonl', rows)
  spec = files.FileSpec(path, fields=('question', 'answer'))
  one = files.load(spec, str(tmp_path / 'one'), seed=5)
  two = files.load(spec, str(tmp_path / 'two'), seed=5)
  for split in ('train', 'heldout'):
    assert list(one[split]) == list(two[split])
  together = [r['question'] for s in ('train', 'heldout') for r in one[s]]
  assert collections.Counter(together) == collections.Counter(
      r['question'] for r in rows)


def test_single_document_goes_to_both_splits(tmp_path):
  path = _write(tmp_path / 'tiny.txt', 'just one line\n')
  loaded = files.load(files.FileSpec(path), str(tmp_path / 'cache'))
  assert list(loaded['train']) == list(loaded['heldout']) == [
      {'text': 'just one line\n'}]


def _bad_inputs(tmp_path):
  """Yields (spec, substrings the one-line error must contain)."""
  missing = str(tmp_path / 'x' / 'y.jsonl')
  yield files.FileSpec(missing, fields=('q',)), [
      f"file: no such file or directory: '{missing}'"]
  bad_json = _write(tmp_path / 'bad.jsonl',
                    '{"q": "a"}\n\n{"q": "b"}\n{"q": broken}\n')
  yield files.FileSpec(bad_json, fields=('q',)), [
      f'{bad_json}:4: invalid JSON']
  no_field = _write_jsonl(tmp_path / 'nofield.jsonl',
                          [{'question': 'a', 'answer': 'b'}] * 2 +
                          [{'question': 'c'}])
  yield files.FileSpec(no_field, fields=('question', 'answer')), [
      f"{no_field}:3: missing field 'answer'"]
  not_str = _write_jsonl(tmp_path / 'notstr.jsonl',
                         [{'question': 'a', 'answer': 72}])
  yield files.FileSpec(not_str, fields=('question', 'answer')), [
      f"{not_str}:1: field 'answer' must be a string", 'int', '72']
  not_obj = _write(tmp_path / 'list.jsonl', '[1, 2]\n')
  yield files.FileSpec(not_obj, fields=('q',)), [f'{not_obj}:1:', 'object']
  empty = _write(tmp_path / 'empty.txt', '')
  yield files.FileSpec(empty), ['file: no documents', empty]
  blank = _write(tmp_path / 'blank.jsonl', '\n\n')
  yield files.FileSpec(blank, fields=('q',)), ['file: no documents', blank]
  latin1 = tmp_path / 'latin1.txt'
  latin1.write_bytes(b'ok\ncaf\xe9\n')
  yield files.FileSpec(str(latin1)), [f'{latin1}:2: not valid UTF-8']
  empty_dir = tmp_path / 'empty_dir'
  _write(empty_dir / 'blank.txt', '  \n')
  yield files.FileSpec(str(empty_dir)), ['file: no documents', str(empty_dir)]
  no_match = tmp_path / 'no_match'
  _write(no_match / 'a.md', 'text')
  yield files.FileSpec(str(no_match)), [
      "glob: no files match '*.txt'", str(no_match)]
  good = _write_jsonl(tmp_path / 'good.jsonl', GSM_LIKE)
  yield files.FileSpec(good), ['fields:', 'needs fields', good]
  yield files.FileSpec(good, fields=('q', 'q')), ['fields:', 'duplicate']
  yield files.FileSpec(empty, fields=('q',)), ['fields:', 'only for .jsonl']
  yield files.FileSpec(good, fields=('question',), heldout_fraction=1.0), [
      'heldout_fraction:', '1.0']
  yield files.FileSpec(good, fields=('question',), chunk_chars=0), [
      'chunk_chars:', '0']


def test_bad_inputs_raise_one_line_value_errors(tmp_path):
  data_dir = str(tmp_path / 'cache')
  cases = list(_bad_inputs(tmp_path / 'src'))
  for spec, parts in cases:
    with pytest.raises(ValueError) as info:
      files.load(spec, data_dir)
    message = str(info.value)
    assert '\n' not in message, message
    for part in parts:
      assert part in message, (part, message)
    assert _cache_entries(data_dir) == [], message
    with pytest.raises(ValueError):  # Fails the same way the second time.
      files.load(spec, data_dir)
  assert 'tensorflow' not in sys.modules


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads any file')
def test_unreadable_file(tmp_path):
  path = _write(tmp_path / 'secret.txt', 'hidden\n')
  os.chmod(path, 0)
  with pytest.raises(ValueError, match='file: cannot read') as info:
    files.load(files.FileSpec(path), str(tmp_path / 'cache'))
  assert path in str(info.value)
  assert _cache_entries(str(tmp_path / 'cache')) == []
