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
# A subword vocabulary: probes reduced to the base model's top-K tokens plus the rest's mass.
V_LARGE, TOP_K, N_EXACT = 32_000, 255, 12
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


def _peaked_probs(rng, prior_PxV) -> np.ndarray:
  """One fine-tuned model's probs: the shared base distribution's logits plus its own noise."""
  logits = prior_PxV + rng.standard_normal(prior_PxV.shape, dtype=np.float32)
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _prior(seed: int = 0) -> np.ndarray:
  """Base-model logits over V_LARGE: Zipf-like (1.1 log rank), a random token order per position."""
  rng = np.random.default_rng(seed)
  ranks = -1.1 * np.log(np.arange(1, V_LARGE + 1, dtype=np.float32))
  return np.stack([ranks[rng.permutation(V_LARGE)] for _ in range(P)])


def _worker_vocab(n: int, exact: bool) -> dict:
  """N models over V_LARGE, each reduced to the base's top-K support as it is produced."""
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_num_cpu_devices', os.cpu_count() or 1)
  from mixing.taskpgm import potentials  # pylint: disable=g-import-not-at-top
  prior = _prior()
  base = np.exp(prior - prior.max(-1, keepdims=True))
  support = potentials.top_k_support(base / base.sum(-1, keepdims=True), TOP_K)
  rng, out = np.random.default_rng(1), {'base_mib': _rss_mib()}
  reduced, full, start = [], [], time.perf_counter()
  for _ in range(n):
    p = _peaked_probs(rng, prior)
    reduced.append(potentials.reduce_to_support(p, support))
    if exact:
      full.append(p)
  out['reduce'] = time.perf_counter() - start
  reduced = np.stack(reduced)
  out['kept_mass'] = float(1 - reduced[..., -1].mean())
  start = time.perf_counter()
  jsd, pmi = potentials.jsd_matrix(reduced), potentials.pmi_matrix(reduced)
  out['potentials'] = time.perf_counter() - start
  if exact:
    full = np.stack(full)
    upper = np.triu_indices(n, 1)
    jsd_full, pmi_full = potentials.jsd_matrix(full), potentials.pmi_matrix(full)
    out['jsd_err'] = float(np.abs(jsd - jsd_full)[upper].max())
    out['pmi_err'] = float(np.abs(pmi - pmi_full)[upper].max())
    out['jsd_full_mean'] = float(jsd_full[upper].mean())
    rank = lambda x: np.argsort(np.argsort(x[upper]))
    out['rank_corr'] = float(np.corrcoef(rank(jsd), rank(jsd_full))[0, 1])
    out['pmi_rank_corr'] = float(np.corrcoef(rank(pmi), rank(pmi_full))[0, 1])
    out['pmi_full_mean'] = float(pmi_full[upper].mean())
  out['peak_mib'] = _rss_mib()
  return out


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


def _run(n: int, compare_loop: bool, vocab: bool = False) -> dict:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  flags = [f for f in env.get('XLA_FLAGS', '').split() if 'host_platform_device_count' not in f]
  env['XLA_FLAGS'] = ' '.join(flags)  # the worker sets jax_num_cpu_devices itself
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.recipes.bench_taskpgm', f'--worker={n}',
       *(['--compare_loop'] if compare_loop else []), *(['--vocab'] if vocab else [])],
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
  large, exact = _run(N_BIG, False, vocab=True), _run(N_EXACT, True, vocab=True)
  rows += [
      '', f'### A {V_LARGE:,}-token vocabulary (taskpgm.probe_top_k = {TOP_K}: each probe position '
      f'keeps the base model\'s top {TOP_K} tokens and one bucket for the rest, V = {TOP_K + 1})',
      'Models: a Zipf-like base distribution per position (random token order) plus N(0, 1) logit '
      'noise per task; each model is reduced as it is produced, so no N x P x V array of the full '
      'vocabulary exists.', '',
      '| measurement | value |', '|---|---:|',
      f'| N={N_BIG}: make + reduce the models | {large["reduce"]:.1f} s |',
      f'| N={N_BIG}: JSD + PMI on the reduced probes | {large["potentials"]:.1f} s |',
      f'| N={N_BIG}: peak RSS | {large["peak_mib"]:.0f} MiB (full V would need '
      f'{N_BIG * P * V_LARGE * 4 / 2**30:.0f} GiB for the input alone) |',
      f'| probability mass kept on the support | {large["kept_mass"]:.3f} |',
      f'| N={N_EXACT}, reduced vs full vocabulary: max abs error JSD | {exact["jsd_err"]:.2e} (mean '
      f'JSD {exact["jsd_full_mean"]:.3f}) |',
      f'| N={N_EXACT}, reduced vs full vocabulary: max abs error PMI | {exact["pmi_err"]:.2e} (mean '
      f'PMI {exact["pmi_full_mean"]:.3f}) |',
      f'| N={N_EXACT}: rank correlation of the pairs, reduced vs full | JSD '
      f'{exact["rank_corr"]:.3f}, PMI {exact["pmi_rank_corr"]:.3f} |',
  ]
  return '\n'.join(rows)


def main(argv) -> None:
  worker = [a for a in argv[1:] if a.startswith('--worker=')]
  if worker:
    n = int(worker[0].split('=', 1)[1])
    print(json.dumps(_worker_vocab(n, '--compare_loop' in argv) if '--vocab' in argv else
                     _worker(n, '--compare_loop' in argv)))
  else:
    print(report())


if __name__ == '__main__':
  main(sys.argv)
