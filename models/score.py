"""Option log-likelihoods with each context read once, for multiple-choice scoring.

Scoring an item's O options as O full rows (context + option) runs the shared context O times. Here
the context is prefilled once (`decode.prefill`: every layer's keys and values, after RoPE). The
item's O options, each padded to M tokens at positions context_len, context_len + 1, ..., then run
as one sequence of O * M queries, whose mask lets option j's token t see the context's first
context_len cached positions and option j's tokens 0..t (the cache is concatenated with the option
keys once per layer, not repeated per option). An option's first token is scored by the context's
last logits, its token t by the option pass's logits at t - 1. The sums equal a full row's summed
option log-probability up to float rounding (tests/test_choice_eval.py checks both against a
row-by-row reference).
"""

from flax import nnx
import jax
import jax.numpy as jnp

from models import decode
from models import transformer


def option_logprobs(graphdef: nnx.GraphDef, params: nnx.State, context_BxP: jax.Array,
                    context_len_B: jax.Array, option_BxOxM: jax.Array,
                    option_len_BxO: jax.Array) -> jax.Array:
  """Summed log-probability of each option's tokens after its item's context: float32, B x O.

  context_BxP: contexts right-padded to P (context_len_B >= 1 real tokens each); option_BxOxM:
  each item's O options right-padded to M tokens (option_len_BxO of them; 0: a padding option,
  scored 0). Padding slots may sit past the model's trained length: no real token attends to them,
  and RoPE has no position table (real option tokens end where a full row would).
  """
  model: transformer.Transformer = nnx.merge(graphdef, params)
  cfg = model.cfg
  blocks = transformer.layer_blocks(model)
  b, o, m = option_BxOxM.shape
  p = context_BxP.shape[1]
  x_BxPxD, keys, values = decode.prefill(model, blocks, context_BxP)
  last_BxD = jnp.take_along_axis(x_BxPxD, (context_len_B - 1)[:, None, None], axis=1)[:, 0]
  first_logp_BxV = jax.nn.log_softmax(model.unembed(last_BxD))

  option_NxM = option_BxOxM.reshape(b * o, m)  # N = B * O option rows, item-major
  positions_BxOM = context_len_B[:, None] + jnp.tile(jnp.arange(m), o)[None]
  # The O options' tokens are one item's O*M queries: token t of option j sees the context's real
  # positions and tokens 0..t of option j (so the context's keys are read, not copied O times).
  sees_context_BxP = jnp.arange(p)[None] < context_len_B[:, None]
  option_of = jnp.repeat(jnp.arange(o), m)
  token_of = jnp.tile(jnp.arange(m), o)
  sees_own_OMxOM = ((option_of[:, None] == option_of[None])
                    & (token_of[None] <= token_of[:, None]))
  mask_Bx1xOMxS = jnp.concatenate(
      [jnp.broadcast_to(sees_context_BxP[:, None], (b, o * m, p)),
       jnp.broadcast_to(sees_own_OMxOM, (b, o * m, o * m))], axis=-1)[:, None]
  x_BxOMxD = model.embed(option_BxOxM.reshape(b, o * m))
  for i, block in enumerate(blocks):
    q_BxOMxHxK, k_BxOMxGxK, v_BxOMxGxK = block.attn.project(block.attn_norm(x_BxOMxD))
    q_BxOMxHxK = transformer.rope(q_BxOMxHxK, cfg.rope_base, positions_BxOM, cfg.rope_scaling)
    k_BxOMxGxK = transformer.rope(k_BxOMxGxK, cfg.rope_base, positions_BxOM, cfg.rope_scaling)
    keys_BxSxGxK = jnp.concatenate([keys[i], k_BxOMxGxK], axis=1)
    values_BxSxGxK = jnp.concatenate([values[i], v_BxOMxGxK], axis=1)
    out_BxOMxHxK = jax.nn.dot_product_attention(q_BxOMxHxK, keys_BxSxGxK, values_BxSxGxK,
                                                mask=mask_Bx1xOMxS, scale=cfg.head_dim**-0.5)
    x_BxOMxD = x_BxOMxD + block.attn.output(out_BxOMxHxK)
    x_BxOMxD = x_BxOMxD + block.mlp(block.mlp_norm(x_BxOMxD))
  x_NxMxD = x_BxOMxD.reshape(b * o, m, -1)
  logp_NxMxV = jax.nn.log_softmax(model.unembed(model.final_norm(x_NxMxD)).astype(jnp.float32))

  option_len_N = option_len_BxO.reshape(-1)
  first_N = jnp.take_along_axis(jnp.repeat(first_logp_BxV, o, axis=0), option_NxM[:, :1],
                                axis=1)[:, 0]
  later_NxM1 = jnp.take_along_axis(logp_NxMxV[:, :-1], option_NxM[:, 1:, None], axis=-1)[..., 0]
  counted_NxM1 = jnp.arange(1, m)[None] < option_len_N[:, None]
  total_N = jnp.where(option_len_N > 0, first_N, 0.0) + jnp.sum(
      jnp.where(counted_NxM1, later_NxM1, 0.0), axis=-1)
  return total_N.reshape(b, o)
