"""The Transformer's hyper-parameters (models/transformer.py, models/layers.py)."""

import dataclasses

import jax.numpy as jnp

REMAT = ('none', 'full', 'dots')


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
  # bfloat16 with float32 param_dtype: bf16 compute over float32 master weights.
  dtype: jnp.dtype = jnp.float32
  # Dtype the parameters are stored in.
  param_dtype: jnp.dtype = jnp.float32
  # Activation rematerialization per block: 'none', 'full' (save only the
  # block's input) or 'dots' (save matmul outputs, recompute the rest).
  remat: str = 'none'
  # One block's parameters stacked over a leading 'layers' axis and applied
  # with a scan (nnx.scan): compile time does not grow with depth.
  scan_layers: bool = False

  def __post_init__(self):
    if self.remat not in REMAT:
      raise ValueError(f'model.remat: one of {", ".join(REMAT)}, got {self.remat!r}')
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
