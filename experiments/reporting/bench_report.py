"""mixbench's report: means with 95% confidence intervals, paired differences, and the figures.

Every comparison is over the reported seeds: a method's score is its mean over seeds +- the half
width of a 95% Student-t interval (n - 1 degrees of freedom), and the difference of two methods is
taken seed by seed (their runs share the data stream), with its own interval. The headroom of the
setting is the oracle's best dynamic schedule minus uniform, in standard deviations of that paired
difference (the issue asks for at least 3).
"""

import math

import numpy as np
from scipy import stats as scipy_stats

from experiments.reporting import figures
from experiments.reporting import plots

BASELINES = ('uniform', 'best_static', 'odm', 'doremi', 'regmix')


def mean_ci(values) -> tuple[float, float]:
  """(mean, half width of the 95% t interval); the half width is NaN for fewer than 2 values."""
  x = np.asarray(values, np.float64)
  if len(x) < 2:
    return float(x.mean()) if len(x) else math.nan, math.nan
  half = scipy_stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
  return float(x.mean()), float(half)


def paired(a, b) -> dict:
  """a - b seed by seed: mean, CI half width, standard deviation, and whether the CI is above 0."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  mean, half = mean_ci(d)
  sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
  return {'mean': mean, 'ci': half, 'sd': sd, 'above_zero': bool(mean - half > 0),
          'below_zero': bool(mean + half < 0)}


def signal_noise(table_CxS) -> dict:
  """Signal: the SD of the candidates' mean scores; noise: the residual SD of the candidate x seed
  table once each candidate's and each seed's mean are removed (two-way, no interaction); their
  ratio (Heineman et al. 2025's signal-to-noise, with seeds as the noise)."""
  x = np.asarray(table_CxS, np.float64)
  c, s = x.shape
  resid = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
  noise = math.sqrt((resid ** 2).sum() / ((c - 1) * (s - 1))) if c > 1 and s > 1 else math.nan
  signal = float(x.mean(1).std(ddof=1)) if c > 1 else math.nan
  return {'signal': signal, 'noise': noise, 'snr': signal / noise if noise > 0 else math.nan}


def _fmt(mean, half, digits=4) -> str:
  return f'{mean:+.{digits}f} ± {half:.{digits}f}' if math.isfinite(half) else f'{mean:+.{digits}f}'


def _diff(p) -> str:
  mark = ' ✓' if p['above_zero'] else (' ✗' if p['below_zero'] else '')
  return _fmt(p['mean'], p['ci']) + mark


def best_baseline(methods: dict) -> str | None:
  present = [m for m in BASELINES if m in methods]
  return max(present, key=lambda m: np.mean(methods[m]['balanced'])) if present else None


def _rows_table(rows: dict) -> list[str]:
  """uniform and each agent per row, each agent − uniform, and agent − agent_plain when both ran."""
  agents = [m for m in next(iter(rows.values())) if m != 'uniform']
  both = {'agent', 'agent_plain'} <= set(agents)
  head = ['setting', 'uniform'] + agents + [f'{a} − uniform' for a in agents]
  head += ['agent − agent_plain'] if both else []
  out = ['| ' + ' | '.join(head) + ' |', '|---|' + '---:|' * (len(head) - 1)]
  for row, r in rows.items():
    cells = [_fmt(*mean_ci(r[m]['balanced'])) for m in ['uniform'] + agents]
    cells += [_diff(paired(r[a]['balanced'], r['uniform']['balanced'])) for a in agents]
    cells += [_diff(paired(r['agent']['balanced'], r['agent_plain']['balanced']))] if both else []
    out.append(f'| {row} | ' + ' | '.join(cells) + ' |')
  return out


def markdown(results: dict, timings: dict | None = None) -> str:
  methods, seeds = results['methods'], results['seeds']
  out = ['# mixbench results', '',
         f'Reported seeds: {", ".join(map(str, seeds))} (n = {len(seeds)}). Scores are means ± the '
         'half width of a 95% t interval; differences are paired by seed (✓: CI above 0, ✗: below).',
         '']
  if 'uniform' in methods and 'best_dynamic' in methods:
    p = paired(methods['best_dynamic']['balanced'], methods['uniform']['balanced'])
    if p['sd'] > 0:
      ratio = p['mean'] / p['sd']
    else:  # one seed (no SD), or identical differences
      ratio = math.inf if p['sd'] == 0 and p['mean'] > 0 else math.nan
    out += ['## Headroom', '',
            f'best dynamic ({results["oracle"]["best_dynamic"]}) − uniform: {_diff(p)}, '
            f'{ratio:.1f} standard deviations of the paired difference '
            f'({"meets" if ratio >= 3 else "does not meet"} the 3-SD bar; NaN: under 2 seeds).']
    if 'best_static' in methods:
      q = paired(methods['best_static']['balanced'], methods['uniform']['balanced'])
      out.append(f'best static ({results["oracle"]["best_static"]}) − uniform: {_diff(q)}.')
    out.append('')
  base = best_baseline(methods)
  out += ['## Methods (balanced = mean of source and target score)', '',
          f'| method | balanced | source | target | − uniform | − best baseline ({base}) |',
          '|---|---:|---:|---:|---:|---:|']
  for name, s in methods.items():
    cells = [_fmt(*mean_ci(s[k])) for k in ('balanced', 'source', 'target')]
    for ref in ('uniform', base):
      cells.append(_diff(paired(s['balanced'], methods[ref]['balanced']))
                   if ref in methods and ref != name else '')
    out.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  if 'agent' in methods:
    out += ['', '## The agent against each method (balanced, paired by seed)', '',
            '| method | agent − method |', '|---|---:|']
    for name in methods:
      if name != 'agent':
        out.append(f'| {name} | {_diff(paired(methods["agent"]["balanced"], methods[name]["balanced"]))} |')
    if 'uniform' in methods and 'best_dynamic' in methods:
      head = np.mean(methods['best_dynamic']['balanced']) - np.mean(methods['uniform']['balanced'])
      got = np.mean(methods['agent']['balanced']) - np.mean(methods['uniform']['balanced'])
      share = got / head if head > 0 else math.nan
      out.append(f'\nShare of the oracle\'s dynamic headroom the agent captures: {share:.2f} '
                 '(agent − uniform over best dynamic − uniform, means).')
  if results.get('rows'):
    out += ['', '## Generalization without retraining (balanced)', ''] + _rows_table(results['rows'])
  oracle = results.get('oracle')
  if oracle:
    ranked = sorted(oracle['scores'], key=lambda n: -np.mean(oracle['scores'][n]))
    out += ['', f'## Oracle search (tuning seeds {oracle["tune_seeds"]}, never reported): top 8 '
            f'of {len(ranked)}', '', '| candidate | balanced (tuning seeds) |', '|---|---:|']
    out += [f'| {n} | {_fmt(*mean_ci(oracle["scores"][n]))} |' for n in ranked[:8]]
  snr = results.get('metric_snr')
  if snr and snr['tables']:
    n = len(next(iter(snr['tables'].values())))
    out += ['', f'## Choice metric: signal and noise of the balanced score on the oracle\'s {n} '
            'candidates (tuning seeds)', '', '| metric | signal | noise | signal / noise |',
            '|---|---:|---:|---:|']
    for metric, table in snr['tables'].items():
      r = signal_noise(table)
      mark = ' (chosen: choices.metric)' if metric == snr['chosen'] else (
          ' (held-out loss alone)' if metric == 'loss' else '')
      out.append(f'| {metric}{mark} | {r["signal"]:.4f} | {r["noise"]:.4f} | {r["snr"]:.2f} |')
  stages = results.get('timings') or {}
  if stages or timings:
    out += ['', '## Wall time (2 CPU cores unless stated)', '']
    out += [f'- {k}: {v:.0f} s' for k, v in stages.items()]
    if stages.get('trajectories'):
      rate = results.get('trajectories', 0) / stages['trajectories'] * 3600
      out.append(f'- trajectories per hour: {rate:.0f}')
    out += [f'- {k}: {v:.0f} s' for k, v in (timings or {}).items()]
  return '\n'.join(out) + '\n'


def group_shares(weights_SxKxD, is_target_D) -> np.ndarray:
  """Mean target-field share per re-weighting step over seeds (K,)."""
  w = np.asarray(weights_SxKxD, np.float64)
  return (w * np.asarray(is_target_D, np.float64)).sum(-1).mean(0)


def write_figures(results: dict, out_dir: str) -> list[str]:
  plt = figures.plt()
  methods = results['methods']
  names = results['domains']
  is_target = np.array([results['roles'][n] == 'target' for n in names])
  paths = []
  # Source vs target with error bars and the Pareto front.
  fig, ax = plt.subplots(figsize=(7, 5))
  pts = {m: (mean_ci(s['source']), mean_ci(s['target'])) for m, s in methods.items()}
  xy = [(p[0][0], p[1][0]) for p in pts.values()]
  for (m, ((x, xe), (y, ye))) in pts.items():
    ax.errorbar(x, y, xerr=np.nan_to_num(xe), yerr=np.nan_to_num(ye), fmt='o', capsize=3, label=m)
  front = plots.pareto_front(xy)
  if front:
    ax.step(*np.array([xy[i] for i in front]).T, where='pre', color='tab:red', lw=1, alpha=0.6,
            label='Pareto front')
  ax.set(xlabel='source score (mean ± 95% CI)', ylabel='target score (mean ± 95% CI)',
         title='mixbench: source vs target')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1))
  paths += figures.save(fig, f'{out_dir}/source_vs_target')
  # Weights over time per method (mean over seeds), stacked by domain.
  weights = results.get('weights', {})
  if weights:
    n = len(weights)
    cols = min(n, 4)
    fig, axes = plt.subplots(-(-n // cols), cols, figsize=(3.6 * cols, 2.8 * -(-n // cols)),
                             squeeze=False)
    for ax, (m, w) in zip(axes.flat, weights.items()):
      mean_KxD = np.asarray(w, np.float64).mean(0)
      ax.stackplot(np.arange(1, len(mean_KxD) + 1), mean_KxD.T, labels=names)
      ax.set(title=m, xlabel='re-weighting step', ylim=(0, 1))
    for ax in list(axes.flat)[n:]:
      ax.axis('off')
    axes.flat[0].legend(fontsize=6, loc='upper left', bbox_to_anchor=(0, -0.25), ncol=2)
    paths += figures.save(fig, f'{out_dir}/weights')
  # The agent's target share over time beside the oracle's best schedule, and the source-field
  # data each uses (cumulative source share of the tokens) with their target scores.
  if 'agent' in weights:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for m in ('agent', 'best_dynamic', 'best_static', 'uniform', 'odm'):
      if m in weights:
        share = group_shares(weights[m], is_target)
        a1.plot(np.arange(1, len(share) + 1), share, marker='.', label=m)
        used = np.cumsum(1 - share) / np.arange(1, len(share) + 1)
        a2.plot(np.arange(1, len(share) + 1), used,
                label=f'{m} (target {np.mean(methods[m]["target"]):+.3f})')
    a1.set(xlabel='re-weighting step', ylabel='target-field share', title='group shares over time',
           ylim=(0, 1))
    a2.set(xlabel='re-weighting step', ylabel='source-field share of tokens so far',
           title='source-field data used', ylim=(0, 1))
    for ax in (a1, a2):
      ax.grid(alpha=0.3)
      ax.legend(fontsize=7)
    paths += figures.save(fig, f'{out_dir}/agent_analysis')
  return paths
