"""Decoder-only Transformer LM in flax.nnx: RoPE, pre-RMSNorm, SwiGLU.

Every parameter carries logical axis names ('vocab', 'embed', 'heads', 'kv',
'mlp') in its `out_sharding` metadata; `models.sharding` maps them onto a
device mesh. With grouped-query attention (`num_kv_heads` < `num_heads`) the
key/value heads are named 'heads' too: they shard over the model axis with
their query groups when it divides them, else they are replicated.
Parameters are created unsharded (`eager_sharding=False`): the placement is
declared once, at `jax.jit`, by the training code.

Embeddings are untied by default: the input table is (vocab, embed) and the
output projection a separate (embed, vocab) kernel (`tie_embeddings`: the
table's transpose, as Qwen2-0.5B and SmolLM have it). Both are padded to
`cfg.padded_vocab` rows/columns; the padding columns are sliced off before the
logits are returned, so the model is a proper softmax over `cfg.vocab_size`.
"""

import dataclasses
import math

from flax import nnx
import jax
import jax.numpy as jnp

from models.rope import rope  # pylint: disable=unused-import  # models.transformer.rope


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of `Transformer`."""

  # Real vocabulary: 256 bytes + BOS/EOS/PAD (see mixing/data/tokenizer.py).
  vocab_size: int = 259
  # Width of the residual stream.
  d_model: int = 512
  # Number of Transformer blocks.
  num_layers: int = 4
  # Attention heads; head_dim = d_model // num_heads.
  num_heads: int = 4
  # Key/value heads, shared by num_heads // num_kv_heads query heads each
  # (grouped-query attention); 0: num_heads (multi-head attention).
  num_kv_heads: int = 0
  # Hidden width of the SwiGLU MLP (gate and up projections each).
  d_ff: int = 1408
  # Longest sequence the model is meant for (RoPE itself has no table).
  max_len: int = 256
  # RoPE base frequency.
  rope_base: float = 10_000.0
  # Llama 3 RoPE scaling (factor, low_freq_factor, high_freq_factor,
  # original_max_position_embeddings); () for none. See models/rope.py.
  rope_scaling: tuple = ()
  # Biases on the query/key/value projections (Qwen2); none elsewhere.
  qkv_bias: bool = False
  # The output projection is the input embedding's transpose (no own kernel).
  tie_embeddings: bool = False
  # Embedding/unembedding rows are padded to a multiple of this (speed and
  # shardability); padded logits are dropped, never part of the softmax.
  vocab_multiple: int = 8
  # Epsilon inside RMSNorm.
  norm_eps: float = 1e-6
  # Input embedding: 'take' (gather) or 'one_hot' (one-hot @ table matmul).
  embed_lookup: str = 'take'
  # Dtype of activations and matmuls; logits are always returned in float32.
  dtype: jnp.dtype = jnp.float32
  # Dtype the parameters are stored in.
  param_dtype: jnp.dtype = jnp.float32

  def __post_init__(self):
    g, h = self.num_kv_heads, self.num_heads
    if g < 0 or (g and h % g):
      raise ValueError(f'model.num_kv_heads: must divide num_heads {h} (or be '
                       f'0 for num_heads), got {g}')

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def kv_heads(self) -> int:
    """Key/value heads: num_kv_heads, or num_heads when that is 0."""
    return self.num_kv_heads or self.num_heads

  @property
  def grouped(self) -> bool:
    """Grouped-query attention: fewer key/value heads than query heads."""
    return self.kv_heads < self.num_heads

  @property
  def padded_vocab(self) -> int:
    m = self.vocab_multiple
    return -(-self.vocab_size // m) * m


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
    q_BxLxHxK = rope(q_BxLxHxK * cfg.head_dim**-0.5, cfg.rope_base, None, cfg.rope_scaling)
    k_BxLxGxK = rope(k_BxLxGxK, cfg.rope_base, None, cfg.rope_scaling)
    b, length, h, k = q_BxLxHxK.shape
    causal_LxL = jnp.tril(jnp.ones((length, length), dtype=jnp.bool_))

    def causal_softmax(scores_xLxL):
      scores_xLxL = jnp.where(causal_LxL, scores_xLxL.astype(jnp.float32),
                              -1e30)
      return jax.nn.softmax(scores_xLxL, axis=-1).astype(cfg.dtype)

    if cfg.grouped:
      # Each kv head serves a group of R = H / G consecutive query heads: a
      # grouped einsum, no repeated copy of the keys and values.
      g = cfg.kv_heads
      q_BxLxGxRxK = q_BxLxHxK.reshape(b, length, g, h // g, k)
      probs_BxGxRxLxL = causal_softmax(jnp.einsum(
          'BLGRK,BMGK->BGRLM', q_BxLxGxRxK, k_BxLxGxK))
      out_BxLxGxRxK = jnp.einsum('BGRLM,BMGK->BLGRK', probs_BxGxRxLxL,
                                 v_BxLxGxK)
      return self.output(out_BxLxGxRxK.reshape(b, length, h, k))
    # Multi-head attention: G = H.
    probs_BxHxLxL = causal_softmax(jnp.einsum(
        'BLHK,BMHK->BHLM', q_BxLxHxK, k_BxLxGxK))
    out_BxLxHxK = jnp.einsum('BHLM,BMHK->BLHK', probs_BxHxLxL, v_BxLxGxK)
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


class Transformer(nnx.Module):
  """Decoder-only LM: tokens_BxL int32 -> float32 logits_BxLxV."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    vp, d = cfg.padded_vocab, cfg.d_model
    self.embed_VxD = _param(
        rngs, _normal(1.0), (vp, d), ('vocab', 'embed'), cfg.param_dtype)
    self.blocks = nnx.List([Block(cfg, rngs=rngs)
                            for _ in range(cfg.num_layers)])
    self.final_norm = RMSNorm(cfg, rngs=rngs)
    if not cfg.tie_embeddings:
      self.unembed_DxV = _param(
          rngs, _normal(d**-0.5), (d, vp), ('embed', 'vocab'), cfg.param_dtype)

  def embed(self, tokens_BxL):
    cfg = self.cfg
    table_VxD = self.embed_VxD[...].astype(cfg.dtype)
    if cfg.embed_lookup == 'one_hot':
      one_hot_BxLxV = jax.nn.one_hot(tokens_BxL, cfg.padded_vocab,
                                     dtype=cfg.dtype)
      return jnp.einsum('BLV,VD->BLD', one_hot_BxLxV, table_VxD)
    return jnp.take(table_VxD, tokens_BxL, axis=0)

  def unembed(self, x_BxLxD):
    """Final-normed activations -> float32 logits over the real vocabulary."""
    if self.cfg.tie_embeddings:
      table_DxV = self.embed_VxD[...].astype(self.cfg.dtype).T
    else:
      table_DxV = self.unembed_DxV[...].astype(self.cfg.dtype)
    logits_BxLxVp = dense(x_BxLxD, table_DxV)
    return logits_BxLxVp[..., :self.cfg.vocab_size].astype(jnp.float32)

  def __call__(self, tokens_BxL):
    x_BxLxD = self.embed(tokens_BxL)
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD)
    return self.unembed(self.final_norm(x_BxLxD))


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward), PaLM appendix B style.

  flops = 6 * N_matmul + 6 * d_model * vocab_size
          + 12 * num_layers * d_model * seq_len

  where N_matmul = num_layers * (2 * d_model**2 + 2 * d_model * d_kv
  + 3 * d_model * d_ff) are the non-embedding matmul weights (Q and output
  d^2 each; K and V d*d_kv each, d_kv = d * num_kv_heads / num_heads, = d
  without GQA; SwiGLU gate, up and down 3*d*d_ff), the second term is the
  output projection over the real (unpadded) vocabulary, and the third is
  QK^T and AV counted over the full (non-causal) L x L score matrix, for
  every query head (GQA shares keys and values, not these matmuls). The
  input-embedding lookup, norms, RoPE, softmax and optimizer are not counted;
  nor are padded vocabulary columns.
  """
  d, f, n = cfg.d_model, cfg.d_ff, cfg.num_layers
  d_kv = d * cfg.kv_heads // cfg.num_heads
  matmul_params = n * (2 * d * d + 2 * d * d_kv + 3 * d * f)
  return float(6 * matmul_params + 6 * d * cfg.vocab_size
               + 12 * n * d * seq_len)


def param_count(model: nnx.Module) -> int:
  """Total number of parameters (including padded embedding rows)."""
  params = nnx.state(model, nnx.Param)
  return sum(int(x.size) for x in jax.tree.leaves(params))


def tiny() -> ModelConfig:
  """For unit tests: 2 layers, d_model 64."""
  return ModelConfig(d_model=64, num_layers=2, num_heads=4, d_ff=128,
                     max_len=64)


def quickstart() -> ModelConfig:
  """Trains in minutes on a laptop CPU: 2 layers, d_model 128 (~0.5M)."""
  return ModelConfig(d_model=128, num_layers=2, num_heads=4, d_ff=384,
                     max_len=256)


def m13() -> ModelConfig:
  """~13.1M parameters: 4 layers x d_model 512, 4 heads of 128, d_ff 1408.

  At a fixed ~13M, few wide layers keep every matmul large (best CPU MFU in
  experiments/recipes/bench_model.py: d384 x 7-8 layers was ~10% worse).
  """
  return ModelConfig(d_model=512, num_layers=4, num_heads=4, d_ff=1408,
                     max_len=256)


def tiny_gqa() -> ModelConfig:
  """For unit tests, Llama-3-like: 3 layers, d_model 96, GQA 6/2, RoPE 5e5."""
  return ModelConfig(d_model=96, num_layers=3, num_heads=6, num_kv_heads=2,
                     d_ff=128, max_len=64, rope_base=500_000.0)


PRESETS = {'tiny': tiny, 'tiny_gqa': tiny_gqa, 'quickstart': quickstart,
           'm13': m13}
