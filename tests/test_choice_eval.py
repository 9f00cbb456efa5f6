"""Multiple-choice evaluation: mixing/data/choices.py (items, metrics), choice_eval.py (scoring)."""

import dataclasses

from flax import nnx
import numpy as np
import pytest

from configs import tiny
from experiments.recipes import runs
from experiments.training import choice_eval
from experiments.training import population as population_lib
from mixing.data import choices
from mixing.data import domains as domains_lib
from mixing.data import tokenizer
from models import transformer

SEQ_LEN = 32
OPTION_BYTES = 12


@pytest.fixture(scope='module')
def domains():
  opts = domains_lib.BuiltinOptions(num_train=4, num_heldout=30)
  return [domains_lib.builtin_domain(name, 0, opts) for name in ('math/easy', 'synthetic/copy')]


def _build(domains, num_items=4, skip=0, seed=0, cuts=1):
  return choices.build(domains, num_items, SEQ_LEN, seed, num_options=4,
                       option_bytes=OPTION_BYTES, skip=skip, cuts_per_doc=cuts)


def _row_texts(choice_set, i):
  """(context, option) text of row i: the tokens before and under the mask (BOS dropped)."""
  tokens = choice_set.tokens_NxL1[i]
  start = int(np.flatnonzero(choice_set.mask_NxL[i])[0]) + 1
  length = int(choice_set.mask_NxL[i].sum())
  return tokenizer.decode(tokens[:start]), tokenizer.decode(tokens[start:start + length])


def _items(choice_set):
  """{(domain, context, correct option)} of a set's items."""
  return {(int(choice_set.domain_N[i]),) + _row_texts(choice_set, i)
          for i in np.flatnonzero(choice_set.option_N == 0)}


def test_build_is_deterministic_and_well_formed(domains):
  a, b = _build(domains), _build(domains)
  for field in dataclasses.fields(a):
    np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name))
  assert a.names == ('math/easy', 'synthetic/copy')
  assert a.num_options == 4 and a.num_rows == 2 * 4 * 4
  np.testing.assert_array_equal(a.num_items_D(), [4, 4])
  np.testing.assert_allclose(a.chance_D(), [0.25, 0.25])
  assert a.tokens_NxL1.shape == (a.num_rows, SEQ_LEN + 1) and a.tokens_NxL1.dtype == np.int32
  assert a.mask_NxL.shape == (a.num_rows, SEQ_LEN) and a.mask_NxL.dtype == np.float32
  np.testing.assert_array_equal(a.mask_NxL.sum(1), a.option_bytes_N)
  assert (a.option_bytes_N <= OPTION_BYTES).all() and (a.option_bytes_N > 0).all()
  # Padding is 0 after the option; every option of an item shares its context.
  for i in range(a.num_rows):
    last = int(np.flatnonzero(a.mask_NxL[i])[-1]) + 1
    assert (a.tokens_NxL1[i, last + 1:] == 0).all()
  for item in range(a.num_items):
    rows = np.flatnonzero(a.item_N == item)
    np.testing.assert_array_equal(a.option_N[rows], np.arange(len(rows)))
    contexts, options = zip(*(_row_texts(a, i) for i in rows))
    assert len(set(contexts)) == 1
    assert len(set(options)) == len(options)  # distinct options
  # A different seed draws other distractors.
  assert not np.array_equal(a.tokens_NxL1, _build(domains, seed=1).tokens_NxL1)


def test_option_zero_is_the_true_continuation(domains):
  a = _build(domains)
  math_docs, copy_docs = domains[0].heldout, domains[1].heldout
  for i in np.flatnonzero(a.option_N == 0):
    context, option = _row_texts(a, i)
    item = int(a.item_N[i])
    if a.domain_N[i] == 0:  # prompted: the prompt's end, then the completion's first bytes
      doc = math_docs[item]
      assert doc.prompt.endswith(context) and doc.completion.startswith(option)
      assert len(option.encode()) == OPTION_BYTES
    else:  # plain text: a window right after a whitespace cut
      doc = copy_docs[item - 4].completion
      assert context + option in doc and option[0].isspace()
  # Distractors are other documents' options, not this document's continuation.
  for i in np.flatnonzero((a.option_N > 0) & (a.domain_N == 0)):
    context, option = _row_texts(a, i)
    assert not math_docs[int(a.item_N[i])].completion.startswith(option)


