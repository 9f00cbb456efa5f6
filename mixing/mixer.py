"""The Mixer interface: what every mixing method gives the train loop, and what it gets back.

A Mixer is `init(domains) -> state` and `update(state, observation) -> (state, weights_D)`. The state is a
pytree of numpy arrays, checkpointed with the model, so a resumed run continues the same mixing
decisions. The train loop calls `update` every `mixer.update_every` steps and gives the weights to the
sampler. Offline methods (DoReMi, RegMix, TaskPGM) first produce a mixture, or a schedule of mixtures
by step, then run as a `Static` mixer. mixing/registry.py builds every mixer by name.
"""

import dataclasses
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from mixing.data import sampler as sampler_lib


@dataclasses.dataclass(frozen=True)
class DomainInfo:
  name: str
  num_tokens: int  # loss-bearing training tokens: the domain's size


@dataclasses.dataclass(frozen=True)
class Observation:
  """What the loop knows at a mixer update."""
  step: int  # optimizer steps done
  total_steps: int  # the run's length, for methods that depend on progress
  tokens_seen: int  # loss-bearing tokens trained on so far
  train_loss_D: np.ndarray  # mean training loss per domain since the last update (NaN: not drawn)
  train_tokens_D: np.ndarray  # loss-bearing tokens per domain since the last update
  eval_metrics: Mapping[str, float]  # the latest evaluation ('eval/<domain>/loss', ...), may be empty
  weights_D: np.ndarray  # the weights in force until now


class Mixer(Protocol):
  def init(self, domains: Sequence[DomainInfo]) -> Any:
    ...

  def update(self, state: Any, observation: Observation) -> tuple[Any, np.ndarray]:
    ...


class Static:
  """Fixed weights, or a schedule [(from_step, weights), ...] of fixed weights by step."""

  def __init__(self, weights=None, schedule: Sequence[tuple[int, Any]] = ()):
    self._weights = weights
    self._schedule = sorted(schedule, key=lambda entry: entry[0])

  def init(self, domains: Sequence[DomainInfo]):
    names = [d.name for d in domains]
    base = np.ones(len(names)) if self._weights is None else self._weights
    self._table = [(0, sampler_lib.validate_weights(base, names, 'mixer.weights'))]
    for i, (step, w) in enumerate(self._schedule):
      self._table.append((int(step), sampler_lib.validate_weights(w, names,
                                                                    f'mixer.schedule[{i}]')))
    return {}

  def fixed_weights(self) -> np.ndarray | None:
    """The weights of a mixture without a schedule (None: uniform or scheduled)."""
    if self._schedule or self._weights is None:
      return None
    return np.asarray(self._weights, np.float64)

  def weights_at(self, step: int) -> np.ndarray:
    return [w for start, w in self._table if start <= step][-1]

  def update(self, state, observation: Observation):
    return state, self.weights_at(observation.step)
