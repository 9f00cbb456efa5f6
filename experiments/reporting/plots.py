"""Plots and markdown tables for whatever a workdir holds: one run, a directory of runs (a sweep or a
comparison), a continual comparison (scores.json) or a TaskPGM workdir (potentials.npz).

`report_dir(path)` writes weights, eval_curves, source_vs_target and potentials (.png and .svg) and
report.md. It defines no flags, so any CLI (report, sweep, quickstart) can import it.
"""

import json
import math
import os
import zipfile

import numpy as np

from experiments.training import atomic
from experiments.training import metrics as metrics_lib
from experiments.reporting.figures import plt as _plt
from experiments.reporting.figures import save as _save
from experiments.reporting import taskpgm_report
from experiments.reporting.potentials_figure import potentials_heatmap
from experiments.reporting.potentials_figure import short as _short

_SKIP = {'checkpoints', 'tb'}  # never runs, and large: not worth walking into


def _load_json(path: str):
  """The JSON in `path`, None when there is no such file; a ValueError naming a file that does not
  parse (a run killed mid-write, an edited file)."""
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ValueError(f'{path}: not valid JSON ({e})') from None


def _load_npz(path: str) -> dict | None:
  """The arrays in `path`, None when there is no such file; a ValueError naming a broken one."""
  if not os.path.exists(path):
    return None
  try:
    z = np.load(path)
    if not isinstance(z, np.lib.npyio.NpzFile):
      raise ValueError('one array, not an archive of them')
    with z:
      return dict(z)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f'{path}: not a readable .npz file ({str(e).splitlines()[0]})') from None


def _name(run: str) -> str:
  return os.path.basename(os.path.normpath(run))


def load_summary(run: str) -> dict | None:
  """A finished run's summary.json (None if there is none); ValueError if it is not one."""
  path = os.path.join(run, 'summary.json')
  summary = _load_json(path)
  if summary is not None and not (
      isinstance(summary, dict) and isinstance(summary.get('eval'), dict)
      and isinstance(summary.get('domains'), list) and isinstance(summary.get('weights'), list)
      and len(summary['domains']) == len(summary['weights'])):
    raise ValueError(f'{path}: not a run summary (expected an object with `domains`, `weights` '
                     'and `eval`)')
  return summary


# --- markdown tables ------------------------------------------------------------------------------
def _cell(value, digits: int = 4) -> str:
  return '' if value is None or not math.isfinite(value) else f'{value:.{digits}f}'


def _table(head: list[str], rows: dict[str, list[str]]) -> str:
  return '\n'.join(['| ' + ' | '.join(head) + ' |', '|---|' + '---:|' * (len(head) - 1)] +
                   [f'| {name} | ' + ' | '.join(cells) + ' |' for name, cells in rows.items()])


def _bold_best(rows: dict, higher_better: bool, digits: int) -> dict[str, list[str]]:
  """Cells of each row, the best of each column in bold (ties all bold)."""
  best = []
  for column in zip(*rows.values()):
    column = [v for v in column if v is not None and math.isfinite(v)]
    # A constant column has no best: bolding every cell would only hide the real winners.
    best.append((max if higher_better else min)(column) if len(set(column)) > 1 else None)
  return {name: [f'**{_cell(v, digits)}**' if v is not None and v == b else _cell(v, digits)
                 for v, b in zip(row, best)] for name, row in rows.items()}


def comparison_table(runs: list[str], metric: str = 'loss', names=None) -> str:
  """Rows: runs; columns: domains (eval/<domain>/<metric>) and their mean; best of each in bold."""
  summaries = {n: load_summary(r) for n, r in zip(names or map(_name, runs), runs)}
  domains = list(dict.fromkeys(d for s in summaries.values() for d in s['domains']))
  values = {name: [s['eval'].get(f'eval/{d}/{metric}') for d in domains]
            for name, s in summaries.items()}
  if not any(v is not None for row in values.values() for v in row):
    return ''
  for row in values.values():  # a mean over some domains only would not compare with the others
    row.append(sum(row) / len(row) if None not in row else None)
  return _table(['run'] + domains + [f'mean {metric}'], _bold_best(values, metric != 'loss', 4))


