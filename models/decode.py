"""Greedy decoding with a key/value cache, for exact-match evaluation.

`greedy_decode` prefills: one forward pass over the (right-padded) prompts computes every layer's
keys and values and the first new token, then a `lax.scan` of single-token steps generates the rest,
each sequence at its own position (its prompt length plus the step). A cache holds
num_layers x N x T x G x K keys and values (G key/value heads: num_kv_heads with grouped-query
attention, else num_heads). Positions past a prompt's end hold the padding's keys until that
sequence writes its own there; a sequence attends only to positions up to its own, so they are never
read. `greedy_decode_stepwise` is the earlier decoder (every prompt token a single-token step),
kept as the reference and for the benchmark.
"""

import functools

from flax import nnx
import jax
import jax.numpy as jnp

from models import transformer


def _attend_step(attn: transformer.Attention, x_Nx1xD, cache_k_NxTxGxK, cache_v_NxTxGxK, pos):
  """One new token per sequence at position `pos` (a scalar, or one per sequence)."""
  cfg = attn.cfg
  n = x_Nx1xD.shape[0]
  pos_N = jnp.broadcast_to(jnp.asarray(pos, jnp.int32), (n,))
  q_Nx1xHxK, k_Nx1xGxK, v_Nx1xGxK = attn.project(x_Nx1xD)
  q_Nx1xHxK = transformer.rope(q_Nx1xHxK * cfg.head_dim**-0.5, cfg.rope_base, pos_N[:, None],
                               cfg.rope_scaling)
  k_Nx1xGxK = transformer.rope(k_Nx1xGxK, cfg.rope_base, pos_N[:, None], cfg.rope_scaling)
  rows_N = jnp.arange(n)
  cache_k_NxTxGxK = cache_k_NxTxGxK.at[rows_N, pos_N].set(k_Nx1xGxK[:, 0])
  cache_v_NxTxGxK = cache_v_NxTxGxK.at[rows_N, pos_N].set(v_Nx1xGxK[:, 0])
  # Query head h reads kv head h // R, R = H / G (R = 1 without grouped-query attention).
  _, _, h, k = q_Nx1xHxK.shape
  g = cache_k_NxTxGxK.shape[2]
  q_NxGxRxK = q_Nx1xHxK.reshape(n, g, h // g, k)
  scores_NxGxRxT = jnp.einsum('BGRK,BTGK->BGRT', q_NxGxRxK, cache_k_NxTxGxK)
  visible_NxT = jnp.arange(cache_k_NxTxGxK.shape[1])[None] <= pos_N[:, None]
  probs_NxGxRxT = jax.nn.softmax(jnp.where(visible_NxT[:, None, None],
                                           scores_NxGxRxT.astype(jnp.float32), -1e30), -1)
  out_NxGxRxK = jnp.einsum('BGRT,BTGK->BGRK', probs_NxGxRxT.astype(cfg.dtype), cache_v_NxTxGxK)
  return attn.output(out_NxGxRxK.reshape(n, 1, h, k)), cache_k_NxTxGxK, cache_v_NxTxGxK


def _token_step(model, blocks, cache_k, cache_v, token_N, pos):
  """Feeds one token per sequence; returns (greedy next token_N, updated caches)."""
  x_Nx1xD = model.embed(token_N[:, None])
  new_k, new_v = [], []
  for i, block in enumerate(blocks):
    attn_out, k_i, v_i = _attend_step(block.attn, block.attn_norm(x_Nx1xD), cache_k[i],
                                      cache_v[i], pos)
    x_Nx1xD = x_Nx1xD + attn_out
    x_Nx1xD = x_Nx1xD + block.mlp(block.mlp_norm(x_Nx1xD))
    new_k.append(k_i)
    new_v.append(v_i)
  logits_NxV = model.unembed(model.final_norm(x_Nx1xD))[:, 0]
  return jnp.argmax(logits_NxV, axis=-1).astype(jnp.int32), jnp.stack(new_k), jnp.stack(new_v)


def prefill(model, blocks, prompt_NxP):
  """One causal forward over the prompts: (final-normed activations x_NxPxD, keys and values per
  layer, after RoPE); `model.unembed` of a position gives its logits."""
  cfg = model.cfg
  x_NxPxD = model.embed(prompt_NxP)
  keys, values = [], []
  for block in blocks:
    q, k, v = block.attn.project(block.attn_norm(x_NxPxD))
    q = transformer.rope(q, cfg.rope_base, None, cfg.rope_scaling)
    k = transformer.rope(k, cfg.rope_base, None, cfg.rope_scaling)
    out = jax.nn.dot_product_attention(q, k, v, scale=cfg.head_dim**-0.5, is_causal=True)
    x_NxPxD = x_NxPxD + block.attn.output(out)
    x_NxPxD = x_NxPxD + block.mlp(block.mlp_norm(x_NxPxD))
    keys.append(k)
    values.append(v)
  return model.final_norm(x_NxPxD), jnp.stack(keys), jnp.stack(values)


@functools.partial(jax.jit, static_argnames=('graphdef', 'max_new'))
def greedy_decode(graphdef, params, prompt_NxP, prompt_len_N, max_new: int):
  """The max_new tokens each prompt continues with (greedy, EOS not treated specially).

  prompt_NxP: prompts right-padded to a common length; prompt_len_N: their lengths (>= 1).
  """
  model: transformer.Transformer = nnx.merge(graphdef, params)
  cfg = model.cfg
  blocks = transformer.layer_blocks(model)
  n, p = prompt_NxP.shape
  x_NxPxD, keys, values = prefill(model, blocks, prompt_NxP)
  last_NxD = jnp.take_along_axis(x_NxPxD, (prompt_len_N - 1)[:, None, None], axis=1)[:, 0]
  first_N = jnp.argmax(model.unembed(last_NxD), axis=-1).astype(jnp.int32)
  shape = (cfg.num_layers, n, p + max_new, cfg.kv_heads, cfg.head_dim)
  pad = lambda kv: jnp.zeros(shape, cfg.dtype).at[:, :, :p].set(kv.astype(cfg.dtype))
  cache = (pad(keys), pad(values))

  def step(carry, t):
    cache_k, cache_v, token_N = carry
    next_N, cache_k, cache_v = _token_step(model, blocks, cache_k, cache_v, token_N,
                                           prompt_len_N + t)
    return (cache_k, cache_v, next_N), next_N

  _, rest_SxN = jax.lax.scan(step, (*cache, first_N), jnp.arange(max_new - 1))
  return jnp.concatenate([first_N[:, None], rest_SxN.T], axis=1)


@functools.partial(jax.jit, static_argnames=('graphdef', 'max_new'))
def greedy_decode_stepwise(graphdef, params, prompt_NxP, prompt_len_N, max_new: int):
  """greedy_decode without a prefill: every prompt token is a single-token step (teacher forcing),
  then the sequence's own predictions."""
  model: transformer.Transformer = nnx.merge(graphdef, params)
  cfg = model.cfg
  blocks = transformer.layer_blocks(model)
  n, p = prompt_NxP.shape
  total = p + max_new
  shape = (cfg.num_layers, n, total, cfg.kv_heads, cfg.head_dim)
  cache = (jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype))

  def step(carry, pos):
    cache_k, cache_v, prev_N = carry
    from_prompt_N = prompt_NxP[:, jnp.minimum(pos, p - 1)]
    token_N = jnp.where(pos < prompt_len_N, from_prompt_N, prev_N)
    pred_N, cache_k, cache_v = _token_step(model, blocks, cache_k, cache_v, token_N, pos)
    return (cache_k, cache_v, pred_N), pred_N

  init = (*cache, jnp.zeros((n,), jnp.int32))
  _, preds_SxN = jax.lax.scan(step, init, jnp.arange(total - 1))
  # The first generated token is predicted at position len - 1.
  index_NxM = prompt_len_N[:, None] - 1 + jnp.arange(max_new)[None]
  return jnp.take_along_axis(preds_SxN.T, index_NxM, axis=1)
