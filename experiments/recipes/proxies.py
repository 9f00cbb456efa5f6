"""Proxy stages of the offline mixers: DoReMi's reference and Group-DRO proxy, RegMix's population.

Each trains on the one training loop (experiments/training) in a folder of its own, checkpointed, so a
re-run resumes or reuses finished work. The mixers' algorithms (mixing/mixers/doremi.py, regmix.py)
call these through `registry.Stages` (experiments/recipes/runs.py).
"""

import functools
import os

import jax
import ml_collections
import numpy as np

from experiments.training import population as population_lib
from mixing.mixers import doremi
from models import presets


def proxy_config(config, method_config, steps: int) -> ml_collections.ConfigDict:
  """The main config, shortened to `steps`, with the method's proxy model, static, no decoding."""
  proxy = ml_collections.ConfigDict(config.to_dict())
  proxy.steps = steps or config.steps
  proxy.eval_every = proxy.checkpoint_every = proxy.steps
  proxy.eval_items = 0
  proxy.mixer = ml_collections.ConfigDict(config.mixer.to_dict())
  proxy.mixer.name = 'static'
  if method_config.model:
    proxy.model = presets.get_config(method_config.model)
  return proxy


def population_losses(config, workdir: str, section: str, mixtures_KxD, seeds_K, domains,
                      label: str, quiet: bool = True) -> np.ndarray:
  """K proxies (config.mixer.<section>'s model and proxy_steps) on K static mixtures -> loss K x D.

  Also writes the runs in RegMix's CSV layout (mixtures.csv, losses.csv), so experiments.fit_regmix
  can refit them.
  """
  c = config.mixer[section]
  base = proxy_config(config, c, c.proxy_steps)
  pop = population_lib.Population(base, os.path.join(workdir, 'proxies'), mixtures_KxD, seeds_K,
                                  domains=domains, quiet=quiet, label=label)
  loss_KxD = pop.run()
  names = [d.name for d in domains]
  if jax.process_index() == 0:  # every process has the same rows; one writes them
    _write_csv(os.path.join(workdir, 'mixtures.csv'), [f'train_{n}' for n in names], mixtures_KxD)
    _write_csv(os.path.join(workdir, 'losses.csv'), [f'eval/{n}/loss' for n in names], loss_KxD)
  return loss_KxD


def _write_csv(path, header, rows):
  with open(path, 'w') as f:
    f.write(','.join(['index'] + header) + '\n')
    for i, row in enumerate(rows, 1):
      f.write(','.join([str(i)] + [repr(float(v)) for v in row]) + '\n')


def doremi_weights(config, workdir: str, reference_weights_D, domains, quiet: bool = True
                   ) -> np.ndarray:
  """Reference run, then the Group-DRO proxy run; returns alpha averaged over the proxy's steps."""
  c = config.mixer.doremi
  base = proxy_config(config, c, c.proxy_steps)
  ref_weights = np.asarray(reference_weights_D, np.float64)
  reference = population_lib.Population(base, os.path.join(workdir, 'reference'), ref_weights[None],
                                        [config.seed], domains=domains, quiet=quiet,
                                        label='doremi reference')
  reference.run()
  # The proxy: its own init and data stream by the reference weights, descending the DRO objective.
  proxy = population_lib.Population(base, os.path.join(workdir, 'proxy'), ref_weights[None],
                                    [config.seed + 1], domains=domains, quiet=quiet,
                                    label='doremi proxy')
  d = len(domains)
  alpha = jax.device_put(np.full((1, d), 1.0 / d, np.float32), proxy.member_sharding)
  proxy.state = doremi.DroState(proxy.state, alpha, jax.device_put(np.zeros((1, d), np.float32),
                                                                   proxy.member_sharding))
  step = functools.partial(doremi.loop_step, proxy.graphdef, tx=proxy.tx, num_domains=d,
                           eta=c.eta, smoothing=c.smoothing)
  dro_step = jax.jit(jax.vmap(step), donate_argnums=(0,))
  reference_params = reference.state.params
  proxy.train_fn = lambda state, batch: dro_step(state, batch, reference_params)
  proxy.run()
  alpha_sum_D = np.asarray(jax.device_get(proxy.state.alpha_sum_D), np.float64)[0]
  return alpha_sum_D / alpha_sum_D.sum()  # the mean alpha over the proxy run (renormalized in f64)