def report(runs: list[str], names=None) -> str:
  """The comparison tables (held-out loss, accuracy if any) and each run's final weights."""
  names = names or [_name(r) for r in runs]
  parts = ['## Held-out loss per domain (lower is better)', comparison_table(runs, 'loss', names)]
  accuracy = comparison_table(runs, 'accuracy', names)
  if accuracy:
    parts += ['## Exact-match accuracy (higher is better)', accuracy]
  bullets = [f'- {name}: ' + ', '.join(f'{d} {w:.3f}' for d, w in zip(s['domains'], s['weights']))
             for name, s in ((n, load_summary(r)) for n, r in zip(names, runs))]
  return '\n\n'.join(parts + ['## Final mixture weights', '\n'.join(bullets)]) + '\n'


# --- what a path holds ----------------------------------------------------------------------------
def _is_run(path: str) -> bool:
  # mixer.jsonl marks a trainer run even before it finishes; a population member has only metrics.
  return any(os.path.exists(os.path.join(path, f)) for f in ('summary.json', 'mixer.jsonl'))


def discover_runs(path: str) -> dict[str, str]:
  """{name: run dir}: `path` itself, or runs one or two levels below it (a comparison nests some,
  e.g. oracle/share_0.5), named by their path relative to `path`."""
  if _is_run(path):
    return {_name(path): path}
  runs = {}
  for d in sorted(set(os.listdir(path)) - _SKIP):
    sub = os.path.join(path, d)
    if _is_run(sub):
      runs[d] = sub
    elif os.path.isdir(sub):
      runs.update({f'{d}/{e}': os.path.join(sub, e) for e in sorted(set(os.listdir(sub)) - _SKIP)
                   if _is_run(os.path.join(sub, e))})
  return runs


