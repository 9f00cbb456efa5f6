"""The one registry of mixers: `--config.mixer.name=NAME` picks one; its own fields live in
`config.mixer.NAME`.

Every module in mixing/mixers/ registers what it provides with `@register(name, check=...)` on a
`build(config, context) -> Mixer` function; adding a mixer is one new file there (plus its config
fields), nothing else. Builders that need models trained first (DoReMi's and RegMix's proxies, the
continual base model an agent is deployed on) ask `context.stages`, which the pipelines layer
(experiments/recipes) implements: this layer never imports a training loop.
"""

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable, Mapping, Protocol, Sequence

import ml_collections
import numpy as np

from mixing import mixer as mixer_lib


class Stages(Protocol):
  """Work a mixer may need done before the run, by models trained in the pipelines layer."""

  def proxy_losses(self, section: str, mixtures_KxD: np.ndarray, seeds_K: Sequence[int],
                   label: str) -> np.ndarray:
    """Held-out loss (K x D) of K proxies trained on the K static mixtures."""

  def dro_weights(self, reference_weights_D: np.ndarray) -> np.ndarray:
    """DoReMi: the mean domain weights of a Group-DRO proxy against a reference run."""

  def domain_sizes(self) -> Sequence[int]:
    """Loss-bearing training tokens of each domain."""

  def taskpgm_mixture(self, folder: str) -> Mapping[str, float]:
    """TaskPGM's mixture over the run's domains (cached in `folder`, '' for the run's own)."""

  def base_metrics(self) -> Mapping[str, float]:
    """The continual base model's evaluation on the run's domains."""

  def roles(self) -> Mapping[str, str]:
    """Domain -> 'source' | 'target' of a continual run."""


@dataclasses.dataclass(frozen=True)
class Context:
  """What a builder gets besides the config."""
  names: Sequence[str]  # the run's domains, in order
  weights_D: np.ndarray  # the weights written in config.domains (the static mixer's)
  stages: Stages | None = None  # None: builders that need trained models refuse


@dataclasses.dataclass(frozen=True)
class Entry:
  build: Callable[[ml_collections.ConfigDict, Context], mixer_lib.Mixer]
  check: Callable[[ml_collections.ConfigDict, int], None] | None


_ENTRIES: dict[str, Entry] = {}


def register(name: str, check: Callable[[ml_collections.ConfigDict, int], None] | None = None):
  """Decorator for `build(config, context) -> Mixer`; `check(mixer_config, num_domains)` raises a
  ValueError naming the field for a bad hyperparameter, before anything is built."""
  def wrap(build):
    if name in _ENTRIES:
      raise ValueError(f'mixer {name!r} is registered twice')
    _ENTRIES[name] = Entry(build, check)
    return build
  return wrap


def _discover() -> None:
  """Imports every module of mixing/mixers/ (each registers itself); found at run time, so this
  module depends on none of them."""
  package = importlib.import_module('mixing.mixers')
  for info in pkgutil.iter_modules(package.__path__):
    importlib.import_module(f'mixing.mixers.{info.name}')


def names() -> tuple[str, ...]:
  _discover()
  return tuple(_ENTRIES)


def check(config: ml_collections.ConfigDict, num_domains: int) -> None:
  """`config` is config.mixer: an unknown name or a bad hyperparameter is a ValueError."""
  known = names()
  if config.name not in known:
    raise ValueError(f'mixer.name: unknown mixer {config.name!r} (known: {", ".join(known)})')
  entry = _ENTRIES[config.name]
  if entry.check is not None:
    entry.check(config, num_domains)


def build(config: ml_collections.ConfigDict, context: Context) -> mixer_lib.Mixer:
  """The Mixer `config.mixer.name` names, built with `context`."""
  check(config.mixer, len(context.names))
  return _ENTRIES[config.mixer.name].build(config, context)


def needs_stages(context: Context, name: str) -> Any:
  if context.stages is None:
    raise ValueError(f'mixer.name: {name} trains models before the run; build it through '
                     'experiments.recipes.runs (as experiments.train does)')
  return context.stages
