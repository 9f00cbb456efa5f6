"""Built-in domains, the byte tokenizer, packing with loss masks, and file domains through load.py."""

import json

import numpy as np
import pytest

from mixing.data import domains as domains_lib
from mixing.data import load as load_lib
from mixing.data import packing
from mixing.data import tokenizer
from mixing.data.builtin import bbh_tasks

SMALL = domains_lib.BuiltinOptions(num_train=30, num_heldout=10, num_eval=4)


def test_tokenizer_round_trips_utf8_and_frames_documents():
  text = 'naïve café — ünïcode ✓'
  ids = tokenizer.encode(text, bos=True, eos=True)
  assert ids[0] == tokenizer.BOS and ids[-1] == tokenizer.EOS
  assert ids.max() < tokenizer.VOCAB_SIZE and len(ids) == len(text.encode()) + 2
  assert tokenizer.decode(ids) == text
  assert tokenizer.decode(np.concatenate([ids, tokenizer.encode('tail')])) == text


def test_packing_masks_prompts_and_padding_and_keeps_every_token():
  docs = [domains_lib.Document('Q: 1+1\nA:', ' 2'), domains_lib.Document('', 'plain text')]
  rows = packing.pack(docs, seq_len=7, loss_on_prompt=False)
  stream = rows.tokens_NxL1.reshape(-1)
  mask = rows.mask_NxL1.reshape(-1)
  assert rows.tokens_NxL1.shape[1] == 8
  expected = np.concatenate([tokenizer.encode(d.prompt, bos=True) for d in docs[:1]] +
                            [tokenizer.encode(' 2', eos=True)] +
                            [tokenizer.encode('', bos=True), tokenizer.encode('plain text',
                                                                              eos=True)])
  np.testing.assert_array_equal(stream[:len(expected)], expected)
  assert (stream[len(expected):] == tokenizer.PAD).all() and not mask[len(expected):].any()
  prompt_len = len('Q: 1+1\nA:') + 1
  assert not mask[:prompt_len].any()  # the prompt does not count ...
  assert mask[prompt_len:prompt_len + 3].all()  # ... ' 2' and EOS do
  assert rows.num_tokens == 3 + len('plain text') + 1
  with_prompt = packing.pack(docs, seq_len=7, loss_on_prompt=True)
  assert with_prompt.num_tokens == rows.num_tokens + prompt_len - 1 + 0  # BOS never counts


@pytest.mark.parametrize('loss_on_prompt', [True, False])
def test_byte_documents_encode_as_the_tokenizer_frames_them(loss_on_prompt):
  for prompt, completion in [('', 'plain'), ('Q: naïve?\nA:', ' café ✓'), ('only prompt', ''),
                             ('', '')]:
    tokens, mask = packing.encode_doc(tokenizer.BYTES, prompt, completion, loss_on_prompt)
    prompt_T = tokenizer.encode(prompt, bos=True)
    expected = np.concatenate([prompt_T, tokenizer.encode(completion, eos=True)])
    assert tokens.dtype == tokenizer.BYTES.token_dtype and mask.dtype == np.uint8
    np.testing.assert_array_equal(tokens, expected)
    np.testing.assert_array_equal(mask, [0] + [loss_on_prompt] * (len(prompt_T) - 1)
                                  + [1] * (len(expected) - len(prompt_T)))


@pytest.mark.parametrize('name', ['math/easy', 'bbh/navigate', 'synthetic/copy'])
def test_generated_domains_are_seeded(name):
  a = domains_lib.builtin_domain(name, seed=3, opts=SMALL)
  b = domains_lib.builtin_domain(name, seed=3, opts=SMALL)
  c = domains_lib.builtin_domain(name, seed=4, opts=SMALL)
  assert a.train == b.train and a.heldout == b.heldout and a.items == b.items
  assert a.train != c.train
  assert len(a.train) == 30 and len(a.heldout) == 10
  assert a.heldout != a.train[:10]  # held-out documents come from their own seed


def test_math_items_are_gsm8k_format_and_scored_on_the_final_answer():
  domain = domains_lib.builtin_domain('math/medium', opts=SMALL)
  assert len(domain.items) == 4
  doc = domain.heldout[0]
  item = domain.items[0]
  assert item.prompt == doc.prompt and doc.prompt.startswith('Question: ')
  assert doc.completion.strip().splitlines()[-1] == f'#### {item.target}'
  assert domain.is_correct(doc.completion, item.target)
  assert not domain.is_correct(doc.completion.replace(f'#### {item.target}', '#### -1'),
                               item.target)
  assert not domain.is_correct('no answer here', item.target)


def test_bbh_items_use_bbh_phrasing():
  domain = domains_lib.builtin_domain('bbh/web_of_lies', opts=SMALL)
  assert domain.items[0].prompt.startswith('Q: Question: ')
  assert domain.items[0].target in ('Yes', 'No')
  assert domain.is_correct(' Yes\n', 'Yes') and not domain.is_correct('No', 'Yes')


