"""A run's Mixer, built before its Trainer: the registry's builders, with the stages they need.

`build_mixer(config, workdir)` is what every command calls before `Trainer(config, workdir, mixer)`.
Builders that need trained models (DoReMi, RegMix, the agent, TaskPGM) get `RunStages`: proxies train
under WORKDIR/<mixer name>/, the continual base model comes from its cache. A mixer built from such
stages that comes out static is cached as WORKDIR/<mixer name>/mixture.json, so a re-run reuses it.
"""

import json
import os

import numpy as np

from experiments.recipes import continual
from experiments.recipes import proxies
from experiments.recipes import task_mixtures
from experiments.training import atomic
from experiments.training import runtime
from experiments.training import trainer as trainer_lib
from mixing import mixer as mixer_lib
from mixing import registry
from mixing.agent import features


class RunStages:
  """registry.Stages for one run: each stage trains (or reuses) its models under `folder`."""

  def __init__(self, config, folder: str, domains, quiet: bool = True):
    self.config, self.folder, self.domains, self.quiet = config, folder, domains, quiet
    self.used = False

  def _start(self) -> str:
    self.used = True
    os.makedirs(self.folder, exist_ok=True)
    return self.folder

  def domain_sizes(self) -> list[int]:
    return [d.train.num_tokens for d in self.domains]

  def proxy_losses(self, section, mixtures_KxD, seeds_K, label):
    return proxies.population_losses(self.config, self._start(), section, mixtures_KxD, seeds_K,
                                     self.domains, label, self.quiet)

  def dro_weights(self, reference_weights_D):
    return proxies.doremi_weights(self.config, self._start(), reference_weights_D, self.domains,
                                  self.quiet)

  def base_metrics(self):
    self._need_continual()
    return continual.base_metrics(self.config)

  def roles(self):
    self._need_continual()
    return continual.roles(self.config)

  def taskpgm_mixture(self, folder: str = ''):
    self._need_continual()
    if 'taskpgm' not in self.config:
      raise ValueError('mixer.name: taskpgm needs a config with a `taskpgm` section '
                       '(configs/quickstart_compare.py)')
    return task_mixtures.domain_mixture(self.config, folder or self._start())

  def _need_continual(self):
    if 'continual' not in self.config:
      raise ValueError(f'mixer.name: {self.config.mixer.name} needs a config with a `continual` '
                       'section (configs/continual_math.py): the domain roles and the base model')


def build_mixer(config, workdir: str, domains, quiet: bool = True) -> mixer_lib.Mixer:
  """The Mixer config.mixer names; its stages run (or are reused) first."""
  names, weights, packed = domains
  name = config.mixer.name
  registry.check(config.mixer, len(names))
  cache = os.path.join(workdir, name, 'mixture.json')
  if os.path.exists(cache):
    with open(cache) as f:
      saved = json.load(f)
    if saved['domains'] == list(names):
      return mixer_lib.Static(np.array(saved['weights']))
  stages = RunStages(config, os.path.join(workdir, name), packed, quiet)
  mixer = registry.build(config, registry.Context(names, weights, stages))
  if stages.used and isinstance(mixer, mixer_lib.Static) and mixer.fixed_weights() is not None:
    runtime.on_process_0(f'write {cache}', atomic.write_json, cache,
                         {'domains': list(names), 'weights': mixer.fixed_weights().tolist()})
  return mixer


def make_trainer(config, workdir: str, quiet: bool = False) -> trainer_lib.Trainer:
  """Domains, the Mixer (its offline stages first), then the Trainer it is handed."""
  domains = runtime.load_run_domains(config)
  mixer = build_mixer(config, workdir, domains, quiet)
  return trainer_lib.Trainer(config, workdir, mixer, quiet=quiet, domains=domains)


def run_and_score(config, workdir: str, log=print, quiet: bool = True, **overrides) -> dict:
  """One continual run (reused if finished) and its source, target and balanced scores."""
  cfg = continual.continual_config(config, **overrides)
  if not os.path.exists(os.path.join(workdir, 'summary.json')):
    log(f'running {os.path.basename(workdir)}')
    make_trainer(cfg, workdir, quiet=quiet).run()
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  return features.scores(summary['eval'], continual.base_metrics(cfg), continual.roles(cfg),
                         cfg.continual.balance)
