"""Mixers by name: `--config.mixer.name=NAME` picks one; its own fields live in `config.mixer.NAME`.

Online and static mixers are built here. DoReMi and RegMix are offline: experiments/offline.py trains
their proxies, then runs the main model with the resulting static mixture. The agent (a trained Data
Mixing Agent, mixing/agent/) is built by experiments/offline.py too, which knows the base model.
"""

import os

import ml_collections

from mixing import mixer as mixer_lib
from mixing import odm
from mixing import static

NAMES = ('static', 'uniform', 'proportional', 'temperature', 'doremi', 'odm', 'regmix', 'agent')


def check(config: ml_collections.ConfigDict, num_domains: int):
  """Raises a ValueError naming the field for an unknown mixer or an out-of-range hyperparameter."""
  name = config.name
  if name not in NAMES:
    raise ValueError(f'mixer.name: unknown mixer {name!r} (known: {", ".join(NAMES)})')
  if name == 'temperature':
    static.temperature_weights([1.0], config.temperature.temperature,
                               config.temperature.cap or None)
  if name == 'doremi':
    if config.doremi.eta <= 0:
      raise ValueError(f'mixer.doremi.eta: must be > 0, got {config.doremi.eta}')
    if not 0 <= config.doremi.smoothing < 1:
      raise ValueError(f'mixer.doremi.smoothing: must be in [0, 1), got {config.doremi.smoothing}')
  if name == 'odm' and not 0 <= config.odm.smoothing < 1:
    raise ValueError(f'mixer.odm.smoothing: must be in [0, 1), got {config.odm.smoothing}')
  if name == 'agent' and not os.path.isdir(config.agent_dir or ''):
    raise ValueError(f"mixer.agent_dir: no trained agent in {config.agent_dir!r} "
                     '(train one with experiments.train_agent)')
  if name == 'regmix':
    n = config.regmix.num_proxies
    if n and n < num_domains:
      raise ValueError(f'mixer.regmix.num_proxies: {n} is fewer than the {num_domains} domains')
    if not 1 <= config.regmix.top_k <= config.regmix.samples:
      raise ValueError(f'mixer.regmix.top_k: {config.regmix.top_k} must be in [1, samples]')


def make_mixer(config: ml_collections.ConfigDict, weights) -> mixer_lib.Mixer:
  """An online or static Mixer; `weights` are the config's domain weights (static mixing)."""
  name = config.name
  if name == 'static':
    return mixer_lib.Static(weights)
  if name == 'uniform':
    return static.uniform()
  if name == 'proportional':
    return static.proportional()
  if name == 'temperature':
    return static.SizeBased(config.temperature.temperature, config.temperature.cap or None)
  if name == 'odm':
    return odm.ODM(config.odm.smoothing)
  raise ValueError(f'mixer.name: {name!r} is not an online or static mixer')