def test_feedback_and_test_sets_are_disjoint(domains):
  feedback, test, whole = _build(domains, 4), _build(domains, 10, skip=4), _build(domains, 14)
  assert not _items(feedback) & _items(test)
  assert _items(feedback) | _items(test) == _items(whole)
  np.testing.assert_array_equal(test.num_items_D(), [10, 10])
  # A domain gives what it has: 30 held-out documents, 25 after skip=5.
  np.testing.assert_array_equal(_build(domains, 100, skip=5).num_items_D(), [25, 25])


def test_more_cuts_per_plain_document_append_items(domains):
  one, three = _build(domains, 100), _build(domains, 100, cuts=3)
  np.testing.assert_array_equal(one.num_items_D(), [30, 30])
  assert three.num_items_D()[0] == 30 and 60 < three.num_items_D()[1] <= 90  # math is prompted
  copy_items = lambda cs: sorted(_row_texts(cs, i) for i in np.flatnonzero(
      (cs.option_N == 0) & (cs.domain_N == 1) & (cs.item_N < 60)))
  assert copy_items(one) == copy_items(three)  # the first 30 copy items are the one-cut items
  docs = [d.completion for d in domains[1].heldout]
  for item in range(three.num_items):
    rows = np.flatnonzero((three.item_N == item) & (three.domain_N == 1))
    if rows.size:
      context, correct = _row_texts(three, rows[0])
      home = [d for d in docs if context + correct in d]
      # Distractors come from other documents (none is the text after this cut in its own doc).
      for i in rows[1:]:
        assert context + _row_texts(three, i)[1] not in home[0]


def test_build_rejects_bad_input(domains):
  same = domains_lib.Domain('same', [], [domains_lib.Document('Q:', ' yes')] * 10)
  with pytest.raises(ValueError, match="'same'"):
    _build([same])
  with pytest.raises(ValueError, match="'math/easy'.*skip=30"):
    _build(domains, skip=30)
  with pytest.raises(ValueError, match='option_bytes=32'):
    choices.build(domains, 4, SEQ_LEN, 0, option_bytes=32)
  with pytest.raises(ValueError, match='num_items=0'):
    _build(domains, 0)
  # Two distinct answers: items of 2 options, unless every item must have num_options.
  binary = domains_lib.Domain('yn', [], [domains_lib.Document(f'Q{i}:', (' yes', ' no')[i % 2])
                                         for i in range(6)])
  assert _build([binary]).num_options == 2
  with pytest.raises(ValueError, match="'yn'.*min_options=4"):
    choices.build([binary], 4, SEQ_LEN, 0, option_bytes=8, min_options=4)


def _hand_set(option_bytes_N):
  """Two domains: item 0 (domain a) with 3 options, item 1 (domain b) with 2."""
  n = len(option_bytes_N)
  return choices.ChoiceSet(
      names=('a', 'b'), tokens_NxL1=np.zeros((n, 5), np.int32),
      mask_NxL=np.zeros((n, 4), np.float32), domain_N=np.array([0, 0, 0, 1, 1], np.int32),
      item_N=np.array([0, 0, 0, 1, 1], np.int32), option_N=np.array([0, 1, 2, 0, 1], np.int32),
      option_bytes_N=np.asarray(option_bytes_N, np.int32), num_options=3)


