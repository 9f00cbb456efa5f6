"""The Transformer's layers: RMSNorm, causal self-attention (multi-head or
grouped-query), the SwiGLU MLP and the pre-norm residual block.

Every parameter carries logical axis names ('vocab', 'embed', 'heads', 'kv',
'mlp') in its `out_sharding` metadata; `models.sharding` maps them onto a
device mesh. Parameters are created unsharded (`eager_sharding=False`): the
placement is declared once, at `jax.jit`, by the training code.
"""

import math

from flax import nnx
import jax
import jax.numpy as jnp

from models.config import ModelConfig
from models.rope import rope


def _param(rngs, init, shape, names, dtype):
  """An nnx.Param with logical axis names, left unsharded until jit."""
  init = nnx.with_partitioning(init, names, eager_sharding=False)
  return nnx.Param(init(rngs.params(), shape, dtype))


def _normal(stddev: float):
  return jax.nn.initializers.normal(stddev)


def dense(x_BxLxD, w_DxF):
  """x @ w over the last axis of x and all axes of w after the first.

  The token axes are flattened first so every matmul (and its transposes in
  the backward pass) is a single-contraction 2-D dot: with several
  contracting axes XLA canonicalizes the weight-gradient dot by transposing
  the big activation gradient, which costs ~20% of a CPU train step.
  """
  *lead, d = x_BxLxD.shape
  w_shape = w_DxF.shape[1:]
  y_NxF = jnp.dot(x_BxLxD.reshape(-1, d), w_DxF.reshape(d, -1))
  return y_NxF.reshape(*lead, *w_shape)


