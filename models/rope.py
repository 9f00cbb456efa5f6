"""Rotary position embedding (rotate-half form, as Llama, Qwen2 and Mistral in Hugging Face use it),
with Llama 3's frequency scaling for long contexts."""

import math

import jax.numpy as jnp


def inv_freq(head_dim: int, base: float, scaling: tuple = ()) -> jnp.ndarray:
  """The head_dim / 2 rotation frequencies; scaling = (factor, low_freq_factor, high_freq_factor,
  original_max_position_embeddings) applies Llama 3's rule ('llama3' rope_type), () none.

  Llama 3: wavelengths shorter than original / high_freq_factor keep their frequency, longer than
  original / low_freq_factor are divided by factor, and those between are interpolated smoothly.
  """
  freq_K2 = base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  if not scaling:
    return freq_K2
  factor, low, high, original = scaling
  wavelen_K2 = 2 * math.pi / freq_K2
  smooth_K2 = (original / wavelen_K2 - low) / (high - low)
  smoothed_K2 = (1 - smooth_K2) * freq_K2 / factor + smooth_K2 * freq_K2
  return jnp.where(wavelen_K2 < original / high, freq_K2,
                   jnp.where(wavelen_K2 > original / low, freq_K2 / factor, smoothed_K2))


def rope(x_BxLxHxK, base: float, positions=None, scaling: tuple = ()):
  """Rotary embedding (rotate-half form) at `positions`: shape L (every row the same; default
  0..L-1) or B x L (a position per row and token)."""
  length, k = x_BxLxHxK.shape[1], x_BxLxHxK.shape[-1]
  if positions is None:
    positions = jnp.arange(length)
  angle_xLxK2 = positions.astype(jnp.float32)[..., None] * inv_freq(k, base, scaling)
  angle_xLx1xK = jnp.concatenate([angle_xLxK2, angle_xLxK2], axis=-1)[..., None, :]
  sin_Lx1xK = jnp.sin(angle_xLx1xK).astype(x_BxLxHxK.dtype)
  cos_Lx1xK = jnp.cos(angle_xLx1xK).astype(x_BxLxHxK.dtype)
  x1, x2 = jnp.split(x_BxLxHxK, 2, axis=-1)
  rotated_BxLxHxK = jnp.concatenate([-x2, x1], axis=-1)
  return x_BxLxHxK * cos_Lx1xK + rotated_BxLxHxK * sin_Lx1xK
