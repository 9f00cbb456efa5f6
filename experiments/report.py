r"""Tables from finished runs: per-domain eval loss (and accuracy) of each run, side by side.

  python -m experiments.report --root=/tmp/compare          # every run directly under ROOT
  python -m experiments.report --workdirs=/tmp/a,/tmp/b     # these runs
Writes ROOT/report.md (or --out) and prints it. A run is a directory with summary.json (written by
experiments.train at its end); its name in the table is the directory's name.
"""

import json
import math
import os

from absl import flags

from experiments import cli

_ROOT = flags.DEFINE_string('root', None, 'A directory whose subdirectories are runs.')
_WORKDIRS = flags.DEFINE_list('workdirs', [], 'Run directories.')
_OUT = flags.DEFINE_string('out', None, 'Markdown output (default ROOT/report.md).')


def find_runs(root: str | None, workdirs) -> list[str]:
  runs = list(workdirs)
  if root:
    if not os.path.isdir(root):
      raise ValueError(f'root: not a directory: {root!r}')
    runs += sorted(os.path.join(root, d) for d in os.listdir(root)
                   if os.path.exists(os.path.join(root, d, 'summary.json')))
  for run in runs:
    if not os.path.exists(os.path.join(run, 'summary.json')):
      raise ValueError(f'workdirs: {run!r} has no summary.json (not a finished run)')
  if not runs:
    raise ValueError('root: no finished runs found (give --root or --workdirs)')
  return runs


def load_summary(run: str) -> dict:
  with open(os.path.join(run, 'summary.json')) as f:
    return json.load(f)


def _cell(value) -> str:
  return '' if value is None or not math.isfinite(value) else f'{value:.4f}'


def comparison_table(runs: list[str], metric: str = 'loss') -> str:
  """Rows: runs; columns: domains (eval/<domain>/<metric>) and their mean; best of each in bold."""
  summaries = {os.path.basename(os.path.normpath(r)): load_summary(r) for r in runs}
  domains = []
  for s in summaries.values():
    domains += [d for d in s['domains'] if d not in domains]
  values = {name: [s['eval'].get(f'eval/{d}/{metric}') for d in domains]
            for name, s in summaries.items()}
  if not any(v is not None for row in values.values() for v in row):
    return ''
  for row in values.values():
    present = [v for v in row if v is not None]
    row.append(sum(present) / len(present) if len(present) == len(domains) else None)
  lower_better = metric == 'loss'
  best = []
  for j in range(len(domains) + 1):
    column = [row[j] for row in values.values() if row[j] is not None]
    best.append((min if lower_better else max)(column) if column else None)
  head = f'| run | ' + ' | '.join(domains) + f' | mean {metric} |'
  lines = [head, '|---|' + '---:|' * (len(domains) + 1)]
  for name, row in values.items():
    cells = [f'**{_cell(v)}**' if v is not None and v == best[j] else _cell(v)
             for j, v in enumerate(row)]
    lines.append(f'| {name} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def report(runs: list[str]) -> str:
  parts = ['## Held-out loss per domain (lower is better)', comparison_table(runs, 'loss')]
  accuracy = comparison_table(runs, 'accuracy')
  if accuracy:
    parts += ['## Exact-match accuracy (higher is better)', accuracy]
  bullets = []
  for run in runs:
    s = load_summary(run)
    weights = ', '.join(f'{d} {w:.3f}' for d, w in zip(s['domains'], s['weights']))
    bullets.append(f'- {os.path.basename(os.path.normpath(run))}: {weights}')
  parts += ['## Final mixture weights', '\n'.join(bullets)]
  return '\n\n'.join(parts) + '\n'


def main(argv):
  del argv
  try:
    runs = find_runs(_ROOT.value, _WORKDIRS.value)
  except ValueError as e:
    cli.fail(e)
  text = report(runs)
  out = _OUT.value or os.path.join(_ROOT.value or os.path.dirname(runs[0]), 'report.md')
  with open(out + '.tmp', 'w') as f:
    f.write(text)
  os.replace(out + '.tmp', out)
  print(text)
  print(f'(written to {out})')


if __name__ == '__main__':
  cli.run(main)
