"""Greedy decoding with a key/value cache, for exact-match evaluation.

Every sequence starts at position 0 and is fed one token per step: its own prompt tokens while it has
them (teacher forcing), then its own greedy predictions. So prompts of different lengths need no
padding logic, and the whole decode is one `lax.scan` of single-token steps over a cache of
num_layers x N x T x G x K keys and values (G key/value heads: num_kv_heads with grouped-query
attention, else num_heads).
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp

from models import transformer


def _attend_step(attn: transformer.Attention, x_Nx1xD, cache_k_NxTxGxK, cache_v_NxTxGxK, pos):
  cfg = attn.cfg
  q_Nx1xHxK, k_Nx1xGxK, v_Nx1xGxK = attn.project(x_Nx1xD)
  positions_1 = jnp.reshape(pos, (1,))
  q_Nx1xHxK = transformer.rope(q_Nx1xHxK * cfg.head_dim**-0.5, cfg.rope_base, positions_1,
                               cfg.rope_scaling)
  k_Nx1xGxK = transformer.rope(k_Nx1xGxK, cfg.rope_base, positions_1, cfg.rope_scaling)
  cache_k_NxTxGxK = jax.lax.dynamic_update_slice_in_dim(cache_k_NxTxGxK, k_Nx1xGxK, pos, axis=1)
  cache_v_NxTxGxK = jax.lax.dynamic_update_slice_in_dim(cache_v_NxTxGxK, v_Nx1xGxK, pos, axis=1)
  # Query head h reads kv head h // R, R = H / G (R = 1 without grouped-query attention).
  n, _, h, k = q_Nx1xHxK.shape
  g = cache_k_NxTxGxK.shape[2]
  q_NxGxRxK = q_Nx1xHxK.reshape(n, g, h // g, k)
  scores_NxGxRxT = jnp.einsum('BGRK,BTGK->BGRT', q_NxGxRxK, cache_k_NxTxGxK)
  visible_T = jnp.arange(cache_k_NxTxGxK.shape[1]) <= pos
  probs_NxGxRxT = jax.nn.softmax(
      jnp.where(visible_T, scores_NxGxRxT.astype(jnp.float32), -1e30), -1)
  out_NxGxRxK = jnp.einsum('BGRT,BTGK->BGRK', probs_NxGxRxT.astype(cfg.dtype), cache_v_NxTxGxK)
  return attn.output(out_NxGxRxK.reshape(n, 1, h, k)), cache_k_NxTxGxK, cache_v_NxTxGxK


@functools.partial(jax.jit, static_argnames=('graphdef', 'max_new'))
def greedy_decode(graphdef, params, prompt_NxP, prompt_len_N, max_new: int):
  """Returns the max_new tokens each prompt continues with (greedy, EOS not treated specially)."""
  model: transformer.Transformer = nnx.merge(graphdef, params)
  cfg = model.cfg
  n, p = prompt_NxP.shape
  total = p + max_new
  shape = (cfg.num_layers, n, total, cfg.kv_heads, cfg.head_dim)
  cache = (jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype))

  def step(carry, pos):
    cache_k, cache_v, prev_N = carry
    from_prompt_N = prompt_NxP[:, jnp.minimum(pos, p - 1)]
    token_N = jnp.where(pos < prompt_len_N, from_prompt_N, prev_N)
    x_Nx1xD = model.embed(token_N[:, None])
    new_k, new_v = [], []
    for i, block in enumerate(model.blocks):
      attn_out, k_i, v_i = _attend_step(block.attn, block.attn_norm(x_Nx1xD), cache_k[i],
                                        cache_v[i], pos)
      x_Nx1xD = x_Nx1xD + attn_out
      x_Nx1xD = x_Nx1xD + block.mlp(block.mlp_norm(x_Nx1xD))
      new_k.append(k_i)
      new_v.append(v_i)
    logits_NxV = model.unembed(model.final_norm(x_Nx1xD))[:, 0]
    pred_N = jnp.argmax(logits_NxV, axis=-1).astype(jnp.int32)
    return (jnp.stack(new_k), jnp.stack(new_v), pred_N), pred_N

  init = (*cache, jnp.zeros((n,), jnp.int32))
  _, preds_SxN = jax.lax.scan(step, init, jnp.arange(total - 1))
  preds_NxS = preds_SxN.T
  # The first generated token is predicted at position len - 1.
  index_NxM = prompt_len_N[:, None] - 1 + jnp.arange(max_new)[None]
  return jnp.take_along_axis(preds_NxS, index_NxM, axis=1)