class RMSNorm(nnx.Module):
  """Root-mean-square layer norm with a learned scale."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.eps = cfg.norm_eps
    self.scale = _param(
        rngs, jax.nn.initializers.ones, (cfg.d_model,), ('embed',),
        cfg.param_dtype)

  def __call__(self, x_BxLxD):
    x32 = x_BxLxD.astype(jnp.float32)
    rms = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32 * rms * self.scale[...]).astype(x_BxLxD.dtype)


class Attention(nnx.Module):
  """Causal self-attention: multi-head, or grouped-query (G < H kv heads).

  Multi-head attention stores Q, K, V as one fused (D, 3, H, K) kernel;
  grouped-query attention a (D, H, K) query kernel and a (D, 2, G, K)
  key/value kernel, query head h attending with key/value head h // (H / G).
  """

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, h, g, k = cfg.d_model, cfg.num_heads, cfg.kv_heads, cfg.head_dim
    if cfg.grouped:
      self.q_DxHxK = _param(
          rngs, _normal(d**-0.5), (d, h, k), ('embed', 'heads', 'kv'),
          cfg.param_dtype)
      self.kv_Dx2xGxK = _param(
          rngs, _normal(d**-0.5), (d, 2, g, k), ('embed', None, 'heads', 'kv'),
          cfg.param_dtype)
    else:
      self.qkv_Dx3xHxK = _param(
          rngs, _normal(d**-0.5), (d, 3, h, k), ('embed', None, 'heads', 'kv'),
          cfg.param_dtype)
    if cfg.qkv_bias:  # (3, H, K) fused, or q (H, K) and kv (2, G, K) with GQA
      zeros = jax.nn.initializers.zeros
      if cfg.grouped:
        self.q_bias_HxK = _param(rngs, zeros, (h, k), ('heads', 'kv'), cfg.param_dtype)
        self.kv_bias_2xGxK = _param(rngs, zeros, (2, g, k), (None, 'heads', 'kv'),
                                    cfg.param_dtype)
      else:
        self.qkv_bias_3xHxK = _param(rngs, zeros, (3, h, k), (None, 'heads', 'kv'),
                                     cfg.param_dtype)
    out_std = (h * k) ** -0.5 / math.sqrt(2 * cfg.num_layers)
    self.out_HxKxD = _param(
        rngs, _normal(out_std), (h, k, d), ('heads', 'kv', 'embed'),
        cfg.param_dtype)

  def project(self, x_BxLxD):
    """Queries q_BxLxHxK and keys, values k/v_BxLxGxK, before RoPE.

    A fused kernel is sliced on the (small) weight side and applied as
    separate dots: slicing a fused (B, L, 3, H, K) activation instead makes
    the backward pass build a padded copy of its gradient.
    """
    dtype = self.cfg.dtype
    if self.cfg.grouped:
      kv_Dx2xGxK = self.kv_Dx2xGxK[...].astype(dtype)
      qkv = (dense(x_BxLxD, self.q_DxHxK[...].astype(dtype)),
             dense(x_BxLxD, kv_Dx2xGxK[:, 0]),
             dense(x_BxLxD, kv_Dx2xGxK[:, 1]))
      if self.cfg.qkv_bias:
        kv_bias_2xGxK = self.kv_bias_2xGxK[...].astype(dtype)
        biases = (self.q_bias_HxK[...].astype(dtype), kv_bias_2xGxK[0], kv_bias_2xGxK[1])
    else:
      qkv_Dx3xHxK = self.qkv_Dx3xHxK[...].astype(dtype)
      qkv = tuple(dense(x_BxLxD, qkv_Dx3xHxK[:, i]) for i in range(3))
      if self.cfg.qkv_bias:
        biases = tuple(self.qkv_bias_3xHxK[...].astype(dtype))
    if self.cfg.qkv_bias:
      qkv = tuple(y + b for y, b in zip(qkv, biases))
    return qkv

  def output(self, out_BxLxHxK):
    """Per-head attention outputs -> the residual update, x_BxLxD."""
    b, length, h, k = out_BxLxHxK.shape
    out_HKxD = self.out_HxKxD[...].astype(self.cfg.dtype).reshape(h * k, -1)
    return dense(out_BxLxHxK.reshape(b, length, h * k), out_HKxD)

  def __call__(self, x_BxLxD):
    cfg = self.cfg
    q_BxLxHxK, k_BxLxGxK, v_BxLxGxK = self.project(x_BxLxD)
    q_BxLxHxK = rope(q_BxLxHxK, cfg.rope_base, None, cfg.rope_scaling)
    k_BxLxGxK = rope(k_BxLxGxK, cfg.rope_base, None, cfg.rope_scaling)
    # Causal attention, query head h reading kv head h // (H / G): XLA's
    # implementation here, cuDNN's flash attention on a GPU where it applies.
    out_BxLxHxK = jax.nn.dot_product_attention(
        q_BxLxHxK, k_BxLxGxK, v_BxLxGxK, scale=cfg.head_dim**-0.5,
        is_causal=True)
    return self.output(out_BxLxHxK)


@jax.custom_vjp
def swiglu(gate_BxLxF, up_BxLxF):
  """silu(gate) * up, with a hand-written VJP that saves only its inputs.

  Autodiff would also store sigmoid(gate) and silu(gate) and spread the
  backward over several elementwise passes; this keeps one pass each way.
  """
  return jax.nn.silu(gate_BxLxF) * up_BxLxF


def _swiglu_fwd(gate_BxLxF, up_BxLxF):
  return swiglu(gate_BxLxF, up_BxLxF), (gate_BxLxF, up_BxLxF)


def _swiglu_bwd(res, dh_BxLxF):
  gate_BxLxF, up_BxLxF = res
  # sigmoid via tanh so XLA does not CSE it with the forward pass's sigmoid
  # (which would store it as a residual instead of fusing it away).
  sig_BxLxF = 0.5 + 0.5 * jnp.tanh(0.5 * gate_BxLxF)
  dgate_BxLxF = dh_BxLxF * up_BxLxF * sig_BxLxF * (
      1 + gate_BxLxF * (1 - sig_BxLxF))
  return dgate_BxLxF, dh_BxLxF * gate_BxLxF * sig_BxLxF


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


class Mlp(nnx.Module):
  """SwiGLU MLP: down(silu(x @ gate) * (x @ up)); gate/up stored fused."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, f = cfg.d_model, cfg.d_ff
    self.gate_up_Dx2xF = _param(
        rngs, _normal(d**-0.5), (d, 2, f), ('embed', None, 'mlp'),
        cfg.param_dtype)
    self.down_FxD = _param(
        rngs, _normal(f**-0.5 / math.sqrt(2 * cfg.num_layers)), (f, d),
        ('mlp', 'embed'), cfg.param_dtype)

  def __call__(self, x_BxLxD):
    dtype = self.cfg.dtype  # Gate and up: two dots, as for QKV above.
    gate_up_Dx2xF = self.gate_up_Dx2xF[...].astype(dtype)
    gate_BxLxF = dense(x_BxLxD, gate_up_Dx2xF[:, 0])
    up_BxLxF = dense(x_BxLxD, gate_up_Dx2xF[:, 1])
    h_BxLxF = swiglu(gate_BxLxF, up_BxLxF)
    return dense(h_BxLxF, self.down_FxD[...].astype(dtype))


class Block(nnx.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.attn_norm = RMSNorm(cfg, rngs=rngs)
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg, rngs=rngs)
    self.mlp = Mlp(cfg, rngs=rngs)

  def __call__(self, x_BxLxD):
    x_BxLxD += self.attn(self.attn_norm(x_BxLxD))
    return x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD))
