"""A run's Mixer, built before its Trainer: the registry's builders, with the stages they need.

`build_mixer(config, workdir)` is what every command calls before `Trainer(config, workdir, mixer)`.
Builders that need trained models (DoReMi, RegMix, the agent, TaskPGM) get `RunStages`: proxies train
under WORKDIR/<mixer name>/, the continual base model comes from its cache. A mixer built from such
stages that comes out static is cached as WORKDIR/<mixer name>/mixture.json, so a re-run reuses it.
With a remote WORKDIR (`gs://...`) the proxies train in a local folder (`stage_folder`; one process
only) and only mixture.json goes to the bucket.

`run_and_score` is how comparisons run a continual run: it claims the run's workdir for the run's
config (workdir.claim: a finished run is reused only if that config made it) and scores it.
"""

import hashlib
import json
import os
import tempfile

import jax
import ml_collections
import numpy as np

from experiments.recipes import continual
from experiments.recipes import proxies
from experiments.recipes import task_mixtures
from experiments.training import atomic
from experiments.training import runtime
from experiments.training import trainer as trainer_lib
from experiments.training import workdir as workdir_lib
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
    self.folder = stage_folder(self.folder)
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
    # Not the stage folder itself: build_mixer caches the run's weights there, as mixture.json.
    return task_mixtures.domain_mixture(self.config,
                                        folder or os.path.join(self._start(), 'domain_mixture'))

  def _need_continual(self):
    if 'continual' not in self.config:
      raise ValueError(f'mixer.name: {self.config.mixer.name} needs a config with a `continual` '
                       'section (configs/continual_math.py): the domain roles and the base model')


def stage_folder(folder: str) -> str:
  """Where a run's mixer stages train: WORKDIR/<mixer name> itself, or for a remote WORKDIR a local
  folder named by it (proxies write with plain file IO; one process, as other hosts would not see it)."""
  if not atomic.is_remote(folder):
    return folder
  if jax.process_count() > 1:
    raise ValueError(f'mixer.name: {os.path.basename(folder)} trains proxies in a local folder, '
                     f'which the processes of a run with a remote workdir ({folder}) do not share; '
                     'give a workdir every host mounts')
  key = hashlib.sha256(folder.encode()).hexdigest()[:16]
  return os.path.join(tempfile.gettempdir(), 'mixlab_stages', key)


def build_mixer(config, workdir: str, domains, quiet: bool = True) -> mixer_lib.Mixer:
  """The Mixer config.mixer names; its stages run (or are reused) first."""
  names, weights, packed = domains
  name = config.mixer.name
  registry.check(config.mixer, len(names))
  cache = atomic.join(workdir, name, 'mixture.json')
  saved = atomic.read_json(cache) or {}
  if saved.get('domains') == list(names):
    return mixer_lib.Static(np.array(saved['weights']))
  stages = RunStages(config, atomic.join(workdir, name), packed, quiet)
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


def claim_run(config, workdir: str, **overrides) -> ml_collections.ConfigDict:
  """Claims a continual run's workdir for its config (ValueError if it holds another's); the config.

  Nothing trains here: run_and_score trains the base model (if needed) when the run starts.
  """
  cfg = continual.continual_config(config, train_base=False, **overrides)
  workdir_lib.claim(workdir, cfg)
  return cfg


def run_and_score(config, workdir: str, log=print, quiet: bool = True, **overrides) -> dict:
  """One continual run (resumed, or reused if finished) and its source, target and balanced scores.

  The workdir is claimed first, so a finished run is reused only if the same config made it (a
  run of another config is refused with a ValueError naming the fields); a shorter one is extended.
  """
  cfg = claim_run(config, workdir, **overrides)
  summary_path = os.path.join(workdir, 'summary.json')
  done = _summary_step(summary_path)
  if done > cfg.steps:
    raise ValueError(f'workdir: {workdir} holds a run of {done} steps, more than '
                     f'steps={cfg.steps}; pass --overwrite to replace it')
  if done < cfg.steps:
    log(f'running {os.path.basename(workdir)}')
    continual.ensure_base(config)
    make_trainer(cfg, workdir, quiet=quiet).run()
  with open(summary_path) as f:
    summary = json.load(f)
  return features.scores(summary['eval'], continual.base_metrics(cfg), continual.roles(cfg),
                         cfg.continual.balance)


def _summary_step(path: str) -> int:
  """The step a finished run's summary.json records (-1: none yet)."""
  if not os.path.exists(path):
    return -1
  with open(path) as f:
    return int(json.load(f).get('step', -1))
