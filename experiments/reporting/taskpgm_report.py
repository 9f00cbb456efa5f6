"""TaskPGM's report over families and seeds: results.md and each family's potentials figure.

Every number is a mean over seeds ± the half width of a 95% t interval (bench_report.mean_ci);
differences are paired by seed (the same seed gives every method the same base model, pool and
items). The primary metric is the test parts' multiple-choice accuracy (log-likelihood of each
option, length-normalized: lm-eval-harness's acc_norm); exact match is reported separately.
"""

import math
import os

import numpy as np

from experiments.reporting import bench_report
from experiments.training import atomic
from experiments.reporting import potentials_figure
from mixing.data import domains

HEURISTICS = ('uniform', 'size-proportional', 'temperature')


def _cell(values) -> str:
  mean, half = bench_report.mean_ci(values)
  return f'{mean:.4f} ± {half:.4f}' if math.isfinite(half) else f'{mean:.4f}'


def _table(methods: dict, suites: list[str]) -> list[str]:
  heads = [s for s in HEURISTICS if s in methods]
  lines = ['| method | mean test accuracy | ' + ' | '.join(f'− {h}' for h in heads) + ' |',
           '|---|---:|' + '---:|' * len(heads)]
  for method, table in methods.items():
    diffs = ['' if method in (h, 'base') else bench_report._diff(  # pylint: disable=protected-access
        bench_report.paired(table['average'], methods[h]['average'])) for h in heads]
    lines.append(f'| {method} | {_cell(table["average"])} | ' + ' | '.join(diffs) + ' |')
  lines += ['', '<details><summary>per suite (mean over seeds)</summary>', '',
            '| method | ' + ' | '.join(s.split('/')[-1] for s in suites) + ' |',
            '|---|' + '---:|' * len(suites)]
  for method, table in methods.items():
    lines.append(f'| {method} | ' + ' | '.join(f'{np.mean(table[s]):.3f}' for s in suites) + ' |')
  return lines + ['', '</details>']


def _discrete(family: dict) -> list[str]:
  lines = ['| seed | chosen (unary, redundancy, lam, tau) | greedy picked | γ | 1 − e^−γ | '
           'F(greedy) | F(exhaustive) |', '|---|---|---|---:|---:|---:|---:|']
  for seed, hp, d in zip(family['seeds'], family['chosen'], family['discrete']):
    exhaustive = d.get('exhaustive_value')
    lines.append(
        f'| {seed} | {hp["unary"]}, {hp["redundancy"]}, {hp["lam"]:g}, {hp["tau"]:g} | '
        f'{", ".join(potentials_figure.short(x) for x in d["selected"])} | {d["gamma"]:.3f} '
        f'({d["kind"]}) | {d["guarantee"]:.3f}{"" if d["applies"] else " (no bound: F not monotone)"} | '
        f'{d["value"]:.4f} | {"—" if exhaustive is None else f"{exhaustive:.4f}"} |')
  return lines


def _timings(workdir: str, name: str, seeds) -> str:
  """Mean wall time per stage over the seeds whose timings.json exists (stages a call ran)."""
  rows = [atomic.read_json(p) for s in seeds
          if os.path.exists(p := os.path.join(workdir, name, f'seed_{s}', 'timings.json'))]
  keys = list(dict.fromkeys(k for r in rows for k in r))
  return ', '.join(f'{k} {np.mean([r[k] for r in rows if k in r]):.2f} s' for k in keys) or 'none'


def _mixtures(workdir: str, name: str, seeds, suites, methods) -> list[str]:
  """Per method (in the order of `methods`), over the seeds whose scores.json exists: the weight on
  pool tasks that are not evaluation suites (and on relabeled copies, if the pool has any), and the
  effective number of tasks, e^H(p)."""
  runs = [atomic.read_json(p) for s in seeds
          if os.path.exists(p := os.path.join(workdir, name, f'seed_{s}', 'scores.json'))]
  if not runs:
    return []
  relabeled = any(map(domains.is_relabeled, runs[0]['weights']['uniform']))
  lines = ['| method | weight on tasks outside the suites |'
           + (' weight on relabeled copies (mislabeled/, skewed/) |' if relabeled else '')
           + ' effective number of tasks (e^H) |', '|---|---:|' + ('---:|' if relabeled else '')
           + '---:|']
  for method in [m for m in methods if m in runs[0]['weights']]:
    mixes = [r['weights'][method] for r in runs]
    outside = np.mean([sum(w for task, w in m.items() if task not in suites) for m in mixes])
    bad = np.mean([sum(w for task, w in m.items() if domains.is_relabeled(task)) for m in mixes])
    probs = [np.array([w for w in m.values() if w > 0]) for m in mixes]
    lines.append(f'| {method} | {outside:.2f} |' + (f' {bad:.2f} |' if relabeled else '')
                 + f' {np.mean([np.exp(-(p * np.log(p)).sum()) for p in probs]):.1f} |')
  return [f'## {name}: the mixtures (mean over seeds)', '', *lines, '']


def markdown(results: dict, workdir: str = '') -> str:
  seeds = results['seeds']
  out = ['# TaskPGM over seeds and model families', '',
         f'Seeds {", ".join(map(str, seeds))} (n = {len(seeds)}). Accuracy on the test parts, mean ± '
         'the half width of a 95% t interval; "− h" is the paired difference to heuristic h by '
         'seed (✓: CI above 0, ✗: below). `taskpgm` is the candidate chosen on the validation '
         'parts; the rows below it are its ablations at the same hyperparameters.', '']
  for name, family in results['families'].items():
    suites = [s for s in family['methods']['uniform'] if s != 'average']
    out += [f'## {name}: multiple-choice accuracy (log-likelihood, acc_norm)', '',
            *_table(family['methods'], suites), '',
            f'## {name}: exact match (greedy decoding)', '',
            *_table(family['exact_match'], suites), '',
            *_mixtures(workdir, name, seeds, suites, list(family['methods'])),
            f'## {name}: selection and the discrete variant', '', *_discrete(family), '',
            f'Wall time per seed (mean; solve, greedy, gamma and exhaustive per candidate): '
            f'{_timings(workdir, name, seeds)}.', '']
  return '\n'.join(out)


def write(workdir: str, results: dict, out_dir: str | None = None) -> list[str]:
  """results.md and <family>/potentials.png|svg (each family's first seed) into out_dir (default
  the workdir)."""
  out_dir = out_dir or workdir
  os.makedirs(out_dir, exist_ok=True)
  written = [atomic.write_text(os.path.join(out_dir, 'results.md'), markdown(results, workdir))]
  for name in results['families']:
    run = os.path.join(workdir, name, f'seed_{results["seeds"][0]}')
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    written += potentials_figure.write_for(run, os.path.join(out_dir, name, 'potentials'))
  return written
