"""A sweep's results: results.csv and results.md (a row per run), and the best run per metric.

Each row holds the run's status, swept values, final step, final eval metrics from its
summary.json (every domain's and their mean), final train loss from metrics.jsonl and, in
results.csv only, the mixture weights. A metric whose name has 'loss' in it is best lowest, one
with 'accuracy' highest.
"""

import csv
import io
import json
import math
import os
from typing import Any, Callable

from experiments.recipes import sweep_runner
from experiments.recipes import sweep_spec
from experiments.training import atomic


def _final_train_loss(workdir: str):
  for line in reversed(sweep_runner.tail(os.path.join(workdir, 'metrics.jsonl'), 65536)):
    try:
      record = json.loads(line)
    except ValueError:
      continue
    if 'train/loss' in record:
      return record['train/loss']
  return None


def _direction(metric: str) -> str | None:
  if 'accuracy' in metric:
    return 'max'
  if 'loss' in metric:
    return 'min'
  return None


def gather(sweep: sweep_spec.Sweep, runs: list[sweep_spec.Run],
           outcomes: dict[str, sweep_runner.Outcome]):
  """(columns, rows): a row per run with its swept values and final metrics from summary.json."""
  rows, domains, metrics = [], [], []
  for run in runs:
    summary = atomic.read_json(os.path.join(run.workdir, 'summary.json')) or {}
    outcome = outcomes.get(run.name)
    status = outcome.status if outcome else ('done' if summary else 'missing')
    if status == 'skipped':
      status = 'done'  # finished earlier
    row = {'run': run.name, 'status': status, **run.values, 'step': summary.get('step')}
    for d in summary.get('domains', []):
      if d not in domains:
        domains.append(d)
    for key, value in (summary.get('eval') or {}).items():
      row[key] = value
      metric = key.rsplit('/', 1)[-1]
      if key.startswith('eval/') and metric not in metrics:
        metrics.append(metric)
    for d, w in zip(summary.get('domains', []), summary.get('weights', [])):
      row[f'weight/{d}'] = w
    row['train/loss'] = _final_train_loss(run.workdir) if summary else None
    rows.append(row)
  columns = ['run', 'status', *sweep.params, 'step']
  for metric in metrics:
    keys = [f'eval/{d}/{metric}' for d in domains]
    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    columns += keys + [f'eval/mean/{metric}']
    for row in rows:
      present = [row[k] for k in keys if row.get(k) is not None]
      row[f'eval/mean/{metric}'] = sum(present) / len(present) if present else None
  columns.append('train/loss')
  columns += [f'weight/{d}' for d in domains]
  return columns, rows


def _cell(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return f'{value:.4f}' if math.isfinite(value) else str(value)
  return str(value)


def best_per_metric(columns: list[str], rows: list[dict]) -> list[tuple[str, str, list[str], Any]]:
  """(metric, 'lowest'|'highest', the best runs (ties), value) for every loss and accuracy column."""
  out = []
  for column in columns:
    direction = _direction(column)
    if direction is None or not (column.startswith('eval/') or column.startswith('train/')):
      continue
    scored = [(r[column], r['run']) for r in rows
              if isinstance(r.get(column), (int, float)) and math.isfinite(r[column])]
    if not scored:
      continue
    best = (min if direction == 'min' else max)(v for v, _ in scored)
    out.append((column, 'lowest' if direction == 'min' else 'highest',
                [n for v, n in scored if v == best], best))
  return out


def markdown(sweep: sweep_spec.Sweep, columns: list[str], rows: list[dict]) -> str:
  """The runs table and the best-run-per-metric table."""
  shown = [c for c in columns if not c.startswith('weight/')]  # weights: in results.csv
  lines = [f'# Sweep {sweep.name}', '',
           f'{len(rows)} runs ({sweep.kind} over {", ".join(sweep.params)}) of {sweep.config}'
           + (', with ' + ', '.join(f'{k}={sweep_spec.format_value(v)}'
                                    for k, v in sweep.overrides.items())
              if sweep.overrides else '') + '.', '',
           '## Runs', '',
           '| ' + ' | '.join(shown) + ' |',
           '|' + '|'.join('---' if c in ('run', 'status') or c in sweep.params else '---:'
                          for c in shown) + '|']
  for row in rows:
    lines.append('| ' + ' | '.join(sweep_spec.format_value(row[c]) if c in sweep.params else
                                    _cell(row.get(c)) for c in shown) + ' |')
  best = best_per_metric(columns, rows)
  if best:
    lines += ['', '## Best run per metric', '', '| metric | best | run | value |',
              '|---|---|---|---:|']
    for metric, direction, names, value in best:
      scored = sum(isinstance(r.get(metric), (int, float)) for r in rows)
      shown_names = (f'all {len(names)} runs tie' if len(names) == scored > 1
                     else ', '.join(names))
      lines.append(f'| {metric} | {direction} | {shown_names} | {_cell(value)} |')
  return '\n'.join(lines) + '\n'


def write_results(sweep: sweep_spec.Sweep, runs: list[sweep_spec.Run],
                  outcomes: dict[str, sweep_runner.Outcome],
                  sweep_dir: str) -> tuple[str, str, str]:
  """Writes results.csv and results.md in sweep_dir; returns their paths and the markdown."""
  columns, rows = gather(sweep, runs, outcomes)
  buffer = io.StringIO()
  writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction='ignore', lineterminator='\n')
  writer.writeheader()
  for row in rows:
    writer.writerow({c: '' if row.get(c) is None else row[c] for c in columns})
  os.makedirs(sweep_dir, exist_ok=True)
  csv_path, md_path = os.path.join(sweep_dir, 'results.csv'), os.path.join(sweep_dir, 'results.md')
  text = markdown(sweep, columns, rows)
  atomic.write_text(csv_path, buffer.getvalue())
  atomic.write_text(md_path, text)
  return csv_path, md_path, text


def report(sweep: sweep_spec.Sweep, runs: list[sweep_spec.Run],
           outcomes: dict[str, sweep_runner.Outcome], sweep_dir: str,
           out: Callable[[str], None] = print) -> tuple[str, str]:
  """write_results, then prints the markdown and where both files are; returns their paths."""
  csv_path, md_path, text = write_results(sweep, runs, outcomes, sweep_dir)
  out('')
  out(text)
  out(f'results: {csv_path}, {md_path}')
  return csv_path, md_path