def weight_history(run: str) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(domains, steps_T, weights_DxT) of every mixer choice; the last holds to the end of the run."""
  metrics = metrics_lib.read_jsonl(os.path.join(run, 'metrics.jsonl'))
  rows = metrics_lib.read_jsonl(os.path.join(run, 'mixer.jsonl'))
  rows = [r for r in rows or metrics if any(k.startswith('mixture/') for k in r)]
  if not rows:
    return [], np.zeros(0), np.zeros((0, 0))
  names = [k[len('mixture/'):] for k in rows[0] if k.startswith('mixture/')]
  end = max([r['step'] for r in metrics + rows] + [(load_summary(run) or {}).get('step', 0)])
  rows = rows + [dict(rows[-1], step=end)]
  weights = np.array([[float(r.get(f'mixture/{n}', np.nan)) for n in names] for r in rows]).T
  return names, np.array([r['step'] for r in rows]), weights


def eval_history(run: str) -> dict[tuple[str, str], tuple[list, list]]:
  """{(domain, 'loss'|'accuracy'): (steps, values)} from the eval steps of metrics.jsonl."""
  out = {}
  for r in metrics_lib.read_jsonl(os.path.join(run, 'metrics.jsonl')):
    for k, v in r.items():
      if k.startswith('eval/') and k.count('/') >= 2 and isinstance(v, (int, float)):
        steps, values = out.setdefault(tuple(k[len('eval/'):].rsplit('/', 1)), ([], []))
        steps.append(r['step'])
        values.append(v)
  return out


# --- figures --------------------------------------------------------------------------------------
def _grid(n: int, width: float = 3.8, height: float = 2.9):
  cols = min(n, 4)
  fig, axes = _plt().subplots(math.ceil(n / cols), cols, squeeze=False, layout='constrained',
                              figsize=(width * cols, height * math.ceil(n / cols)))
  for ax in axes.flat[n:]:
    ax.axis('off')
  return fig, list(axes.flat[:n])


def _colors(names) -> dict:
  cmap = _plt().get_cmap('tab10' if len(names) <= 10 else 'tab20')
  return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def weights_figure(runs: dict[str, str], out_prefix: str) -> list[str]:
  """One stacked-area panel per run; a domain keeps its colour across panels."""
  histories = {k: h for k, h in ((k, weight_history(r)) for k, r in runs.items()) if h[0]}
  if not histories:
    return []
  domains = list(dict.fromkeys(d for h in histories.values() for d in h[0]))
  color = _colors(domains)
  fig, axes = _grid(len(histories))
  for ax, (name, (names, steps, weights)) in zip(axes, histories.items()):
    ax.stackplot(steps, np.nan_to_num(weights), step='post', colors=[color[n] for n in names])
    ax.set(xlim=(steps[0], steps[-1]), ylim=(0, 1), xlabel='step', ylabel='mixture weight')
    ax.set_title(name, fontsize=10)
  handles = [_plt().Rectangle((0, 0), 1, 1, color=color[d]) for d in domains]
  fig.legend(handles, domains, title='domain', loc='outside right center')
  fig.suptitle('Mixture weights over training (each mixer update, held until the next)')
  return _save(fig, out_prefix)


def eval_curves_figure(runs: dict[str, str], out_prefix: str) -> list[str]:
  """One run: a loss panel (and an accuracy panel), a line per domain. Several: a panel per domain
  and metric, a line per run."""
  histories = {k: h for k, h in ((k, eval_history(r)) for k, r in runs.items()) if h}
  if not histories:
    return []
  keys = list(dict.fromkeys(k for h in histories.values() for k in h))
  keys = sorted(keys, key=lambda k: (k[1] != 'loss', keys.index(k)))  # losses first
  single = len(histories) == 1
  if single:  # panels are metrics, lines are domains
    (run, history), = histories.items()
    panels = {m: {d: history[(d, m)] for d, mm in keys if mm == m} for _, m in keys}
  else:  # panels are (domain, metric), lines are runs
    panels = {k: {n: h[k] for n, h in histories.items() if k in h} for k in keys}
  labels = list(dict.fromkeys(l for lines in panels.values() for l in lines))
  color, handles = _colors(labels), {}
  fig, axes = _grid(len(panels), width=4.2 if single else 3.8)
  for ax, (panel, lines) in zip(axes, panels.items()):
    for label, (steps, values) in lines.items():
      handles[label], = ax.plot(steps, values, marker='.', color=color[label],
                                linestyle='-' if labels.index(label) < 10 else '--')  # tab20 pairs
    metric = panel if single else panel[1]
    ax.set(xlabel='step', ylabel=f'held-out {metric}' + (' (lower: better)' if metric == 'loss'
                                                          else ' (higher: better)'))
    if metric == 'accuracy':
      ax.set_ylim(-0.03, 1.03)  # a fraction: an all-zero curve should look like zero
    ax.set_title(metric if single else f'{panel[0]}: {metric}', fontsize=10)
  fig.legend([handles[l] for l in labels], labels, title='domain' if single else 'run',
             loc='outside right center')
  fig.suptitle(f'Held-out metrics of {run}' if single else 'Held-out metrics per domain')
  return _save(fig, out_prefix)


def pareto_front(points) -> list[int]:
  """Indices of the non-dominated points when maximizing both coordinates, sorted by x.

  A point is dominated if another is >= on both and > on one; equal points do not dominate each
  other, so ties are all on the front. Non-finite points are never on it."""
  pts = [(float(x), float(y)) for x, y in points]
  ok = [i for i, p in enumerate(pts) if all(map(math.isfinite, p))]
  front = [i for i in ok if not any(
      pts[j][0] >= pts[i][0] and pts[j][1] >= pts[i][1] and pts[j] != pts[i] for j in ok)]
  return sorted(front, key=lambda i: (pts[i][0], -pts[i][1], i))


def _label_offsets(ax, xy, texts, fontsize: float = 8) -> list[tuple[float, float, str]]:
  """(dx, dy, ha) in points per label: beside its point, moved up or down past labels already
  placed (top to bottom), and on the left of points in the right part of the axes."""
  to_pt = 72 / ax.figure.dpi
  pts = ax.transData.transform(np.asarray(xy, float)) * to_pt
  right = ax.transAxes.transform((0.6, 0))[0] * to_pt
  boxes, out = [], [None] * len(xy)
  for i in sorted(range(len(xy)), key=lambda i: -pts[i][1]):
    width, height, left = 0.55 * fontsize * len(texts[i]) + 4, fontsize + 3, pts[i][0] > right
    x0 = pts[i][0] - 6 - width if left else pts[i][0] + 6
    for dy in [4] + [4 + sign * k * height for k in range(1, 12) for sign in (-1, 1)]:
      box = (x0, pts[i][1] + dy, x0 + width, pts[i][1] + dy + height)
      if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                 for b in boxes):
        break
    boxes.append(box)
    out[i] = (-6 if left else 6, dy, 'right' if left else 'left')
  return out


def source_vs_target_figure(points: dict[str, tuple[float, float]], out_prefix: str,
                            xlabel: str, ylabel: str, title: str) -> list[str]:
  """Each method a point; the Pareto front highlighted and joined as a staircase."""
  merged = {}  # equal scores (e.g. the best static ratio is often another row) share one label
  for name, p in points.items():
    merged.setdefault(tuple(p), []).append(name)
  xy, texts = list(merged), [' = '.join(names) for names in merged.values()]
  front = pareto_front(xy)
  fig, ax = _plt().subplots(figsize=(8, 6))
  fig.subplots_adjust(left=0.12, right=0.96, top=0.92, bottom=0.2)  # fixed: labels placed in points
  ax.scatter(*np.array(xy).T, color='tab:gray', s=30, label='dominated', zorder=2)
  # The boundary of what the front dominates: down from each point, then right to the next.
  ax.step(*np.array([xy[i] for i in front]).T, where='pre', color='tab:red', lw=1.5, marker='o',
          markersize=8, zorder=3, label='Pareto front')
  ax.margins(0.12)
  ax.set(xlim=ax.get_xlim(), ylim=ax.get_ylim())  # freeze, so label placement sees final scales
  for i, (dx, dy, ha) in enumerate(_label_offsets(ax, xy, texts)):
    ax.annotate(texts[i], xy[i], xytext=(dx, dy), textcoords='offset points', fontsize=8, ha=ha,
                fontweight='bold' if i in front else 'normal',
                arrowprops=dict(arrowstyle='-', lw=0.5, color='0.5') if abs(dy) > 4 else None)
  ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
  ax.grid(alpha=0.3)
  ax.legend(loc='upper left', bbox_to_anchor=(1.01, 1))
  return _save(fig, out_prefix)


# --- scores and the report ------------------------------------------------------------------------
def parse_group(field: str, text) -> list[str]:
  """'a,b' -> ['a', 'b']; an empty entry or a repeated domain is a user mistake."""
  parts = [p.strip() for p in (text if isinstance(text, (list, tuple)) else str(text).split(','))]
  if not parts or any(not p for p in parts) or len(set(parts)) != len(parts):
    raise ValueError(f'{field}: expected comma-separated domains like dom1,dom2, got {text!r}')
  return parts


def group_scores(runs: dict[str, str], source, target) -> dict[str, tuple[float, float]]:
  """{run: (source, target)}, score = minus the mean final eval loss over the group's domains."""
  groups = {'source': parse_group('source', source), 'target': parse_group('target', target)}
  evals = {n: s['eval'] for n, s in ((n, load_summary(r)) for n, r in runs.items()) if s}
  known = sorted({k.split('/', 1)[1].rsplit('/', 1)[0] for e in evals.values() for k in e})
  missing = [(field, d) for field, g in groups.items() for d in g if d not in known]
  if missing:
    raise ValueError(f'{missing[0][0]}: domain {missing[0][1]!r} has no eval loss in any finished '
                     f'run (known: {",".join(known) or "none"})')
  losses = {n: [[e.get(f'eval/{d}/loss') for d in g] for g in groups.values()]
            for n, e in evals.items()}
  return {n: tuple(-float(np.mean(g)) for g in l) for n, l in losses.items()
          if None not in l[0] + l[1]}  # a run without every domain of a group is not comparable


