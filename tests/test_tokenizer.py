"""Tokenizers behind one interface: bytes, a Hugging Face tokenizer.json, a SentencePiece model; a
trained byte-level BPE end to end (packing, training, held-out loss, exact-match decoding, multiple
choice)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece
import tokenizers

from configs import tiny
from experiments.recipes import runs
from experiments.training import metrics as metrics_lib
from experiments.training import state as state_lib
from mixing.data import bpe
from mixing.data import choices
from mixing.data import domains as domains_lib
from mixing.data import packing
from mixing.data import tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ['Hello, wörld: ünïcode ✓ 数学 and emoji 🙂.', 'def f(x):\n    return x  # tabs\there',
         'Question: what is 2+3?\nAnswer: 5', '']


def _corpus():
  plays = domains_lib.builtin_domain('prose/plays', 0, domains_lib.BuiltinOptions(num_train=300))
  code = domains_lib.builtin_domain('code/python', 0, domains_lib.BuiltinOptions(num_train=300))
  return [d.prompt + d.completion for d in plays.train + code.train]


@pytest.fixture(scope='module')
def bpe_dir(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('bpe'))
  bpe.train(_corpus(), 600, out)
  return out


@pytest.fixture(scope='module')
def sp_model(tmp_path_factory):
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(_corpus()), model_writer=model, vocab_size=400, model_type='bpe',
      byte_fallback=True, normalization_rule_name='identity', add_dummy_prefix=False,
      remove_extra_whitespaces=False, split_by_whitespace=True, pad_id=3, minloglevel=2)
  path = str(tmp_path_factory.mktemp('sp') / 'tok.model')
  with open(path, 'wb') as f:
    f.write(model.getvalue())
  return path


def test_bytes_are_utf8_with_specials_after_them():
  tok = tokenizer.load('bytes')
  assert tok is tokenizer.BYTES and tok.vocab_size == 259
  for text in TEXTS:
    ids = tok.encode(text, bos=True, eos=True)
    assert ids.dtype == np.int32 and ids[0] == tok.bos_id == 256 and ids[-1] == tok.eos_id == 257
    assert list(ids[1:-1]) == list(text.encode('utf-8'))
    assert tok.decode(ids) == text


def test_hf_tokenizer_matches_its_library_and_round_trips(bpe_dir):
  tok = tokenizer.load(bpe_dir)  # the folder, as a Hugging Face checkpoint has it
  assert tok.kind == 'hf' and tok.vocab_size == 600
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2)  # <s>, </s>, <pad> from tokenizer_config
  ref = tokenizers.Tokenizer.from_file(os.path.join(bpe_dir, 'tokenizer.json'))
  for text in TEXTS:
    ids = tok.encode(text, bos=True, eos=True)
    assert list(ids[1:-1]) == ref.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids) == text
  assert len(tok.encode(TEXTS[1])) < len(TEXTS[1].encode()) / 1.5  # real merges, not bytes
  assert tok.fingerprint.startswith('hf-') and tok.fingerprint != tokenizer.BYTES.fingerprint


def test_sentencepiece_matches_its_library_and_round_trips(sp_model):
  tok = tokenizer.load(sp_model)
  ref = sentencepiece.SentencePieceProcessor(model_file=sp_model)
  assert tok.kind == 'sentencepiece' and tok.vocab_size == ref.get_piece_size() == 400
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (ref.bos_id(), ref.eos_id(), 3)
  for text in TEXTS:
    ids = tok.encode(text, bos=True, eos=True)
    assert list(ids[1:-1]) == ref.encode(text)
    assert tok.decode(ids) == text  # byte fallback: characters outside the pieces survive


def test_bad_tokenizer_is_one_clear_error(tmp_path):
  with pytest.raises(ValueError, match="tokenizer: '/no/such'"):
    tokenizer.load('/no/such')
  bad = tmp_path / 'tokenizer.json'
  bad.write_text('{"not": "a tokenizer"}')
  with pytest.raises(ValueError, match='tokenizer: cannot read'):
    tokenizer.load(str(bad))
  with pytest.raises(ValueError, match='vocab_size: must be at least 259'):
    bpe.train(['abc'], 100, str(tmp_path / 'small'))


def test_packing_and_choices_use_the_tokenizer(bpe_dir):
  tok = tokenizer.load(bpe_dir)
  docs = [domains_lib.Document('Question: 2+3?', ' 5'), domains_lib.Document('', 'plain text')]
  rows = packing.pack(docs, 16, tok=tok)
  stream = rows.tokens_NxL1.reshape(-1)
  expected = np.concatenate([tok.encode(docs[0].prompt, bos=True), tok.encode(' 5', eos=True),
                             tok.encode('', bos=True), tok.encode('plain text', eos=True)])
  np.testing.assert_array_equal(stream[:len(expected)], expected)
  assert (stream[len(expected):] == tok.pad_id).all()
  choice_set = choices.build_items([('s', [('Is it? ', 'Yes')], ['Yes', 'No'])], 32, 0, 2, tok=tok)
  first = choice_set.tokens_NxL1[0]
  context = tok.encode('Is it? ', bos=True)
  np.testing.assert_array_equal(first[:len(context)], context)
  assert list(choice_set.option_bytes_N) == [4, 3]  # ' Yes', ' No' in UTF-8 bytes, as lm-eval counts


def test_a_run_with_a_trained_bpe_trains_and_evaluates(bpe_dir, tmp_path):
  config = tiny.get_config()
  config.tokenizer = bpe_dir
  config.domains = 'prose/plays:1,math/easy:1'
  config.steps, config.eval_every, config.log_every, config.eval_items = 30, 30, 10, 4
  config.checkpoint_every = 100
  trainer = runs.make_trainer(config, str(tmp_path), quiet=True)
  assert trainer.domains[0].tokenizer.vocab_size == 600
  trainer.run()
  rows = metrics_lib.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  assert losses[-1] < losses[0] - 0.5 and losses[0] < np.log(600) + 1  # a softmax over 600 ids
  final = rows[-1]
  assert np.isfinite(final['eval/math/easy/loss']) and 0 <= final['eval/math/easy/accuracy'] <= 1
  assert state_lib.run_tokenizer(config).fingerprint == tokenizer.load(bpe_dir).fingerprint


def test_tokenizer_cli_trains_shows_and_rejects(tmp_path):
  run = lambda *args: subprocess.run([sys.executable, '-m', 'experiments.tokenizer', *args],
                                     cwd=ROOT, capture_output=True, text=True, timeout=300)
  out = run('train', '--domains=math/easy', '--vocab_size=400', f'--out={tmp_path / "t"}')
  assert out.returncode == 0, out.stderr
  assert 'vocabulary 400' in out.stdout and 'bytes per token' in out.stdout
  config = json.loads((tmp_path / 't' / 'tokenizer_config.json').read_text())
  assert config['eos_token'] == '</s>'
  out = run('show', f'--tokenizer={tmp_path / "t"}', '--text=Answer: 42 ✓')
  assert out.returncode == 0 and 'round trip: True' in out.stdout
  for args, field in ((('train', '--vocab_size=10', f'--out={tmp_path}/u'), 'vocab_size'),
                      (('train', '--vocab_size=400'), 'out'), (('fit',), 'command'),
                      (('show', '--tokenizer=/no/such'), 'tokenizer')):
    out = run(*args)
    assert out.returncode == 2 and out.stderr.strip().startswith(f'error: {field}'), out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