def test_metrics_acc_and_length_normalized_acc():
  cs = _hand_set([10, 2, 10, 4, 4])
  # Item 0: the long correct option has the lower sum (-5 < -3), the higher mean (-0.5 > -1.5).
  # Item 1: a tie, which goes to option 0.
  m = choices.metrics([-5.0, -3.0, -9.0, -2.0, -2.0], cs)
  p_a = np.exp(-5.0) / (np.exp(-5.0) + np.exp(-3.0) + np.exp(-9.0))
  assert m == pytest.approx({'eval/a/choice_acc': 0.0, 'eval/b/choice_acc': 1.0,
                             'eval/a/choice_acc_norm': 1.0, 'eval/b/choice_acc_norm': 1.0,
                             'eval/a/choice_prob': p_a, 'eval/b/choice_prob': 0.5}, rel=1e-12)
  listed = choices.metrics_K([[-1.0, -3.0, -9.0, -2.0, -1.0], [-5.0, -3.0, -9.0, -2.0, -2.0]], cs)
  assert listed[0]['eval/a/choice_acc'] == 1.0 and listed[0]['eval/b/choice_acc'] == 0.0
  assert listed[1] == m
  with_nan = choices.metrics([np.nan, -3.0, -9.0, -2.0, -2.0], cs)
  assert with_nan['eval/a/choice_acc'] == 0.0 and with_nan['eval/a/choice_prob'] == 0.0
  # A NaN distractor gets no probability; far-apart log-probabilities do not overflow.
  assert choices.metrics([-1000.0, np.nan, -2000.0, -2.0, -2.0], cs)['eval/a/choice_prob'] == 1.0
  assert choices.metrics([np.nan] * 3 + [-2.0, -2.0], cs)['eval/a/choice_prob'] == 0.0  # all NaN
  with pytest.raises(ValueError, match='logprob_N.shape'):
    choices.metrics([0.0] * 4, cs)


def _model(seed):
  return nnx.split(transformer.Transformer(transformer.tiny(), rngs=nnx.Rngs(seed)))


