"""Sweeps: grid/zip/random expansion, run names, validation, and a real 4-run sweep with 2 workers
that is re-run (finished runs skipped, a run missing its summary resumed, a failing run reported)."""

import csv
import json
import os
import pathlib
import re
import subprocess
import sys
import types

import pytest

from experiments.recipes import sweep_results
from experiments.recipes import sweep_runner
from experiments.recipes import sweep_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = 'configs/sweeps/tiny.py'


def _env():
  # Less XLA optimization: the tiny runs compile about a third faster; numerics are not at stake.
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
              XLA_FLAGS='--xla_backend_optimization_level=0')


def _events(stdout: str, event: str) -> list[str]:
  """The sweep's progress lines of one kind ('start', 'done', 'skip', 'FAILED')."""
  return [l for l in stdout.splitlines()
          if re.match(rf'\[[0-9:]+\] (\d+/\d+ )?{event} ', l)]


def _sweep(*args, timeout=300):
  return subprocess.run([sys.executable, '-m', 'experiments.sweep', *args], cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=timeout)


def _write_sweep(tmp_path, body: str, name='s.py') -> str:
  path = tmp_path / name
  path.write_text('def get_sweep():\n  return ' + body + '\n')
  return str(path)


# --- expansion: pure Python -----------------------------------------------------------------------
def test_grid_is_the_cartesian_product_first_field_slowest():
  runs = sweep_spec.expand('grid', {'a': [1, 2], 'b': ['x', 'y', 'z']})
  assert runs == [{'a': 1, 'b': 'x'}, {'a': 1, 'b': 'y'}, {'a': 1, 'b': 'z'},
                  {'a': 2, 'b': 'x'}, {'a': 2, 'b': 'y'}, {'a': 2, 'b': 'z'}]


def test_zip_takes_lists_together_and_names_fields_of_unequal_lengths():
  assert sweep_spec.expand('zip', {'a': [1, 2], 'b': ['x', 'y']}) == [{'a': 1, 'b': 'x'},
                                                                       {'a': 2, 'b': 'y'}]
  with pytest.raises(sweep_spec.SweepError, match='a has 2, b has 3'):
    sweep_spec.expand('zip', {'a': [1, 2], 'b': [1, 2, 3]})


def test_random_is_seeded_distinct_and_bounded():
  params = {'a': [1, 2, 3], 'b': ['x', 'y']}
  runs = sweep_spec.expand('random', params, num_samples=5, seed=3)
  assert runs == sweep_spec.expand('random', params, num_samples=5, seed=3)
  assert len({tuple(r.items()) for r in runs}) == 5
  assert all(r['a'] in params['a'] and r['b'] in params['b'] for r in runs)
  assert sorted(map(str, sweep_spec.expand('random', params, 6, 0))) == sorted(
      map(str, sweep_spec.expand('grid', params)))
  with pytest.raises(sweep_spec.SweepError, match='num_samples: 7 is more than the 6'):
    sweep_spec.expand('random', params, num_samples=7, seed=0)


def test_run_names_are_stable_sanitized_and_unique():
  assert sweep_spec.run_name({'seed': 1, 'mixer.name': 'odm'}) == 'mixer.name=odm,seed=1'
  assert sweep_spec.run_name({'optimizer.learning_rate': 1e-2}) == 'optimizer.learning_rate=0.01'
  assert sweep_spec.run_name({'domains': 'code/python:1 x'}) == 'domains=code_python_1_x'
  names = sweep_spec.run_names([{'d': 'a/b'}, {'d': 'a_b'}])
  assert len(set(names)) == 2 and all(n.startswith('d=a_b-') for n in names)
  assert len(sweep_spec.run_name({'d': 'x' * 500})) <= 120