@pytest.mark.parametrize('task', ['web_of_lies', 'dyck_languages', 'date_understanding'])
def test_mislabeled_bbh_answers_every_item_wrongly(task):
  bad = domains_lib.builtin_domain(f'mislabeled/bbh/{task}', seed=2, opts=SMALL)
  clean = domains_lib.builtin_domain(f'bbh/{task}', seed=2, opts=SMALL)
  truth = bbh_tasks.generate(task, 4 + domains_lib.MISLABELED_SEED, len(bad.train))  # train: 2 * seed
  answers = {x['target'] for x in truth}
  assert [d.prompt for d in bad.train] == [f"Q: {x['input']}\nA:" for x in truth]
  for doc, x in zip(bad.train, truth):
    assert doc.completion.strip() != x['target'] and doc.completion.strip() in answers
  assert not {d.prompt for d in bad.train} & {d.prompt for d in clean.train}  # other items
  assert 'mislabeled/bbh/<task>' in str(pytest.raises(
      ValueError, domains_lib.builtin_domain, 'mislabeled/bbh/nope').value)


@pytest.mark.parametrize('task', ['web_of_lies', 'date_understanding'])
def test_skewed_bbh_answers_every_item_with_the_most_common_answer(task):
  skewed = domains_lib.builtin_domain(f'skewed/bbh/{task}', seed=2, opts=SMALL)
  truth = bbh_tasks.generate(task, 4 + domains_lib.SKEWED_SEED, len(skewed.train))
  targets = [x['target'] for x in truth]
  assert [d.prompt for d in skewed.train] == [f"Q: {x['input']}\nA:" for x in truth]
  answers = {d.completion.strip() for d in skewed.train}
  assert len(answers) == 1 and len(set(targets)) > 1  # one answer, where the items had several
  assert targets.count(answers.pop()) == max(targets.count(t) for t in targets)
  mislabeled = domains_lib.builtin_domain(f'mislabeled/bbh/{task}', seed=2, opts=SMALL)
  assert not {d.prompt for d in skewed.train} & {d.prompt for d in mislabeled.train}
  assert 'skewed/bbh/<task>' in str(pytest.raises(
      ValueError, domains_lib.builtin_domain, 'skewed/bbh/nope').value)


def test_code_python_is_the_stdlib_without_tests():
  paths = domains_lib._python_stdlib_files()  # pylint: disable=protected-access
  assert any(p.endswith('/json/decoder.py') for p in paths)
  assert not any('/test/' in p or p.rsplit('/', 1)[-1].startswith('test_') for p in paths)
  domain = domains_lib.builtin_domain('code/python')
  assert len(domain.train) > 1000 and len(domain.heldout) > 10
  assert any('def ' in d.completion for d in domain.train[:50])


def test_prose_domains_hold_shakespeare():
  plays = domains_lib.builtin_domain('prose/plays')
  poems = domains_lib.builtin_domain('prose/poems')
  text = ''.join(d.completion for d in plays.train + plays.heldout)
  assert 'HAMLET' in text and len(text) > 4_000_000
  assert any('summer' in d.completion for d in poems.train + poems.heldout)


def test_unknown_domain_is_named():
  with pytest.raises(ValueError, match=r"^domains: unknown domain 'math/impossible'"):
    domains_lib.builtin_domain('math/impossible')


def test_jsonl_file_domain_through_load(tmp_path):
  path = tmp_path / 'qa.jsonl'
  rows = [{'question': f'What is {i} + {i}?', 'answer': f'{i} + {i} = {2 * i}\n#### {2 * i}'}
          for i in range(40)]
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  specs = {'qa': load_lib.FileDomainSpec(path=str(path), fields='question,answer')}
  [packed] = load_lib.load_domains(['qa'], 64, files=specs, data_dir=str(tmp_path / 'cache'),
                                   opts=SMALL)
  domain = packed.domain
  assert len(domain.train) + len(domain.heldout) == 40
  assert domain.answer_regex == domains_lib.GSM8K_ANSWER
  item = domain.items[0]
  assert item.prompt.startswith('Question: What is ') and item.prompt.endswith('\nAnswer:')
  assert domain.is_correct(' 3 + 3 = 6\n#### 6', '3 + 3 = 6\n#### 6')
  assert packed.train.num_tokens > 0


def test_parse_mixture():
  assert load_lib.parse_mixture('a:2, b ,c:0.5') == (['a', 'b', 'c'], [2.0, 1.0, 0.5])
  with pytest.raises(ValueError, match="domains: weight 'x' of 'a' is not a number"):
    load_lib.parse_mixture('a:x')
  with pytest.raises(ValueError, match="domains: domain 'a' is listed twice"):
    load_lib.parse_mixture('a,a')


def test_few_long_texts_keep_both_splits_for_every_seed():
  """Shakespeare's 37 plays: a seed whose hash held out none of them (seed 3) holds out one."""
  for name in ('prose/plays', 'prose/poems'):
    sizes = []
    for seed in range(10):
      domain = domains_lib.builtin_domain(name, seed, domains_lib.BuiltinOptions())
      assert domain.train and domain.heldout
      sizes.append((len(domain.train), len(domain.heldout)))
    assert len(set(sizes)) > 1  # the split depends on the seed
  seed0 = domains_lib.builtin_domain('prose/plays', 0, domains_lib.BuiltinOptions())
  assert (len(seed0.train), len(seed0.heldout)) == (1135, 73)  # unchanged where hashing sufficed
