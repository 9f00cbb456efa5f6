"""Scores a `choices.ChoiceSet` with a model or a population: lm-eval-harness multiple choice.

`make_scorer` jits, once per choice set, a function of the params that returns every row's summed
option-token log-probability (log_softmax in float32, the model called as step.loss_fn calls it).
Rows are padded to a multiple of `batch_rows` and scored batch after batch by jax.lax.map inside the
one jit; population members (a leading axis on every params leaf, as population.py stacks them) are
scored one after another by a second jax.lax.map. Measured on 2 CPU cores (tiny preset, 16 members,
265 rows of 64 tokens): lax.map over members and over batches of 32 rows ~0.75-1.2 s; vmapping the
members (all at once or in groups of 4) or a python loop over a jitted batch was 1.3-4x slower."""

import functools
from typing import Callable

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from experiments.training import population as population_lib
from mixing.data import choices as choices_lib

DEFAULT_BATCH_ROWS = 32  # fastest of 8..320 for the tiny preset on CPU (see the module docstring)


def rows_logprob(graphdef: nnx.GraphDef, params: nnx.State, tokens_BxL1: jax.Array,
                 mask_BxL: jax.Array) -> jax.Array:
  """Summed log-probability of each row's masked targets (tokens_BxL1[:, 1:]), float32, shape B."""
  logits_BxLxV = nnx.merge(graphdef, params)(tokens_BxL1[:, :-1])
  logprob_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32))
  target_BxL = jnp.take_along_axis(logprob_BxLxV, tokens_BxL1[:, 1:, None], axis=-1)[..., 0]
  return jnp.sum(target_BxL * mask_BxL, axis=-1)


def _batched(choice_set: choices_lib.ChoiceSet, batch_rows: int):
  """Tokens and masks padded with empty rows and split into batches: (nb, B, L + 1), (nb, B, L)."""
  n, row = choice_set.tokens_NxL1.shape
  batch_rows = min(batch_rows, n)
  num_batches = -(-n // batch_rows)
  pad = num_batches * batch_rows - n
  tokens = np.concatenate([choice_set.tokens_NxL1, np.zeros((pad, row), np.int32)])
  mask = np.concatenate([choice_set.mask_NxL, np.zeros((pad, row - 1), np.float32)])
  return (jnp.asarray(tokens.reshape(num_batches, batch_rows, row)),
          jnp.asarray(mask.reshape(num_batches, batch_rows, row - 1)))


def make_scorer(graphdef: nnx.GraphDef, choice_set: choices_lib.ChoiceSet,
                batch_rows: int = DEFAULT_BATCH_ROWS,
                members: bool = False) -> Callable[[nnx.State], np.ndarray]:
  """score(params) -> every row's summed option log-probability: shape N, or K x N with members.

  members=True: every params leaf has a leading member axis (a population's `state.params`). The
  function compiles on its first call (and again only for params of another shape).
  """
  if batch_rows < 1:
    raise ValueError(f'choice_eval: bad batch_rows={batch_rows!r}')
  tokens, mask = _batched(choice_set, batch_rows)
  n = choice_set.num_rows

  def one_model(params, tokens, mask):
    per_batch = functools.partial(rows_logprob, graphdef, params)
    return jax.lax.map(lambda batch: per_batch(*batch), (tokens, mask)).reshape(-1)[:n]

  if members:
    scored = jax.jit(lambda params, tokens, mask: jax.lax.map(
        lambda member: one_model(member, tokens, mask), params))
  else:
    scored = jax.jit(one_model)

  def score(params) -> np.ndarray:
    return population_lib.host_copy(scored(params, tokens, mask))
  return score


def evaluate(graphdef: nnx.GraphDef, params: nnx.State, choice_set: choices_lib.ChoiceSet,
             batch_rows: int = DEFAULT_BATCH_ROWS) -> dict[str, float]:
  """One model's `choices.metrics` (compiles a scorer: keep `make_scorer`'s to score repeatedly)."""
  return choices_lib.metrics(make_scorer(graphdef, choice_set, batch_rows)(params), choice_set)
