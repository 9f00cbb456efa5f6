"""Greedy decoding with a key/value cache, for exact-match evaluation.

Every sequence starts at position 0 and is fed one token per step: its own prompt tokens while it has
them (teacher forcing), then its own greedy predictions. So prompts of different lengths need no
padding logic, and the whole decode is one `lax.scan` of single-token steps over a cache of
num_layers x N x T x H x K keys and values.
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp

from models import transformer


def _attend_step(attn: transformer.Attention, x_Nx1xD, cache_k_NxTxHxK, cache_v_NxTxHxK, pos):
  cfg = attn.cfg
  qkv_Nx1x3xHxK = jnp.einsum('BLD,DTHK->BLTHK', x_Nx1xD, attn.qkv_Dx3xHxK[...].astype(cfg.dtype))
  positions_1 = jnp.reshape(pos, (1,))
  q_Nx1xHxK = transformer.rope(qkv_Nx1x3xHxK[:, :, 0], cfg.rope_base, positions_1)
  k_Nx1xHxK = transformer.rope(qkv_Nx1x3xHxK[:, :, 1], cfg.rope_base, positions_1)
  cache_k_NxTxHxK = jax.lax.dynamic_update_slice_in_dim(cache_k_NxTxHxK, k_Nx1xHxK, pos, axis=1)
  cache_v_NxTxHxK = jax.lax.dynamic_update_slice_in_dim(
      cache_v_NxTxHxK, qkv_Nx1x3xHxK[:, :, 2], pos, axis=1)
  scores_NxHxT = jnp.einsum('BHK,BTHK->BHT', q_Nx1xHxK[:, 0] * cfg.head_dim**-0.5, cache_k_NxTxHxK)
  visible_T = jnp.arange(cache_k_NxTxHxK.shape[1]) <= pos
  probs_NxHxT = jax.nn.softmax(jnp.where(visible_T, scores_NxHxT.astype(jnp.float32), -1e30), -1)
  out_NxHxK = jnp.einsum('BHT,BTHK->BHK', probs_NxHxT.astype(cfg.dtype), cache_v_NxTxHxK)
  out_NxD = jnp.einsum('BHK,HKD->BD', out_NxHxK, attn.out_HxKxD[...].astype(cfg.dtype))
  return out_NxD[:, None], cache_k_NxTxHxK, cache_v_NxTxHxK


@functools.partial(jax.jit, static_argnames=('graphdef', 'max_new'))
def greedy_decode(graphdef, params, prompt_NxP, prompt_len_N, max_new: int):
  """Returns the max_new tokens each prompt continues with (greedy, EOS not treated specially)."""
  model: transformer.Transformer = nnx.merge(graphdef, params)
  cfg = model.cfg
  n, p = prompt_NxP.shape
  total = p + max_new
  shape = (cfg.num_layers, n, total, cfg.num_heads, cfg.head_dim)
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
