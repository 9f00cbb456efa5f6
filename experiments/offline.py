"""Offline mixers: DoReMi and RegMix train proxies first, then run the main model as a static mixture.

Each stage is cached under WORKDIR/<method>/ (the proxies' own checkpoints, then mixture.json), so a
re-run reuses finished work. `build_mixer` is what the trainer calls for every `config.mixer.name`.
"""

import functools
import json
import os

import jax
import ml_collections
import numpy as np

from configs import models as model_configs
from experiments import atomic
from experiments import metrics as metrics_lib
from experiments import population as population_lib
from experiments import runtime
from experiments import step as step_lib
from mixing import doremi
from mixing import mixer as mixer_lib
from mixing import regmix
from mixing import registry
from mixing.data import load as load_lib
from mixing.data import sampler as sampler_lib

OFFLINE = ('doremi', 'regmix')


def proxy_config(config, method_config, steps: int) -> ml_collections.ConfigDict:
  """The main config, shortened to `steps`, with the method's proxy model, static, no decoding."""
  proxy = ml_collections.ConfigDict(config.to_dict())
  proxy.steps = steps or config.steps
  proxy.eval_every = proxy.checkpoint_every = proxy.steps
  proxy.eval_items = 0
  proxy.mixer = ml_collections.ConfigDict(config.mixer.to_dict())
  proxy.mixer.name = 'static'
  if method_config.model:
    proxy.model = model_configs.get_config(method_config.model)
  return proxy


def _cached_mixture(path: str, names, compute):
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved['domains'] == names:
      return np.array(saved['weights'])
  weights = np.asarray(compute(), np.float64)
  runtime.on_process_0(f'write {path}', atomic.write_json, path,
                       {'domains': names, 'weights': weights.tolist()})
  return weights


def doremi_mixture(config, workdir: str, names, domains, quiet: bool = True) -> np.ndarray:
  """Reference run, then the Group-DRO proxy run; returns alpha averaged over the proxy's steps."""
  c = config.mixer.doremi
  base = proxy_config(config, c, c.proxy_steps)
  ref_weights = (load_lib.parse_mixture(c.reference_weights, 'mixer.doremi.reference_weights')[1]
                 if c.reference_weights else np.ones(len(names)))
  ref_weights = sampler_lib.validate_weights(ref_weights, names, 'mixer.doremi.reference_weights')
  reference = population_lib.Population(base, os.path.join(workdir, 'reference'), ref_weights[None],
                                        [config.seed], domains=domains, quiet=quiet,
                                        label='doremi reference')
  reference.run()
  # The proxy: same init and data stream as the reference would have, descending the DRO objective.
  proxy = population_lib.Population(base, os.path.join(workdir, 'proxy'), ref_weights[None],
                                    [config.seed + 1], domains=domains, quiet=True)
  o = base.optimizer
  tx = step_lib.make_optimizer(o.learning_rate, o.warmup_steps, base.steps, o.weight_decay,
                               o.clip_norm, o.b1, o.b2)
  step = jax.jit(functools.partial(doremi.dro_step, proxy.graphdef, tx=tx,
                                   num_domains=len(names), eta=c.eta, smoothing=c.smoothing))
  state = proxy.member_state(0)
  ref_params = reference.params(0)
  alpha_D = np.full(len(names), 1.0 / len(names))
  alpha_sum_D = np.zeros(len(names))
  progress = metrics_lib.Progress(base.steps, config.progress_seconds, not quiet,
                                  prefix='[doremi proxy] ')
  for i in range(base.steps):
    batch = proxy.samplers[0].next_batch()
    progress.update(i + 1, float('nan'), 0.0)
    state, alpha_D, _ = step(state, ref_params, alpha_D, batch)
    alpha_sum_D += np.asarray(alpha_D)
  return alpha_sum_D / alpha_sum_D.sum()  # the mean alpha over the proxy run (renormalized in f64)


def regmix_mixture(config, workdir: str, names, domains, quiet: bool = True) -> np.ndarray:
  """N proxies on Dirichlet mixtures as one population, a LightGBM fit, then the simplex search."""
  c = config.mixer.regmix
  n = c.num_proxies or 4 * len(names)
  base = proxy_config(config, c, c.proxy_steps)
  prior_D = np.array([d.train.num_tokens for d in domains], np.float64)
  mixtures_NxD = regmix.sample_mixtures(prior_D, n, config.seed)
  pop = population_lib.Population(base, os.path.join(workdir, 'proxies'), mixtures_NxD,
                                  [config.seed] * n, domains=domains, quiet=quiet,
                                  label=f'regmix: {n} proxies')
  loss_NxD = pop.run()
  targets = [t for t in c.target.split(',') if t] or names
  unknown = [t for t in targets if t not in names]
  if unknown:
    raise ValueError(f'mixer.regmix.target: unknown domain {unknown[0]!r}')
  y_N = loss_NxD[:, [names.index(t) for t in targets]].mean(1)
  _write_regmix_csvs(workdir, names, mixtures_NxD, loss_NxD)
  model = regmix.Regressor().fit(mixtures_NxD, y_N)
  return regmix.search(model, prior_D, c.samples, c.top_k, seed=config.seed)


def _write_regmix_csvs(workdir, names, mixtures_NxD, loss_NxD):
  """Our proxies' runs in RegMix's CSV layout, so experiments.regmix can refit them."""
  def write(path, header, rows):
    with open(path, 'w') as f:
      f.write(','.join(['index'] + header) + '\n')
      for i, row in enumerate(rows, 1):
        f.write(','.join([str(i)] + [repr(float(v)) for v in row]) + '\n')
  if jax.process_index() != 0:  # every process has the same rows; one writes them
    return
  write(os.path.join(workdir, 'mixtures.csv'), [f'train_{n}' for n in names], mixtures_NxD)
  write(os.path.join(workdir, 'losses.csv'), [f'eval/{n}/loss' for n in names], loss_NxD)


def agent_mixer(config) -> mixer_lib.Mixer:
  """A trained Data Mixing Agent re-weighting this continual run (its roles and base model)."""
  from experiments import continual  # pylint: disable=g-import-not-at-top  # (imports the trainer)
  from mixing.agent import deploy  # pylint: disable=g-import-not-at-top
  if 'continual' not in config:
    raise ValueError('mixer.name: agent needs a config with a `continual` section '
                     '(configs/continual_math.py): the domain roles and the base model')
  policy_metrics = {k: v for k, v in continual.base_metrics(config).items() if k.endswith('/loss')}
  return deploy.load_mixer(config.mixer.agent_dir, continual.roles(config), policy_metrics,
                           config.continual.reweights)


def build_mixer(config, workdir: str, names, weights, domains, quiet: bool = True
                ) -> mixer_lib.Mixer:
  """The run's Mixer; offline methods compute (or reload) their mixture first."""
  name = config.mixer.name
  if name == 'agent':
    return agent_mixer(config)
  if name not in OFFLINE:
    return registry.make_mixer(config.mixer, weights)
  folder = os.path.join(workdir, name)
  os.makedirs(folder, exist_ok=True)
  compute = {'doremi': doremi_mixture, 'regmix': regmix_mixture}[name]
  mixture = _cached_mixture(os.path.join(folder, 'mixture.json'), names,
                            lambda: compute(config, folder, names, domains, quiet))
  return mixer_lib.Static(mixture)