# --- results and plots: fake finished runs, no training ----------------------------------------
def _fake_run(sweep_dir, name, values, losses, accuracy, train_loss):
  workdir = os.path.join(sweep_dir, name)
  os.makedirs(workdir)
  domains = ['a/x', 'b']
  evals = {f'eval/{d}/loss': l for d, l in zip(domains, losses)}
  evals['eval/b/accuracy'] = accuracy
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump({'step': 5, 'domains': domains, 'eval': evals, 'weights': [0.25, 0.75]}, f)
  with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
    f.write(json.dumps({'step': 4, 'train/loss': 9.0}) + '\n')
    f.write(json.dumps({'step': 5, 'train/loss': train_loss, 'eval/b/loss': losses[1]}) + '\n')
  return sweep_spec.Run(name=name, values=values, args={}, workdir=workdir)


def test_results_csv_and_best_run_per_metric(tmp_path):
  sweep = sweep_spec.Sweep(name='t', path='t.py', config='c.py', config_path='c.py', kind='grid',
                           params={'lr': [0.1, 0.2, 0.3]}, overrides={'steps': 5}, num_samples=0,
                           seed=0)
  runs = [_fake_run(str(tmp_path), 'lr=0.1', {'lr': 0.1}, [1.0, 3.0], 0.5, 2.0),
          _fake_run(str(tmp_path), 'lr=0.2', {'lr': 0.2}, [2.0, 1.0], 0.25, 1.5),
          sweep_spec.Run(name='lr=0.3', values={'lr': 0.3}, args={},
                         workdir=str(tmp_path / 'lr=0.3'))]  # failed: no summary
  outcomes = {'lr=0.1': sweep_runner.Outcome('done'), 'lr=0.2': sweep_runner.Outcome('skipped'),
              'lr=0.3': sweep_runner.Outcome('failed', message='boom')}
  csv_path, md_path, text = sweep_results.write_results(sweep, runs, outcomes, str(tmp_path))
  with open(csv_path) as f:
    rows = list(csv.DictReader(f))
  assert [r['status'] for r in rows] == ['done', 'done', 'failed']
  assert rows[0]['eval/mean/loss'] == '2.0' and rows[1]['eval/mean/loss'] == '1.5'
  assert rows[0]['eval/mean/accuracy'] == '0.5' and rows[0]['train/loss'] == '2.0'
  assert rows[1]['weight/b'] == '0.75' and rows[2]['eval/mean/loss'] == ''
  assert open(md_path).read() == text
  best = text.split('## Best run per metric')[1]
  assert '| eval/a/x/loss | lowest | lr=0.1 | 1.0000 |' in best
  assert '| eval/b/loss | lowest | lr=0.2 | 1.0000 |' in best
  assert '| eval/mean/loss | lowest | lr=0.2 | 1.5000 |' in best
  assert '| eval/b/accuracy | highest | lr=0.1 | 0.5000 |' in best
  assert '| train/loss | lowest | lr=0.2 | 1.5000 |' in best
  assert '| lr=0.3 | failed | 0.3 |' in text


def _check_plots_hook(tmp: str):
  """The test below, in a process of its own: experiments.sweep (a CLI) defines absl flags, e.g.
  --workdir, that experiments.report, which other tests import, defines too."""
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  tmp_path = pathlib.Path(tmp)
  lines = []
  assert sweep.plots(str(tmp_path), lines.append, 'experiments.no_such_plots') == []
  assert not lines
  fake, calls = types.ModuleType('fake_plots'), []
  fake.report_dir = lambda path: calls.append(path) or [os.path.join(path, 'x.png')]
  sys.modules['fake_plots'] = fake
  assert sweep.plots(str(tmp_path), lines.append, 'fake_plots') == [str(tmp_path / 'x.png')]
  assert calls == [str(tmp_path)] and lines == [f'plot: {tmp_path / "x.png"}']

  def broken(path):
    raise ValueError(f'workdir: nothing to report in {path!r}')
  fake.report_dir = broken
  assert sweep.plots(str(tmp_path), lines.append, 'fake_plots') == []
  assert lines[-1].startswith('plots: failed (ValueError: workdir: nothing to report')


