"""Decoder-only Transformer LM in flax.nnx: RoPE, pre-RMSNorm, SwiGLU
(the layers: models/layers.py; the hyper-parameters: models/config.py).

With grouped-query attention (`num_kv_heads` < `num_heads`) the key/value heads
are named 'heads' too: they shard over the model axis with their query groups
when it divides them, else they are replicated. With `scan_layers` the blocks
are one Block whose parameters carry a leading 'layers' axis, applied by
nnx.scan; `remat` rematerializes each block's activations in the backward pass.

Embeddings are untied by default: the input table is (vocab, embed) and the
output projection a separate (embed, vocab) kernel (`tie_embeddings`: the
table's transpose, as Qwen2-0.5B and SmolLM have it). Both are padded to
`cfg.padded_vocab` rows/columns; the padding columns are sliced off before the
logits are returned, so the model is a proper softmax over `cfg.vocab_size`.
"""

from flax import nnx
import jax
import jax.numpy as jnp

# The names other modules and tests use as models.transformer.<name>.
from models.config import REMAT, ModelConfig  # pylint: disable=unused-import
from models.layers import Attention, Block, Mlp, RMSNorm, _normal, _param, dense, swiglu  # pylint: disable=unused-import
from models import sharding
from models.rope import rope  # pylint: disable=unused-import

# What a rematerialized block keeps for the backward pass.
REMAT_POLICIES = {'full': None,  # only its input
                  'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


class Transformer(nnx.Module):
  """Decoder-only LM: tokens_BxL int32 -> float32 logits_BxLxV."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    vp, d = cfg.padded_vocab, cfg.d_model
    self.embed_VxD = _param(
        rngs, _normal(1.0), (vp, d), ('vocab', 'embed'), cfg.param_dtype)
    if cfg.scan_layers:  # one Block whose parameters have a leading layer axis
      @nnx.split_rngs(splits=cfg.num_layers)
      @nnx.vmap(in_axes=0, out_axes=0,
                transform_metadata={nnx.PARTITION_NAME: 'layers'})
      def stacked(rngs):
        return Block(cfg, rngs=rngs)
      self.blocks = stacked(rngs)
    else:
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
    cfg = self.cfg
    apply = lambda block, x_BxLxD: block(x_BxLxD)
    if cfg.remat != 'none':
      apply = nnx.remat(apply, policy=REMAT_POLICIES[cfg.remat])
    apply_constrained = lambda block, x_BxLxD: sharding.constrain_batch(
        apply(block, x_BxLxD))
    x_BxLxD = sharding.constrain_batch(self.embed(tokens_BxL))
    if cfg.scan_layers:
      scan = nnx.scan(apply_constrained, in_axes=(0, nnx.Carry), out_axes=nnx.Carry,
                      transform_metadata={nnx.PARTITION_NAME: 'layers'})
      x_BxLxD = scan(self.blocks, x_BxLxD)
    else:
      for block in self.blocks:
        x_BxLxD = apply_constrained(block, x_BxLxD)
    return self.unembed(self.final_norm(x_BxLxD))


def path_name(path) -> str:
  """A flattened-state path as 'blocks.0.attn.q_DxHxK' (no trailing '.value')."""
  keys = [str(getattr(p, 'key', getattr(p, 'name', getattr(p, 'idx', p)))) for p in path]
  return '.'.join(keys).removesuffix('.value')


def flat_params(params) -> dict:
  """{name: array} with one 'blocks.<i>.X' per layer, whether the model scans its layers or not."""
  out = {}
  for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_name(path)
    if name.startswith('blocks.') and not name.split('.')[1].isdigit():
      out.update({f'blocks.{i}.{name[7:]}': x[i] for i in range(x.shape[0])})
    else:
      out[name] = x
  return out


def relayout(params, like):
  """`params` in `like`'s structure: a per-layer model's as a scanned one's, or back."""
  flat = flat_params(params)

  def take(path, leaf):
    name = path_name(path)
    if name in flat:
      return flat[name]
    return jnp.stack([flat[f'blocks.{i}.{name[7:]}'] for i in range(leaf.shape[0])])
  return jax.tree_util.tree_map_with_path(take, like)


def layer_blocks(model: Transformer) -> list[Block]:
  """The model's blocks in order (a scanned model's stack, sliced per layer)."""
  if not model.cfg.scan_layers:
    return list(model.blocks)
  graphdef, state = nnx.split(model.blocks)
  return [nnx.merge(graphdef, jax.tree.map(lambda x, i=i: x[i], state))
          for i in range(model.cfg.num_layers)]


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
