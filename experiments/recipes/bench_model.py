"""Throughput and MFU of the full jitted train step (fwd + bwd + AdamW).

  python -m experiments.recipes.bench_model [--models quickstart,m13] [--steps 5]

MFU = model FLOP/s (transformer.flops_per_token * tokens/s) / peak, where the
peak is the float32 FLOP/s of a jitted 2048x2048 `jnp.dot` measured in the
same run, right after each timed step. The machine may be shared, so the step
time and the peak are each the best of their interleaved measurements (like
`timeit`), and `cores` (process CPU seconds / wall seconds over the timed
steps) shows how much of the 2 cores the run actually had: below ~1.8 the
numbers were taken under contention.
"""

import argparse
import dataclasses
import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from experiments.training import step as step_lib
from models import sharding as sharding_lib
from models import transformer

# Per preset: (batch, seq_len) of one train step.
SHAPES = {'tiny': (8, 64), 'quickstart': (32, 256), 'm13': (32, 256)}


def make_peak_probe(n: int = 2048):
  """Returns probe(iters) -> float32 FLOP/s of a warm jitted n x n jnp.dot."""
  a_NxN = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b_NxN = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a_NxN, b_NxN).block_until_ready()

  def probe(iters: int = 5) -> float:
    start = time.perf_counter()
    for _ in range(iters):
      out_NxN = dot(a_NxN, b_NxN)
    out_NxN.block_until_ready()
    return 2 * n**3 * iters / (time.perf_counter() - start)

  return probe


def fake_batch(batch: int, seq_len: int, num_domains: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 256, (batch, seq_len + 1), dtype=np.int32)
  return {'inputs_BxL': tokens[:, :-1], 'targets_BxL': tokens[:, 1:],
          'mask_BxL': np.ones((batch, seq_len), np.float32),
          'domain_B': rng.integers(0, num_domains, batch, dtype=np.int32)}


def bench_config(cfg: transformer.ModelConfig, batch: int, seq_len: int,
                 steps: int = 5, num_domains: int = 4, probe=None) -> dict:
  """Times `steps` warm train steps, each followed by a matmul-peak probe."""
  probe = make_peak_probe() if probe is None else probe
  model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  params = transformer.param_count(model)
  tx = step_lib.make_optimizer(1e-3, 10, 1000)
  graphdef, state = step_lib.init_train_state(model, tx)
  mesh = sharding_lib.make_mesh(1, 1)
  state_sharding = sharding_lib.state_shardings(state, mesh)
  state = jax.device_put(state, state_sharding)
  train_step = step_lib.jit_train_step(mesh, graphdef, state_sharding, tx,
                                       num_domains)
  data = jax.device_put(fake_batch(batch, seq_len, num_domains),
                        sharding_lib.batch_sharding(mesh))
  start = time.perf_counter()
  for _ in range(2):  # Compile, then one more warm-up step.
    state, metrics = train_step(state, data)
    jax.block_until_ready(metrics)
  warmup_s = time.perf_counter() - start
  times, cpu_times, peaks = [], [], []
  for _ in range(steps):
    start, cpu_start = time.perf_counter(), time.process_time()
    state, metrics = train_step(state, data)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
    cpu_times.append(time.process_time() - cpu_start)
    peaks.append(probe())
  flops_per_token = transformer.flops_per_token(cfg, seq_len)
  tokens_per_s = batch * seq_len / min(times)
  return {'params': params, 'seq_len': seq_len, 'batch': batch,
          'step_s': min(times), 'step_s_median': float(np.median(times)),
          'warmup_s': warmup_s, 'tokens_per_s': tokens_per_s,
          'flops_per_token': flops_per_token,
          'flops_per_s': flops_per_token * tokens_per_s,
          'peak_flops_per_s': max(peaks),
          'mfu': flops_per_token * tokens_per_s / max(peaks),
          'cores': sum(cpu_times) / sum(times),
          'loss': float(metrics['loss'])}


def run(models=('quickstart', 'm13'), steps: int = 5, **overrides
        ) -> list[dict]:
  """Benchmarks each preset at SHAPES; `overrides` replace config fields.

  Every row's MFU uses the best peak probed anywhere in the run (the most
  conservative choice on a machine whose speed varies with its load).
  """
  probe = make_peak_probe()
  peak = max(probe() for _ in range(5))
  rows = []
  for name in models:
    cfg = dataclasses.replace(transformer.PRESETS[name](), **overrides)
    batch, seq_len = SHAPES[name]
    rows.append({'model': name,
                 **bench_config(cfg, batch, seq_len, steps, probe=probe)})
  peak = max([peak] + [r['peak_flops_per_s'] for r in rows])
  for r in rows:
    r['peak_flops_per_s'], r['mfu'] = peak, r['flops_per_s'] / peak
  return rows


def format_table(rows: list[dict]) -> str:
  header = (f"{'model':<11}{'params':>11}{'seq':>5}{'batch':>6}"
            f"{'step_s':>8}{'tok/s':>8}{'MFLOP/tok':>10}{'GFLOP/s':>8}"
            f"{'peak':>6}{'MFU':>7}{'cores':>6}")
  lines = [header]
  for r in rows:
    lines.append(
        f"{r['model']:<11}{r['params']:>11,}{r['seq_len']:>5}{r['batch']:>6}"
        f"{r['step_s']:>8.3f}{r['tokens_per_s']:>8.0f}"
        f"{r['flops_per_token'] / 1e6:>10.1f}{r['flops_per_s'] / 1e9:>8.1f}"
        f"{r['peak_flops_per_s'] / 1e9:>6.0f}{r['mfu']:>7.1%}"
        f"{r['cores']:>6.2f}")
  return '\n'.join(lines)


def report(models=('quickstart', 'm13'), steps: int = 5) -> str:
  """The table `python -m experiments.bench --only=model` prints (target: m13 MFU >= 50%)."""
  rows = run(tuple(models), steps)
  peak = rows[0]['peak_flops_per_s']
  m13 = [r for r in rows if r['model'] == 'm13']
  verdict = (f'\nm13 MFU {m13[0]["mfu"]:.1%} (target >= 50%: '
             f'{"OK" if m13[0]["mfu"] >= 0.5 else "MISSED"})' if m13 else '')
  return (f'## model (jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} '
          f'device(s); float32 jnp.dot 2048x2048 peak, best probe in this run: '
          f'{peak / 1e9:.1f} GFLOP/s)\n{format_table(rows)}{verdict}')


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--models', default='quickstart,m13')
  parser.add_argument('--steps', type=int, default=5)
  args = parser.parse_args()
  print(report(tuple(args.models.split(',')), args.steps))


if __name__ == '__main__':
  main()