def test_plots_hook_is_optional_and_calls_report_dir(tmp_path):
  out = subprocess.run([sys.executable, '-c', 'import sys; from tests import test_sweep; '
                        'test_sweep._check_plots_hook(sys.argv[1])', str(tmp_path)],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
  assert out.returncode == 0, out.stdout + out.stderr


# --- validation -----------------------------------------------------------------------------------
def test_plan_checks_fields_types_and_configs(tmp_path):
  def plan(body):
    return sweep_spec.plan(sweep_spec.load_sweep(_write_sweep(tmp_path, body)), str(tmp_path))

  good = "{'config': 'configs/tiny.py', 'kind': 'zip', 'params': {'seed': [0, 1], " \
         "'optimizer.learning_rate': [1, 0.5]}, 'overrides': {'steps': 3}}"
  runs = plan(good)
  assert [r.name for r in runs] == ['optimizer.learning_rate=1.0,seed=0',
                                    'optimizer.learning_rate=0.5,seed=1']
  assert runs[0].config.optimizer.learning_rate == 1.0 and runs[0].config.steps == 3
  for body, message in [
      ("{'config': 'configs/tiny.py', 'kind': 'grid', 'params': {'mixer.nme': ['odm']}}",
       "sweep.params: no field 'mixer.nme' in configs/tiny.py"),
      ("{'config': 'configs/tiny.py', 'kind': 'grid', 'params': {'seed': ['a']}}",
       "sweep.params: seed='a' has type str, but seed in configs/tiny.py is int"),
      ("{'config': 'configs/tiny.py', 'kind': 'grid', 'params': {'seed': [0]}, "
       "'overrides': {'stepz': 3}}", "sweep.overrides: no field 'stepz'"),
      ("{'config': 'configs/tiny.py', 'kind': 'grid', 'params': {'mixer': [0]}}",
       "'mixer' in configs/tiny.py is a group of fields"),
      ("{'config': 'configs/tiny.py', 'kind': 'grid', 'params': {'mixer.name': ['odmm']}}",
       "unknown mixer 'odmm'"),
      ("{'config': 'configs/tiny.py', 'kind': 'grid', 'params': {'seed': [1, 1]}}",
       'appears twice'),
      ("{'config': 'configs/tiny.py', 'kind': 'grod', 'params': {'seed': [0]}}",
       "sweep.kind: unknown 'grod'"),
      ("{'config': 'configs/tiny.py', 'kind': 'grid', 'params': {'seed': []}}",
       "sweep.params: 'seed' has an empty list"),
      ("{'config': 'configs/tiny.py', 'kind': 'grid', 'params': {'seed': 3}}",
       "'seed' needs a list of values"),
      ("{'config': 'configs/nope.py', 'kind': 'grid', 'params': {'seed': [0]}}",
       "sweep.config: no such file 'configs/nope.py'"),
      ("{'config': 'configs/tiny.py', 'kind': 'random', 'params': {'seed': [0]}}",
       'sweep.num_samples: missing'),
      ("{'config': 'configs/tiny.py', 'kind': 'grid', 'parms': {'seed': [0]}}",
       'sweep.parms: unknown field'),
  ]:
    with pytest.raises(sweep_spec.SweepError, match=None) as e:
      plan(body)
    assert message in str(e.value), (body, str(e.value))


def test_cli_nonexistent_field_is_one_line_and_exit_2(tmp_path):
  path = _write_sweep(tmp_path, "{'config': 'configs/tiny.py', 'kind': 'grid', "
                      "'params': {'mixer.nme': ['odm', 'static']}}")
  out = _sweep(f'--sweep={path}', f'--workdir={tmp_path}/w', timeout=120)
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip() == "error: sweep.params: no field 'mixer.nme' in configs/tiny.py"
  assert not os.path.exists(tmp_path / 'w')
  out = _sweep(f'--sweep={TINY}', '--workers=0', timeout=120)
  assert out.returncode == 2 and out.stderr.strip() == 'error: workers: must be >= 1, got 0'


def test_print_commands_prints_one_command_per_run_and_runs_nothing(tmp_path):
  out = _sweep(f'--sweep={TINY}', f'--workdir={tmp_path}/w', '--print_commands', timeout=120)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 4
  assert all(l.startswith('python -m experiments.train --config=configs/tiny.py --workdir=')
             for l in lines)
  assert f'--workdir={tmp_path}/w/mixer.name=temperature,optimizer.learning_rate=0.01 ' in lines[3]
  assert '--config.optimizer.learning_rate=0.01' in lines[3] and '--config.steps=10' in lines[3]
  assert not os.path.exists(tmp_path / 'w')


# --- a real sweep ---------------------------------------------------------------------------------
def _summaries(sweep_dir):
  return {d: os.path.join(sweep_dir, d, 'summary.json') for d in sorted(os.listdir(sweep_dir))
          if os.path.exists(os.path.join(sweep_dir, d, 'summary.json'))}


def test_sweep_runs_writes_results_and_rerun_skips_finished_runs(tmp_path):
  sweep_dir = str(tmp_path / 'sweep')
  out = _sweep(f'--sweep={TINY}', f'--workdir={sweep_dir}', '--workers=2', '--noplots')
  assert out.returncode == 0, out.stdout + out.stderr
  assert len(_events(out.stdout, 'start')) == 4, out.stdout
  assert len(_events(out.stdout, 'done')) == 4 and '4/4 done' in out.stdout, out.stdout
  with open(os.path.join(sweep_dir, 'results.csv')) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and {r['status'] for r in rows} == {'done'}
  assert {r['mixer.name'] for r in rows} == {'static', 'temperature'}
  for column in ('eval/synthetic/copy/loss', 'eval/mean/loss', 'eval/math/easy/accuracy',
                 'eval/mean/accuracy', 'train/loss'):
    assert all(r[column] for r in rows), column
  md = open(os.path.join(sweep_dir, 'results.md')).read()
  table, best = md.split('## Best run per metric')
  assert sum(l.startswith('| mixer.name=') for l in table.splitlines()) == 4
  assert '| eval/mean/loss | lowest |' in best and '| eval/mean/accuracy | highest |' in best
  summaries = _summaries(sweep_dir)
  assert len(summaries) == 4

  # Re-run: one run lost its summary (resumed from its last checkpoint), one's workdir now holds
  # another config (fails, reported with train's error), the other two are skipped.
  names = list(summaries)
  resumed, broken = names[0], names[1]
  os.remove(summaries[resumed])
  config_json = os.path.join(sweep_dir, broken, 'config.json')
  text = open(config_json).read()
  with open(config_json, 'w') as f:
    f.write(text.replace('"seq_len": 32', '"seq_len": 33'))
  mtimes = {n: os.path.getmtime(p) for n, p in summaries.items() if n != resumed}
  out = _sweep(f'--sweep={TINY}', f'--workdir={sweep_dir}', '--workers=2', '--noplots')
  assert out.returncode == 1, out.stdout + out.stderr
  assert len(_events(out.stdout, 'skip')) == 2, out.stdout
  assert len(_events(out.stdout, 'start')) == 2, out.stdout
  assert f'start   {resumed} (resuming)' in out.stdout
  assert f'done    {resumed}' in out.stdout
  failed = _events(out.stdout, 'FAILED')
  assert len(failed) == 1 and broken in failed[0] and 'holds a run of another config' in failed[0]
  assert all(os.path.getmtime(summaries[n]) == t for n, t in mtimes.items())
  assert os.path.exists(summaries[resumed])
  with open(os.path.join(sweep_dir, 'results.csv')) as f:
    status = {r['run']: r['status'] for r in csv.DictReader(f)}
  assert status[broken] == 'failed' and status[resumed] == 'done'
