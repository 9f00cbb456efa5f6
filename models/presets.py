"""Model presets as config sections, and the config section -> ModelConfig function.

A run's `config.model` names a preset (`tiny`, `tiny_gqa`, `quickstart`, `m13`; see
models.transformer) and may override any of its fields; a field left at 0 takes the preset's value.
So `--config.model.preset=m13` switches every field to m13's, and `--config.model.d_model=256`
changes one field of whichever preset is chosen.
"""

import jax.numpy as jnp
import ml_collections

from models import transformer

FIELDS = ('d_model', 'num_layers', 'num_heads', 'num_kv_heads', 'd_ff', 'rope_base')


def get_config(preset: str = 'quickstart') -> ml_collections.ConfigDict:
  """The `model` section of a run's config: a preset, and per-field overrides (0: the preset's)."""
  check_preset(preset)
  config = ml_collections.ConfigDict()
  config.preset = preset  # tiny | tiny_gqa | quickstart | m13: where fields left at 0 come from
  config.d_model = 0  # residual width (0: the preset's)
  config.num_layers = 0  # transformer blocks (0: the preset's)
  config.num_heads = 0  # attention heads; d_model must split into heads of even size (0: preset's)
  config.num_kv_heads = 0  # key/value heads (grouped-query attn.), divide num_heads (0: preset's)
  config.d_ff = 0  # SwiGLU hidden width (0: the preset's)
  config.rope_base = 0.0  # RoPE base frequency (0: the preset's)
  # How the model computes (any preset, and an hf: checkpoint too):
  config.dtype = 'float32'  # activations/matmuls: 'float32' | 'bfloat16' (float32 master weights)
  config.remat = 'none'  # rematerialize each block: 'none' | 'full' | 'dots' (keep matmul outputs)
  config.scan_layers = False  # blocks stacked and applied by nnx.scan (compile time flat in depth)
  return config


def check_preset(preset: str) -> None:
  if preset not in transformer.PRESETS:
    raise ValueError(f'model.preset: unknown {preset!r} (known: {", ".join(transformer.PRESETS)})')


def resolve(config: ml_collections.ConfigDict) -> dict:
  """{field: value} of a `model` section: the preset's values, with every non-zero field applied."""
  check_preset(config.preset)
  preset = transformer.PRESETS[config.preset]()
  values = {}
  for field in FIELDS:
    value = config.get(field, 0)
    if value < 0:
      raise ValueError(f'model.{field}: must be positive (or 0 for the preset\'s), got {value!r}')
    values[field] = value or getattr(preset, field)
  d, h = values['d_model'], values['num_heads']
  if d % h or (d // h) % 2:
    raise ValueError(f'model.num_heads: d_model {d} must split into {h} heads of even size')
  g = values['num_kv_heads']  # 0 (the preset's, e.g. tiny's): num_heads, multi-head attention
  if g and h % g:
    raise ValueError(f'model.num_kv_heads: {g} key/value heads must divide num_heads {h}')
  return values


DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def compute_fields(config: ml_collections.ConfigDict) -> dict:
  """{dtype, remat, scan_layers} of a `model` section (defaults where a config predates them)."""
  dtype = config.get('dtype', 'float32')
  if dtype not in DTYPES:
    raise ValueError(f'model.dtype: one of {", ".join(DTYPES)}, got {dtype!r}')
  remat = config.get('remat', 'none')
  if remat not in transformer.REMAT:
    raise ValueError(f'model.remat: one of {", ".join(transformer.REMAT)}, got {remat!r}')
  return {'dtype': DTYPES[dtype], 'remat': remat,
          'scan_layers': bool(config.get('scan_layers', False))}


def model_config(config: ml_collections.ConfigDict, seq_len: int,
                 vocab_size: int = 259) -> transformer.ModelConfig:
  """The ModelConfig a run's `config.model` describes, over the run tokenizer's vocabulary."""
  return transformer.ModelConfig(max_len=seq_len, vocab_size=vocab_size, **resolve(config),
                                 **compute_fields(config))
