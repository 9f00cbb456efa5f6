"""Population benchmark: K = 16 tiny proxies as one population vs 16 sequential runs, in one process.

  python -m experiments.bench --only=population

Both sides train the same 16 members (mixtures, seeds) for the same steps, as the commands would:
the population is one `Population.run()` (set-up, one compilation, training, checkpoints, held-out
evaluation); the sequential side is 16 `Trainer.run()` calls, each a whole `experiments.train` run
(set-up, compilation, training, checkpoints, evaluation). Also printed: the steady-state time of one
step of all 16 members, where only the step itself differs (data, step, metrics fetch).
"""

import os
import shutil
import time

import jax
import numpy as np

from configs import tiny
from experiments.training import population as population_lib
from experiments.training import runtime
from experiments.recipes import runs

K = 16
STEPS = 100
ROOT = '/tmp/mixlab_bench_population'


def _config():
  config = tiny.get_config()
  config.steps = config.checkpoint_every = config.eval_every = STEPS
  config.log_every, config.eval_items = 10, 0
  return config


def _steady_state(pop, trainers, steps: int = 20) -> tuple[float, float]:
  """Seconds per step of all K members: one population step vs K single-model steps."""
  pop.train_steps(2)
  start = time.perf_counter()
  pop.train_steps(steps)
  population_s = (time.perf_counter() - start) / steps
  start = time.perf_counter()
  for _ in range(steps):
    for t in trainers:
      batch = runtime.to_global(t.mesh, t.sampler.next_batch())
      t.state, metrics = t.train_fn(t.state, batch)
      jax.device_get(metrics)
  return population_s, (time.perf_counter() - start) / steps


def report() -> str:
  shutil.rmtree(ROOT, ignore_errors=True)
  config = _config()
  names, _, domains = runtime.load_run_domains(config)
  weights_KxD = np.random.default_rng(0).dirichlet(np.ones(len(names)), K)
  start = time.perf_counter()
  pop = population_lib.Population(config, os.path.join(ROOT, 'population'), weights_KxD,
                                  list(range(K)), domains=domains, quiet=True)
  pop.run()
  population_s = time.perf_counter() - start
  start = time.perf_counter()
  trainers = []
  for k in range(K):
    member = _config()
    member.seed = k
    member.domains = ','.join(f'{n}:{w}' for n, w in zip(names, weights_KxD[k]))
    trainer = runs.make_trainer(member, os.path.join(ROOT, f'run_{k:02d}'), quiet=True)
    trainer.run()
    trainers.append(trainer)
  sequential_s = time.perf_counter() - start
  pop_step, seq_step = _steady_state(pop, trainers)
  ratio, step_ratio = sequential_s / population_s, seq_step / pop_step
  return '\n'.join([
      f'## population (K={K} tiny proxies, {STEPS} steps each, batch {config.batch_size} x '
      f'{config.seq_len})',
      '| measure | one population | 16 sequential runs | ratio |', '|---|---:|---:|---:|',
      f'| whole runs, wall s (target ratio >= 3x) | {population_s:.1f} | {sequential_s:.1f} | '
      f'{ratio:.1f}x {"OK" if ratio >= 3 else "MISSED"} |',
      f'| one step of all 16 members, steady state, ms | {pop_step * 1e3:.1f} | '
      f'{seq_step * 1e3:.1f} | {step_ratio:.1f}x |'])