def _reference(model, choice_set):
  """Each row's option log-probability, one row at a time, in float64 numpy."""
  out = []
  for tokens, mask in zip(choice_set.tokens_NxL1, choice_set.mask_NxL):
    logits = np.asarray(model(tokens[None, :-1])[0], np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    out.append((logp[np.arange(len(mask)), tokens[1:]] * mask).sum())
  return np.array(out)


def test_scorer_matches_row_by_row_reference(domains):
  cs = _build(domains, 3)  # 24 rows: batches of 10 leave a padded last batch
  graphdef, params = _model(0)
  got = choice_eval.make_scorer(graphdef, cs, batch_rows=10)(params)
  assert got.shape == (cs.num_rows,)
  np.testing.assert_allclose(got, _reference(nnx.merge(graphdef, params), cs), rtol=1e-5, atol=1e-4)
  metrics = choice_eval.evaluate(graphdef, params, cs)
  assert set(metrics) == {f'eval/{n}/choice_{k}' for n in cs.names for k in choices.METRICS}


def test_members_score_like_each_member_alone(domains):
  cs = _build(domains, 2)
  (graphdef, p0), (_, p1) = _model(0), _model(1)
  stacked = choice_eval.make_scorer(graphdef, cs, batch_rows=8, members=True)(
      population_lib.stack([p0, p1]))
  alone = choice_eval.make_scorer(graphdef, cs, batch_rows=8)
  assert stacked.shape == (2, cs.num_rows)
  np.testing.assert_allclose(stacked, [alone(p0), alone(p1)], rtol=1e-5, atol=1e-4)
  assert not np.allclose(stacked[0], stacked[1])


def test_shared_context_scoring_matches_full_rows_across_buckets():
  """Grouped-query attention with RoPE; options of 1 to ~40 tokens (three length buckets); items of
  2 and 4 options; prompts longer than a row (cut from the left); a batch padded with items."""
  rng = np.random.default_rng(0)
  words = lambda n: ' '.join(''.join(rng.choice(list('abcdefgh'), 3)) for _ in range(n))
  suites = [('yesno', [(f'Q: {words(k)}\nA:', ['Yes', 'No'][k % 2]) for k in range(1, 6)],
             ['Yes', 'No']),
            ('long', [(f'Q: {words(2 * k)}\nA:', words(k)) for k in range(1, 12)],
             [words(k) for k in range(1, 12)])]
  cs = choices.build_items(suites, SEQ_LEN * 2, seed=0)
  assert sorted(set(np.bincount(cs.item_N))) == [2, 4]
  # Long prompts lose their start: counted per suite and named in one line.
  assert cs.cut_D()[0] == 0 and 0 < cs.cut_D()[1] < 1
  assert choices.cut_warning(cs, 'items').startswith(
      f'items: contexts cut from the left to fit seq_len {SEQ_LEN * 2} in 1 of 2 suites (long ')
  assert choices.cut_warning(choices.build_items(suites[:1], SEQ_LEN * 2, seed=0), 'x') is None
  model = transformer.Transformer(dataclasses.replace(transformer.tiny_gqa(), max_len=SEQ_LEN * 2),
                                  rngs=nnx.Rngs(3))
  graphdef, params = nnx.split(model)
  assert len({b.options.shape[-1] for b in choice_eval._buckets(cs, 12)}) >= 3  # pylint: disable=protected-access
  got = choice_eval.make_scorer(graphdef, cs, batch_rows=12)(params)
  np.testing.assert_allclose(got, _reference(model, cs), rtol=1e-5, atol=2e-4)


def test_one_token_and_empty_options_score_as_full_rows():
  """Hand-made rows: 1-token options, an item whose rows have no targets (each scores 0), an item
  of 1- and 3-token options; targets that are not one run are refused."""
  rows = [([1, 5, 6, 7], 3, 1), ([1, 5, 6, 8], 3, 1), ([1, 5, 6, 9], 3, 1),  # (tokens, start, n)
          ([1, 4], 0, 0), ([1, 4], 0, 0),
          ([1, 2, 3, 9], 3, 1), ([1, 2, 3, 8, 7, 6], 3, 3)]
  tokens, mask = np.zeros((len(rows), 7), np.int32), np.zeros((len(rows), 6), np.float32)
  for r, (ids, start, n) in enumerate(rows):
    tokens[r, :len(ids)] = ids
    mask[r, start - 1:start - 1 + n] = 1.0
  cs = choices.ChoiceSet(
      names=('a',), tokens_NxL1=tokens, mask_NxL=mask, domain_N=np.zeros(7, np.int32),
      item_N=np.array([0, 0, 0, 1, 1, 2, 2], np.int32),
      option_N=np.array([0, 1, 2, 0, 1, 0, 1], np.int32),
      option_bytes_N=np.ones(7, np.int32), num_options=3)
  graphdef, params = _model(0)
  got = choice_eval.make_scorer(graphdef, cs, batch_rows=3)(params)
  np.testing.assert_allclose(got, _reference(nnx.merge(graphdef, params), cs), rtol=1e-5, atol=1e-4)
  assert got[3] == got[4] == 0.0 and (got[[0, 1, 2, 5, 6]] < 0).all()
  gap = dataclasses.replace(cs, mask_NxL=cs.mask_NxL.copy())
  gap.mask_NxL[6, 3] = 0.0
  with pytest.raises(ValueError, match='row 6 has targets that are not one run'):
    choice_eval.make_scorer(graphdef, gap)


def test_briefly_trained_model_beats_chance(tmp_path):
  config = tiny.get_config()
  config.domains = 'synthetic/easy:1'
  config.steps, config.eval_every, config.checkpoint_every = 60, 1000, 1000
  trainer = runs.make_trainer(config, str(tmp_path), quiet=True)
  cs = choices.build([p.domain for p in trainer.domains], 16, config.seq_len, 0, option_bytes=8)
  score = choice_eval.make_scorer(trainer.graphdef, cs)
  before = choices.metrics(score(trainer.state.params), cs)['eval/synthetic/easy/choice_acc']
  trainer.run()
  after = choices.metrics(score(trainer.state.params), cs)['eval/synthetic/easy/choice_acc']
  assert after >= 0.75 > before + 0.25, (before, after)
