"""Scores a `choices.ChoiceSet` with a model or a population: lm-eval-harness multiple choice.

`make_scorer` returns a function of the params giving every row's summed option-token
log-probability (log_softmax in float32). Each item's context is read once and its options scored
against it (`models/score.py`), instead of one full row per option. Items are grouped into buckets
by their longest option (M: the next power of 2 >= 4) so that one long-answer suite does not pad
every option; each bucket is padded to whole batches of items holding about as many tokens as
`batch_rows` full rows (contexts once + O x M option slots per item), and scored batch after batch by jax.lax.map inside one jit (one compile per bucket shape). Population
members (a leading axis on every params leaf, as population.py stacks them) are scored one after
another by a second jax.lax.map. Each new scorer compiles once per bucket on its first call (keep
it to score the same set again); `python -m experiments.bench --only=choice` compares it with
scoring full rows, first call and warm.
"""

import dataclasses
import functools
from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from experiments.training import population as population_lib
from mixing.data import choices as choices_lib
from models import score as score_lib

DEFAULT_BATCH_ROWS = 32  # a batch of items holds about as many tokens as this many full rows


@dataclasses.dataclass(frozen=True)
class _Bucket:
  """Items whose longest option fits M tokens, in batches: nb x B items of O options."""
  context: np.ndarray  # int32 (nb, B, P), right-padded with 0
  context_len: np.ndarray  # int32 (nb, B), >= 1 (padding items: 1)
  options: np.ndarray  # int32 (nb, B, O, M), right-padded with 0
  option_len: np.ndarray  # int32 (nb, B, O); 0 for padding options
  row: np.ndarray  # int64 (nb, B, O): the ChoiceSet row each option is, -1 for padding


def _split_rows(choice_set: choices_lib.ChoiceSet):
  """Per row: (context tokens, option tokens), read back from its tokens and target mask; a row
  without targets is (None, empty). The masked targets must be one run (as choices builds them)."""
  out = []
  for n, (tokens_L1, mask_L) in enumerate(zip(choice_set.tokens_NxL1, choice_set.mask_NxL)):
    where = np.flatnonzero(mask_L)
    if not len(where):  # an empty option: no target, scored 0 (as a full row scores it)
      out.append((None, tokens_L1[:0]))
      continue
    if where[-1] - where[0] + 1 != len(where):
      raise ValueError(f'choice_eval: row {n} has targets that are not one run')
    start = where[0] + 1  # mask position i scores token i + 1
    out.append((tokens_L1[:start], tokens_L1[start:start + len(where)]))
  return out


def _context(rows, parts, choice_set) -> np.ndarray:
  """An item's context: the one its scored rows share (its first token if none is scored)."""
  contexts = [parts[n][0] for n in rows if parts[n][0] is not None]
  if any(not np.array_equal(c, contexts[0]) for c in contexts[1:]):
    raise ValueError(f'choice_eval: the rows of item {choice_set.item_N[rows[0]]} have '
                     'different contexts')
  return contexts[0] if contexts else choice_set.tokens_NxL1[rows[0]][:1]


def _buckets(choice_set: choices_lib.ChoiceSet, batch_rows: int) -> list[_Bucket]:
  num_options = choice_set.num_options
  items: dict[int, list[int]] = {}
  for n, item in enumerate(choice_set.item_N):
    items.setdefault(int(item), []).append(n)
  parts = _split_rows(choice_set)
  by_m: dict[int, list[int]] = {}
  for item, rows in items.items():
    longest = max(len(parts[n][1]) for n in rows)
    by_m.setdefault(max(4, 1 << max(longest - 1, 0).bit_length()), []).append(item)
  out = []
  for m, bucket_items in sorted(by_m.items()):
    contexts = [_context(items[i], parts, choice_set) for i in bucket_items]
    p = max(len(c) for c in contexts)
    # A batch holds about as many tokens as batch_rows full rows (10% faster than a fixed number
    # of items on TaskPGM's validation set, idle cores).
    per_batch = max(1, batch_rows * choice_set.tokens_NxL1.shape[1] // (p + num_options * m))
    batch = min(per_batch, len(bucket_items))
    total = -(-len(bucket_items) // batch) * batch
    context = np.zeros((total, p), np.int32)
    context_len = np.ones(total, np.int32)
    options = np.zeros((total, num_options, m), np.int32)
    option_len = np.zeros((total, num_options), np.int32)
    row = np.full((total, num_options), -1, np.int64)
    for j, (item, ctx) in enumerate(zip(bucket_items, contexts)):
      context[j, :len(ctx)], context_len[j] = ctx, len(ctx)
      for o, n in enumerate(items[item]):
        ids = parts[n][1]
        options[j, o, :len(ids)], option_len[j, o], row[j, o] = ids, len(ids), n
    shape = lambda a: a.reshape(total // batch, batch, *a.shape[1:])
    out.append(_Bucket(*map(shape, (context, context_len, options, option_len, row))))
  return out


def make_scorer(graphdef: nnx.GraphDef, choice_set: choices_lib.ChoiceSet,
                batch_rows: int = DEFAULT_BATCH_ROWS,
                members: bool = False) -> Callable[[nnx.State], np.ndarray]:
  """score(params) -> every row's summed option log-probability: shape N, or K x N with members.

  members=True: every params leaf has a leading member axis (a population's `state.params`). The
  function compiles on its first call (and again only for params of another shape).
  """
  if batch_rows < 1:
    raise ValueError(f'choice_eval: bad batch_rows={batch_rows!r}')
  buckets = _buckets(choice_set, batch_rows)
  arrays = [tuple(jnp.asarray(a) for a in (b.context, b.context_len, b.options, b.option_len))
            for b in buckets]

  def one_model(params, *bucket):
    per_batch = functools.partial(score_lib.option_logprobs, graphdef, params)
    return jax.lax.map(lambda batch: per_batch(*batch), bucket)

  if members:
    scored = jax.jit(lambda params, *bucket: jax.lax.map(
        lambda member: one_model(member, *bucket), params))
  else:
    scored = jax.jit(one_model)

  def score(params) -> np.ndarray:
    outs = [population_lib.host_copy(scored(params, *a)) for a in arrays]
    lead = outs[0].shape[:1] if members else ()
    result = np.zeros(lead + (choice_set.num_rows,), np.float32)
    for bucket, out in zip(buckets, outs):
      real = bucket.row >= 0
      result[..., bucket.row[real]] = out[..., real]
    return result
  return score


def evaluate(graphdef: nnx.GraphDef, params: nnx.State, choice_set: choices_lib.ChoiceSet,
             batch_rows: int = DEFAULT_BATCH_ROWS) -> dict[str, float]:
  """One model's `choices.metrics` (compiles a scorer: keep `make_scorer`'s to score repeatedly)."""
  return choices_lib.metrics(make_scorer(graphdef, choice_set, batch_rows)(params), choice_set)
