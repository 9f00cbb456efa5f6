"""Static baselines: the config's weights, uniform, proportional to domain size, and temperature
sampling (T5-style cap)."""

from typing import Sequence

import numpy as np

from mixing import registry
from mixing.mixer import DomainInfo, Static


def temperature_weights(sizes_D, temperature: float, cap: float | None = None) -> np.ndarray:
  """w_d proportional to min(n_d, cap)^(1/T): T=1 is proportional, T -> inf uniform."""
  if temperature <= 0:
    raise ValueError(f'mixer.temperature.temperature: must be > 0, got {temperature}')
  if cap is not None and cap < 1:
    raise ValueError(f'mixer.temperature.cap: must be >= 1 (tokens), got {cap}')
  n_D = np.asarray(sizes_D, np.float64)
  if cap is not None:
    n_D = np.minimum(n_D, cap)
  w_D = n_D ** (1.0 / temperature)
  return w_D / w_D.sum()


class SizeBased(Static):
  """A static mixture computed from domain sizes when the run starts."""

  def __init__(self, temperature: float = 1.0, cap: float | None = None):
    temperature_weights([1.0], temperature, cap)  # validates now, before any data is built
    super().__init__()
    self.temperature, self.cap = temperature, cap

  def init(self, domains: Sequence[DomainInfo]):
    self._weights = temperature_weights([d.num_tokens for d in domains], self.temperature,
                                        self.cap)
    return super().init(domains)


def uniform() -> Static:
  return Static(None)


def proportional() -> SizeBased:
  return SizeBased(temperature=1.0)


def _check_temperature(config, num_domains):
  del num_domains
  temperature_weights([1.0], config.temperature.temperature, config.temperature.cap or None)


@registry.register('static')
def _static(config, context):
  del config
  return Static(context.weights_D)


@registry.register('uniform')
def _uniform(config, context):
  del config, context
  return uniform()


@registry.register('proportional')
def _proportional(config, context):
  del config, context
  return proportional()


@registry.register('temperature', check=_check_temperature)
def _temperature(config, context):
  del context
  t = config.mixer.temperature
  return SizeBased(t.temperature, t.cap or None)