def _scatter_points(runs, scores, source, target):
  """(points, axis labels, title) of the source-vs-target plot; explicit groups win."""
  if source is not None:
    groups = {g: parse_group(g, v) for g, v in (('source', source), ('target', target))}
    labels = [f'{g} score\n= -mean final eval loss of {",".join(d)}' for g, d in groups.items()]
    return group_scores(runs, source, target), labels, 'Source vs target (higher is better on both)'
  if scores:  # generalization rows (setting: method) start from other bases: not comparable
    main = {k: v for k, v in scores.items() if ':' not in k} or scores
    return ({k: (v['source'], v['target']) for k, v in main.items()},
            [f'{g} score (change vs. the base model)' for g in ('source', 'target')],
            'Continual pre-training: source vs target (higher is better on both)')
  return {}, None, None


def report_dir(path: str, out_dir: str | None = None, source=None, target=None,
               shown: str | None = None) -> list[str]:
  """Every plot and table `path` supports, written into `out_dir` (default `path`); returns the
  files written. `shown`: the workdir the report names (default `path`; e.g. the gs:// URL of which
  `path` is a local copy). Raises ValueError naming the field for a missing path, bad groups or nothing to
  report, before writing anything."""
  if not os.path.isdir(path):
    raise ValueError(f'workdir: not a directory: {path!r}')
  if (source is None) != (target is None):
    raise ValueError(f'{"target" if target is None else "source"}: give both --source and '
                     '--target (domain groups), got only one')
  files = lambda name: os.path.join(path, name)
  bench = _load_json(files('results.json'))
  if isinstance(bench, dict) and 'families' in bench:  # TaskPGM over families and seeds
    return taskpgm_report.write(path, bench, out_dir)
  runs, scores, results = discover_runs(path), _load_json(files('scores.json')), None
  pots = _load_npz(files('potentials.npz'))
  if pots is not None or os.path.exists(files('mixtures.json')):  # a TaskPGM workdir
    results, runs = _load_json(files('results.json')), {}  # its runs are population members
  if not (runs or scores or pots is not None or results):
    raise ValueError(f'workdir: nothing to report in {path!r} (no run with summary.json or '
                     'mixer.jsonl, no scores.json, no potentials.npz)')
  points, labels, title = _scatter_points(runs, scores, source, target)
  front = {list(points)[i] for i in pareto_front(list(points.values()))}
  os.makedirs(out_dir := out_dir or path, exist_ok=True)
  out = lambda name: os.path.join(out_dir, name)
  written, parts = [], [f'# Report: {shown or os.path.abspath(path)}']

  def figure(name, caption, paths):
    written.extend(paths)
    if paths:
      parts.append(f'## {caption}\n\n![{caption}]({name}.png) ([svg]({name}.svg))')

  figure('weights', 'Mixture weights over time', weights_figure(runs, out('weights')))
  figure('eval_curves', 'Held-out metrics over time', eval_curves_figure(runs, out('eval_curves')))
  if points:
    figure('source_vs_target', 'Source vs target, Pareto front',
           source_vs_target_figure(points, out('source_vs_target'), *labels, title))
  elif runs:
    print('note: no source_vs_target plot (no scores.json, or no finished run with every domain '
          'of --source/--target; give --source=D1,D2 --target=D3)')
  on_front = lambda n: 'yes' if n in front else ''
  if source is not None and points:
    parts.append('; '.join(labels).replace('\n', '') + '.\n\n' + _table(
        ['run', 'source', 'target', 'on Pareto front'],
        {n: [f'{x:+.4f}', f'{y:+.4f}', on_front(n)] for n, (x, y) in points.items()}))
  if scores:
    parts.append('## Scores (Pareto front among the rows without a setting prefix)\n\n' + _table(
        ['run', 'source', 'target', 'balanced', 'on Pareto front'],
        {n: [f'{s[k]:+.4f}' for k in ('source', 'target', 'balanced')] + [on_front(n)]
         for n, s in scores.items()}))
  if pots is not None:
    figure('potentials', 'TaskPGM potentials', potentials_heatmap(pots, out('potentials')))
  if results:
    tasks = list(dict.fromkeys(t for r in results.values() for t in r))
    parts.append('## TaskPGM: test accuracy per task (higher is better)\n\n' + _table(
        ['method'] + [_short(t) for t in tasks],
        _bold_best({m: [r.get(t) for t in tasks] for m, r in results.items()}, True, 3)))
  finished = {n: r for n, r in runs.items() if os.path.exists(os.path.join(r, 'summary.json'))}
  if finished:
    parts.append(report(list(finished.values()), list(finished)))
  if os.path.exists(files('results.md')) and results is None:  # a sweep's own table
    parts.append(f'See also [results.md]({os.path.relpath(files("results.md"), out_dir)}).')
  written.append(atomic.write_text(out('report.md'), '\n\n'.join(parts).rstrip() + '\n'))
  return written
