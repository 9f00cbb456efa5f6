"""TaskPGM potentials benchmark: the JSD and PMI matrices of N = 1,000 tasks (P = 256, V = 259).

  python -m experiments.bench --only=taskpgm
  python -m experiments.recipes.bench_taskpgm

Each measurement runs in a fresh subprocess, so its peak RSS (ru_maxrss) is its own; the process
starts JAX with one CPU device per core, over which jsd_matrix shards its block pairs. Inputs are
softmax(random normal logits) in float32. Times are first calls, compilation included. N = 100
compares the vectorized code with the per-pair NumPy loop (float64, one core) in the same run.
"""

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N_BIG, N_SMALL, P, V = 1000, 100, 256, 259
TARGET_S, TARGET_MIB = 30.0, 4096.0  # 4 GiB


def _rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _random_probs(n: int, seed: int = 0) -> np.ndarray:
  """softmax of N(0, 1) logits, one task at a time (the input is the only N x P x V array)."""
  rng = np.random.default_rng(seed)
  probs = np.empty((n, P, V), np.float32)
  for i in range(n):
    logits = rng.standard_normal((P, V), dtype=np.float32)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    probs[i] = e / e.sum(-1, keepdims=True)
  return probs


def _worker(n: int, compare_loop: bool) -> dict:
  """Runs in the subprocess: times jsd_matrix and pmi_matrix (and the loop) on N random tasks."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_num_cpu_devices', os.cpu_count() or 1)
  from mixing.taskpgm import potentials  # pylint: disable=g-import-not-at-top
  jax.numpy.zeros(1).block_until_ready()
  out = {'devices': len(jax.devices()), 'base_mib': _rss_mib(), 'load_before': os.getloadavg()[0]}
  probs = _random_probs(n)
  out['input_mib'] = probs.nbytes / 2**20
  times, results = {}, {}
  for name, fn in (('jsd', potentials.jsd_matrix), ('pmi', potentials.pmi_matrix)):
    start, cpu = time.perf_counter(), time.process_time()
    result = fn(probs)
    times[name], times[name + '_cpu'] = time.perf_counter() - start, time.process_time() - cpu
    out[name + '_mean'] = float(result[np.triu_indices(n, 1)].mean())
    if compare_loop:
      start = time.perf_counter()
      fn(probs)
      times[name + '_warm'] = time.perf_counter() - start
      results[name] = result
  out.update(times, peak_mib=_rss_mib(), load_after=os.getloadavg()[0])
  if compare_loop:
    start = time.perf_counter()
    loop_jsd, loop_pmi = potentials.pairwise_numpy_loop(probs)
    out['loop'] = time.perf_counter() - start
    out['jsd_err'] = float(np.abs(results['jsd'] - loop_jsd).max())
    out['pmi_err'] = float(np.abs(results['pmi'] - loop_pmi).max())
  return out


def _run(n: int, compare_loop: bool) -> dict:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  flags = [f for f in env.get('XLA_FLAGS', '').split() if 'host_platform_device_count' not in f]
  env['XLA_FLAGS'] = ' '.join(flags)  # the worker sets jax_num_cpu_devices itself
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.recipes.bench_taskpgm', f'--worker={n}',
       *(['--compare_loop'] if compare_loop else [])],
      cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f'bench_taskpgm worker N={n} failed:\n{proc.stderr[-2000:]}')
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _status(ok: bool) -> str:
  return 'OK' if ok else 'MISSED'


def report() -> str:
  big = _run(N_BIG, compare_loop=False)
  small = _run(N_SMALL, compare_loop=True)
  total = big['jsd'] + big['pmi']
  logs = N_BIG * (N_BIG - 1) / 2 * P * V
  vectorized = small['jsd_warm'] + small['pmi_warm']
  rows = [
      f'## taskpgm potentials (P={P}, V={V}, float32; {big["devices"]} CPU devices; load '
      f'average {big["load_before"]:.1f} -> {big["load_after"]:.1f} during N={N_BIG})',
      '| measurement | value | target | status |', '|---|---:|---|---|',
      f'| N={N_BIG}: input probs_NxPxV | {big["input_mib"]:.0f} MiB | | |',
      f'| N={N_BIG}: jsd_matrix (first call) | {big["jsd"]:.1f} s wall, {big["jsd_cpu"]:.1f} s '
      f'CPU; {logs / big["jsd"] / 1e9:.2f} G pair-logs/s | | |',
      f'| N={N_BIG}: pmi_matrix (first call) | {big["pmi"]:.1f} s wall, {big["pmi_cpu"]:.1f} s CPU'
      ' | | |',
      f'| N={N_BIG}: JSD + PMI | {total:.1f} s | < {TARGET_S:.0f} s | '
      f'{_status(total < TARGET_S)} |',
      f'| N={N_BIG}: peak RSS (whole process; {big["base_mib"]:.0f} MiB before the input) | '
      f'{big["peak_mib"]:.0f} MiB (+{big["peak_mib"] - big["base_mib"]:.0f} MiB) | '
      f'< {TARGET_MIB:.0f} MiB | {_status(big["peak_mib"] < TARGET_MIB)} |',
      f'| N={N_SMALL}: vectorized JSD + PMI (warm; first call {small["jsd"] + small["pmi"]:.2f} s)'
      f' | {vectorized:.2f} s | | |',
      f'| N={N_SMALL}: pairwise_numpy_loop | {small["loop"]:.2f} s | | |',
      f'| N={N_SMALL}: speed-up over the loop | {small["loop"] / vectorized:.0f}x (max abs diff '
      f'JSD {small["jsd_err"]:.1e}, PMI {small["pmi_err"]:.1e}) | > 1x | '
      f'{_status(small["loop"] > vectorized)} |',
  ]
  return '\n'.join(rows)


def main(argv) -> None:
  worker = [a for a in argv[1:] if a.startswith('--worker=')]
  if worker:
    print(json.dumps(_worker(int(worker[0].split('=', 1)[1]), '--compare_loop' in argv)))
  else:
    print(report())


if __name__ == '__main__':
  main(sys.argv)
