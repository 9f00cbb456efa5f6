"""Population benchmark: K = 16 tiny proxies as one vmapped population vs 16 sequential runs.

  python -m experiments.bench --only=population
Both sides train the same members (weights, seeds) for the same steps in this one process, data
included; compilation is counted once on each side.
"""

import time

from flax import nnx
import jax
import numpy as np

from configs import models as model_configs
from configs import tiny
from experiments import population as population_lib
from experiments import runtime
from experiments import step as step_lib
from experiments import trainer as trainer_lib
from mixing.data import sampler as sampler_lib
from models import transformer

K = 16
STEPS = 100


def _sequential(config, weights_KxD, domains) -> float:
  """The same K members, one after another, with the single-model jitted step (compiled once)."""
  start = time.perf_counter()
  trainer = trainer_lib.Trainer(config, '/tmp/mixlab_bench_population/seq', quiet=True)
  cfg = model_configs.model_config(config.model, config.seq_len)
  o = config.optimizer
  tx = step_lib.make_optimizer(o.learning_rate, o.warmup_steps, config.steps, o.weight_decay,
                               o.clip_norm, o.b1, o.b2)
  for k in range(K):
    _, state = step_lib.init_train_state(transformer.Transformer(cfg, rngs=nnx.Rngs(k)), tx)
    state = jax.device_put(state, trainer.state_sharding)
    sampler = sampler_lib.MixtureSampler([d.train for d in domains], trainer.names,
                                         weights_KxD[k], config.batch_size, seed=k)
    for _ in range(STEPS):
      batch = runtime.to_global(trainer.mesh, sampler.next_batch())
      state, metrics = trainer.train_fn(state, batch, None)
      jax.device_get(metrics)
  return time.perf_counter() - start


def report() -> str:
  config = tiny.get_config()
  config.steps, config.checkpoint_every = STEPS, STEPS
  names, _, domains = runtime.load_run_domains(config)
  weights_KxD = np.random.default_rng(0).dirichlet(np.ones(len(names)), K)
  start = time.perf_counter()
  pop = population_lib.Population(config, '/tmp/mixlab_bench_population/pop', weights_KxD,
                                  list(range(K)), domains=domains, quiet=True)
  pop.train_steps(STEPS)
  jax.block_until_ready(pop.state)
  population_s = time.perf_counter() - start
  sequential_s = _sequential(config, weights_KxD, domains)
  ratio = sequential_s / population_s
  return '\n'.join([
      f'## population (K={K} tiny proxies, {STEPS} steps, batch {config.batch_size} x '
      f'{config.seq_len})',
      '| run | wall s |', '|---|---:|',
      f'| one population (vmapped step) | {population_s:.1f} |',
      f'| {K} sequential runs | {sequential_s:.1f} |',
      f'| speed-up | {ratio:.1f}x (target >= 3x: {"OK" if ratio >= 3 else "MISSED"}) |'])
