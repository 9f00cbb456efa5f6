"""experiments.reporting.plots / experiments.report on small synthetic workdirs (no training: fast)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from experiments.reporting import plots

DOMAINS = ('code/python', 'prose/plays', 'math/easy')


def _jsonl(path, rows):
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))


def _fake_run(path, shift: float, mixer_log: bool = True, steps: int = 40):
  """A run as experiments.training.trainer writes it: metrics.jsonl, mixer.jsonl, summary.json."""
  path.mkdir(parents=True)
  weights = lambda t: np.roll(np.array([0.5, 0.3, 0.2]) + 0.1 * t / steps * np.array([-1, 0, 1]),
                              int(shift))
  rows = []
  for step in range(10, steps + 1, 10):
    row = {'step': step, 'train/loss': 3 - step / 20, 'perf/tokens_per_sec': 1e4}
    row.update({f'mixture/{d}': float(w) for d, w in zip(DOMAINS, weights(step))})
    if step % 20 == 0:  # eval steps
      row.update({f'eval/{d}/loss': 3 - step / 20 + shift + i / 2 for i, d in enumerate(DOMAINS)})
      row['eval/math/easy/accuracy'] = min(1.0, step / 50 + shift / 4)
    rows.append(row)
  _jsonl(path / 'metrics.jsonl', rows)
  if mixer_log:
    _jsonl(path / 'mixer.jsonl', [{'step': s, **{f'mixture/{d}': float(w) for d, w in
                                                 zip(DOMAINS, weights(s))}} for s in (0, 20)])
  (path / 'summary.json').write_text(json.dumps({
      'step': steps, 'domains': list(DOMAINS), 'eval': {k: v for k, v in rows[-1].items()
                                                        if k.startswith('eval/')},
      'weights': [float(w) for w in weights(steps)]}))


@pytest.fixture
def sweep(tmp_path):
  root = tmp_path / 'sweep'
  _fake_run(root / 'a', 0.0)
  _fake_run(root / 'b', 1.0)
  _fake_run(root / 'c', 2.0, mixer_log=False)  # weights from metrics.jsonl's mixture/* keys
  _fake_run(root / 'oracle' / 'share_0.5', 0.5)  # nested, as in a continual comparison
  (root / 'results.md').write_text('| run |\n')
  return root


def _assert_figures(out, *names):
  for name in names:
    png, svg = out / f'{name}.png', out / f'{name}.svg'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 5000, name
    assert svg.read_text().rstrip().endswith('</svg>') and svg.stat().st_size > 5000, name
  assert not [p for p in os.listdir(out) if p.endswith('.tmp')]


def test_pareto_front_maximizes_both_and_keeps_ties():
  points = [(0, 3), (1, 2), (1, 1), (2, 0), (0.5, 0.5), (1, 2), (-1, 3), (2, -1), (float('nan'), 9)]
  # (1, 1) is dominated by (1, 2); (-1, 3) by (0, 3); (2, -1) by (2, 0); the two (1, 2) tie.
  assert plots.pareto_front(points) == [0, 1, 5, 3]
  assert plots.pareto_front([(0, 0)]) == [0]
  assert plots.pareto_front([]) == []
  assert sorted(plots.pareto_front([(0, 1), (1, 0), (0.5, 0.5)])) == [0, 1, 2]


def test_directory_of_runs_with_groups(sweep, tmp_path):
  out = tmp_path / 'out'
  written = plots.report_dir(str(sweep), str(out), source='code/python,prose/plays',
                             target='math/easy')
  _assert_figures(out, 'weights', 'eval_curves', 'source_vs_target')
  assert sorted(os.path.basename(p) for p in written) == sorted(
      [f'{n}.{e}' for n in ('weights', 'eval_curves', 'source_vs_target') for e in ('png', 'svg')]
      + ['report.md'])
  text = (out / 'report.md').read_text()
  assert '![Mixture weights over time](weights.png)' in text and '(source_vs_target.svg)' in text
  assert '| run | code/python | prose/plays | math/easy | mean loss |' in text
  assert '## Exact-match accuracy' in text and '| oracle/share_0.5 |' in text
  assert '-mean final eval loss of code/python,prose/plays' in text
  # Lower losses everywhere: run a (shift 0) dominates every other run.
  assert '| a | -1.2500 | -2.0000 | yes |' in text and '| b | -2.2500 | -3.0000 |  |' in text
  assert '[results.md](../sweep/results.md)' in text


def test_single_run_and_cli(sweep, capsys):
  run = sweep / 'a'
  written = plots.report_dir(str(run))
  _assert_figures(run, 'weights', 'eval_curves')
  assert not (run / 'source_vs_target.png').exists() and len(written) == 5
  assert 'note: no source_vs_target plot' in capsys.readouterr().out
  cli = subprocess.run([sys.executable, '-m', 'experiments.report', f'--workdir={sweep}'],
                       capture_output=True, text=True, timeout=120, check=True)
  assert str(sweep / 'report.md') in cli.stdout and (sweep / 'eval_curves.svg').exists()


def test_continual_scores_and_taskpgm(tmp_path):
  w = tmp_path / 'W'
  _fake_run(w / 'uniform', 0.0)
  _fake_run(w / 'agent', 0.3)
  rows = {'uniform': (-0.01, 0.18), 'agent': (-0.02, 0.19), 'best static ratio (0.5)': (-0.01, 0.18),
          'source-only': (0.03, 0.0), 'doremi': (-0.03, 0.17), 'unseen model: agent': (0.5, 0.5)}
  (w / 'scores.json').write_text(json.dumps(
      {k: {'source': s, 'target': t, 'balanced': (s + t) / 2} for k, (s, t) in rows.items()}))
  plots.report_dir(str(w))
  _assert_figures(w, 'weights', 'eval_curves', 'source_vs_target')
  text = (w / 'report.md').read_text()
  assert '| doremi | -0.0300 | +0.1700 | +0.0700 |  |' in text
  assert '| best static ratio (0.5) | -0.0100 | +0.1800 | +0.0850 | yes |' in text  # a tie
  assert '| unseen model: agent | +0.5000 | +0.5000 | +0.5000 |  |' in text  # another setting

  t = tmp_path / 'taskpgm'
  _fake_run(t / 'finetune' / 'member_000', 0.0)  # population members are not reported as runs
  tasks = ['bbh/navigate', 'rephrase/bbh/navigate', 'math/easy', 'noise/qa']
  rng = np.random.default_rng(0)
  np.savez(t / 'potentials.npz', tasks=np.array(tasks), unary=rng.normal(size=4),
           jsd=rng.uniform(size=(4, 4)), pmi=rng.normal(size=(4, 4)), sizes=np.ones(4))
  (t / 'mixtures.json').write_text('{}')
  (t / 'results.json').write_text(json.dumps(
      {'uniform': {'bbh/navigate': 0.5, 'math/easy': 0.0, 'average': 0.25},
       'taskpgm-jsd': {'bbh/navigate': 0.75, 'math/easy': 0.0, 'average': 0.375}}))
  written = plots.report_dir(str(t))
  _assert_figures(t, 'potentials')
  assert len(written) == 3
  text = (t / 'report.md').read_text()
  assert '| method | navigate | math/easy | average |' in text
  assert '| taskpgm-jsd | **0.750** | 0.000 | **0.375** |' in text


def test_bad_input(sweep, tmp_path):
  for kwargs, field in (({'source': 'a,,b', 'target': 'math/easy'}, 'source'),
                        ({'source': 'code/python'}, 'target'),
                        ({'source': 'code/python', 'target': 'nope'}, 'target')):
    with pytest.raises(ValueError, match=f'^{field}: '):
      plots.report_dir(str(sweep), **kwargs)
  assert not (sweep / 'report.md').exists()  # checked before writing anything
  (tmp_path / 'empty').mkdir()
  for path in (tmp_path / 'missing', tmp_path / 'empty'):
    cli = subprocess.run([sys.executable, '-m', 'experiments.report', f'--workdir={path}'],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2 and cli.stderr.startswith('error: workdir: '), cli.stderr
    assert len(cli.stderr.strip().splitlines()) == 1
  cli = subprocess.run([sys.executable, '-m', 'experiments.report', f'--workdir={sweep}',
                        '--source=x,,y', '--target=math/easy'], capture_output=True, text=True,
                       timeout=120)
  assert cli.returncode == 2 and cli.stderr.startswith('error: source: ')
