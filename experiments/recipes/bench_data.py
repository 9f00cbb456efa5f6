"""Data benchmark: sampler throughput against what training consumes, and a 1,000-domain start-up.

  python -m experiments.bench --only=data
"""

import resource
import time
import tracemalloc

import jax
import numpy as np

from configs import quickstart
from experiments.training import runtime
from experiments.recipes import runs
from mixing.data import sampler as sampler_lib
from mixing.data.packing import PackedRows


def sampler_tokens_per_sec(sampler, batches: int) -> float:
  start = time.perf_counter()
  for _ in range(batches):
    batch = sampler.next_batch()
  elapsed = time.perf_counter() - start
  return batches * batch['inputs_BxL'].size / elapsed


def training_tokens_per_sec(trainer, steps: int) -> float:
  """The quickstart config's jitted train step fed by its sampler (warm), tokens/s."""
  state = trainer.state
  for i in range(steps + 2):
    if i == 2:  # after compilation and one warm step
      jax.block_until_ready(state)
      start = time.perf_counter()
    batch = runtime.to_global(trainer.mesh, trainer.sampler.next_batch())
    state, metrics = trainer.train_fn(state, batch)
    jax.device_get(metrics)
  elapsed = time.perf_counter() - start
  trainer.state = state
  return steps * trainer.config.batch_size * trainer.config.seq_len / elapsed


def many_domains(num_domains: int, rows: int = 64, seq_len: int = 128):
  """Startup time and memory of a sampler over `num_domains` small in-memory domains."""
  rng = np.random.default_rng(0)
  sources = [PackedRows(rng.integers(0, 256, (rows, seq_len + 1), dtype=np.uint16),
                        np.ones((rows, seq_len + 1), np.uint8)) for _ in range(num_domains)]
  names = [f'd{i}' for i in range(num_domains)]
  rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  tracemalloc.start()
  start = time.perf_counter()
  sampler = sampler_lib.MixtureSampler(sources, names, np.ones(num_domains), 256, seed=0)
  sampler.next_batch()
  startup = time.perf_counter() - start
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  tokens_per_sec = sampler_tokens_per_sec(sampler, 50)
  rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return {'startup_s': startup, 'python_peak_mb': peak / 2**20,
          'rss_growth_mb': max(rss_after - rss_before, 0) / 1024,
          'data_mb': sum(s.tokens_NxL1.nbytes + s.mask_NxL1.nbytes for s in sources) / 2**20,
          'tokens_per_sec': tokens_per_sec}


def report(workdir: str = "/tmp/mixlab_bench_data") -> str:
  config = quickstart.get_config()
  trainer = runs.make_trainer(config, workdir, quiet=True)
  sampler_tps = sampler_tokens_per_sec(trainer.sampler, 2000)
  train_tps = training_tokens_per_sec(trainer, 30)
  big = many_domains(1000)
  ratio = sampler_tps / train_tps
  lines = [
      f'## data (quickstart config: batch {config.batch_size} x seq_len {config.seq_len}, '
      f'domains {config.domains})',
      '| measure | value | target |', '|---|---:|---|',
      f'| sampler tokens/s (3 built-in domains) | {sampler_tps:,.0f} | |',
      f'| training consumes tokens/s (quickstart step) | {train_tps:,.0f} | |',
      f'| sampler / training | {ratio:,.1f}x | >= 20x {"OK" if ratio >= 20 else "MISSED"} |',
      f'| 1,000-domain sampler start-up (incl. first batch of 256) | {big["startup_s"]:.3f} s | '
      f'< 2 s {"OK" if big["startup_s"] < 2 else "MISSED"} |',
      f'| 1,000-domain sampler Python memory at start-up (peak) | {big["python_peak_mb"]:.1f} MB '
      '| |',
      f'| 1,000-domain data held (64 rows x 129 tokens each) | {big["data_mb"]:.1f} MB | |',
      f'| 1,000-domain sampler tokens/s | {big["tokens_per_sec"]:,.0f} | |',
  ]
  return '\n'.join(lines)
