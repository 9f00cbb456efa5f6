"""Model presets as ConfigDicts: tiny (tests), quickstart (~0.5M) and m13 (~13M), from models.transformer."""

import ml_collections

from models import transformer

_FIELDS = ('d_model', 'num_layers', 'num_heads', 'd_ff', 'rope_base')


def get_config(preset: str = 'quickstart') -> ml_collections.ConfigDict:
  """The preset's fields; override any of them with --config.model.FIELD=VALUE."""
  if preset not in transformer.PRESETS:
    raise ValueError(f'model.preset: unknown {preset!r} (known: {", ".join(transformer.PRESETS)})')
  cfg = transformer.PRESETS[preset]()
  config = ml_collections.ConfigDict()
  config.preset = preset  # the preset these values started from (informational)
  config.d_model = cfg.d_model  # residual width
  config.num_layers = cfg.num_layers  # transformer blocks
  config.num_heads = cfg.num_heads  # attention heads (d_model must be divisible by it)
  config.d_ff = cfg.d_ff  # SwiGLU hidden width
  config.rope_base = cfg.rope_base  # RoPE base frequency
  return config


def model_config(config: ml_collections.ConfigDict, seq_len: int) -> transformer.ModelConfig:
  """The ModelConfig a run's `config.model` describes."""
  return transformer.ModelConfig(max_len=seq_len, **{k: config[k] for k in _FIELDS})
