"""The train loop: sharded = single-device, SIGKILL + resume is bit-identical, bad checkpoints, NaNs."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import tiny
from experiments.training import metrics as metrics_lib
from experiments.recipes import runs
from experiments.training import trainer as trainer_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(devices=1):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def _train_cmd(workdir, *overrides):
  return [sys.executable, '-m', 'experiments.train', '--config=configs/tiny.py',
          f'--workdir={workdir}', *overrides]


def _deterministic(records):
  return [{k: v for k, v in r.items() if not k.startswith('perf/')} for r in records]


def _params(workdir, config):
  trainer = runs.make_trainer(config, str(workdir), quiet=True)
  assert trainer.restore()  # pylint: disable=protected-access
  return trainer.step, [np.asarray(x) for x in jax.tree.leaves(trainer.state)]


_MESH_CHILD = r'''
import json, sys
from configs import tiny
from experiments.recipes import runs
from experiments.training import trainer as trainer_lib
out = {}
for data, model in ((1, 1), (4, 2)):
  config = tiny.get_config()
  config.steps, config.eval_every, config.checkpoint_every = 4, 100, 100
  config.mesh.data, config.mesh.model = data, model
  t = runs.make_trainer(config, sys.argv[1] + f'/{data}x{model}', quiet=True)
  t.run()
  assert t.mesh.devices.size == data * model
  out[f'{data}x{model}'] = [r['train/loss'] for r in
                            trainer_lib.metrics_lib.read_jsonl(t.workdir + '/metrics.jsonl')]
print(json.dumps(out))
'''


def test_4x2_mesh_losses_equal_single_device_losses(tmp_path):
  out = subprocess.run([sys.executable, '-c', _MESH_CHILD, str(tmp_path)], env=_env(8), cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout
  losses = __import__('json').loads(out.strip().splitlines()[-1])
  assert len(losses['1x1']) == 4
  np.testing.assert_allclose(losses['4x2'], losses['1x1'], rtol=0, atol=1e-5)


def test_sigkill_at_any_moment_then_resume_is_bit_identical(tmp_path):
  overrides = ['--config.steps=30', '--config.eval_every=10']
  subprocess.run(_train_cmd(tmp_path / 'whole', *overrides), env=_env(), cwd=ROOT, check=True,
                 capture_output=True)
  killed = tmp_path / 'killed'
  kills = 0
  for delay in (4.0, 6.5, 9.0):  # mid-compile, mid-steps, around checkpoints
    proc = subprocess.Popen(_train_cmd(killed, *overrides), env=_env(), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      kills += 1
    proc.wait()
  assert kills >= 1
  subprocess.run(_train_cmd(killed, *overrides), env=_env(), cwd=ROOT, check=True,
                 capture_output=True)
  config = tiny.get_config()
  config.steps, config.eval_every = 30, 10
  step_a, params_a = _params(tmp_path / 'whole', config)
  step_b, params_b = _params(killed, config)
  assert step_a == step_b == 30
  for a, b in zip(params_a, params_b):
    np.testing.assert_array_equal(a, b)
  whole = _deterministic(metrics_lib.read_jsonl(str(tmp_path / 'whole' / 'metrics.jsonl')))
  resumed = _deterministic(metrics_lib.read_jsonl(str(killed / 'metrics.jsonl')))
  assert [r['step'] for r in whole] == list(range(1, 31))
  assert resumed == whole


def test_corrupted_latest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
  config = tiny.get_config()
  config.steps = 10
  runs.make_trainer(config, str(tmp_path), quiet=True).run()
  latest = tmp_path / 'checkpoints' / '10'
  for folder, _, files in os.walk(latest):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, 'r+b') as f:
        f.truncate(max(os.path.getsize(path) // 2, 1))
  trainer = runs.make_trainer(config, str(tmp_path), quiet=True)
  assert trainer.restore()  # pylint: disable=protected-access
  assert trainer.step == 5
  assert 'checkpoint at step 10 of' in capsys.readouterr().out
  trainer.run()  # trains 6..10 again and checkpoints step 10 in place of the moved-aside one
  assert max(int(s) for s in os.listdir(tmp_path / 'checkpoints')) == 10
  assert (tmp_path / 'corrupt_checkpoint_10').exists()


def test_nan_loss_stops_naming_step_and_domains_and_keeps_last_good_checkpoint(tmp_path):
  config = tiny.get_config()
  config.steps = 20

  def poison(train_fn):
    def step(state, batch):
      state, metrics = train_fn(state, batch)
      if int(state.step) == 8:
        metrics = dict(metrics, loss=np.float32(np.nan),
                       domain_loss_D=np.asarray(metrics['domain_loss_D']).copy())
        metrics['domain_loss_D'][1] = np.inf
        metrics['domain_tokens_D'] = np.ones_like(metrics['domain_tokens_D'])
      return state, metrics
    return step

  trainer = runs.make_trainer(config, str(tmp_path), quiet=True)
  with pytest.raises(trainer_lib.NonFiniteLossError,
                     match=r'at step 8; domains with a non-finite loss: synthetic/noise;'):
    trainer.train_fn = poison(trainer.train_fn)
    trainer.run()
  assert sorted(int(s) for s in os.listdir(tmp_path / 'checkpoints')) == [5]
  steps = [r['step'] for r in metrics_lib.read_jsonl(str(tmp_path / 'metrics.jsonl'))]
  assert max(steps) == 7


_BAD_CONFIG = '''
from configs import tiny
def get_config():
  config = tiny.get_config()
  config.domains = 'gsm'
  config.domain_files = {'gsm': {'path': '/no/such/gsm8k.jsonl', 'fields': 'question,answer'}}
  return config
'''


@pytest.mark.parametrize('override,message', [
    ('--config.nope=1', "config: no field 'nope'"),
    ('--config.mixer.nme=x', "config: no field 'mixer.nme' (did you mean 'mixer.name'?)"),
    ('--config.steps=abc', 'flag --config.steps=abc'),
    ('--config.domains=synthetic/copy:-1', "domains: negative value -1.0 for domain"),
    ('--config.domains=synthetic/copy:0', 'domains: all zero'),
    ('--config.domains=no/such', "domains: unknown domain 'no/such'"),
    ('--config.mixer.name=nope', "mixer.name: unknown mixer 'nope'"),
    ('--config.batch_size=0', 'batch_size: must be positive'),
    ('BAD_CONFIG', "domain_files.gsm.path: no such file or directory: '/no/such/gsm8k.jsonl'"),
])
def test_config_mistakes_exit_2_with_one_line(tmp_path, override, message):
  cmd = _train_cmd(tmp_path / 'run', override)
  if override == 'BAD_CONFIG':
    (tmp_path / 'bad.py').write_text(_BAD_CONFIG)
    cmd = _train_cmd(tmp_path / 'run', f'--config={tmp_path / "bad.py"}')[:-1]
    cmd[3] = f'--config={tmp_path / "bad.py"}'
  proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert lines == [lines[0]] and lines[0].startswith('error: ') and message in lines[0], lines
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def test_workdir_of_another_config_is_refused_unless_overwrite(tmp_path):
  run = tmp_path / 'run'
  first = _train_cmd(run, '--config.steps=2', '--config.eval_every=2', '--config.eval_items=0')
  subprocess.run(first, env=_env(), cwd=ROOT, check=True, capture_output=True)
  resumed = subprocess.run(first[:-3] + ['--config.steps=3', '--config.eval_every=2',
                                         '--config.eval_items=0'],
                           env=_env(), cwd=ROOT, capture_output=True, text=True)
  assert resumed.returncode == 0, resumed.stderr[-2000:]  # more steps: the same run, resumed
  other = first + ['--config.seed=7']
  proc = subprocess.run(other, env=_env(), cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 2
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert lines == [f'error: workdir: {run} holds a run of another config (differs in seed); '
                   'pass --overwrite to replace it'], lines
  assert json.loads((run / 'config.json').read_text())['seed'] != 7  # the old run is untouched
  proc = subprocess.run(other + ['--overwrite'], env=_env(), cwd=ROOT, capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads((run / 'config.json').read_text())['seed'] == 7
  assert [r['step'] for r in map(json.loads, (run / 'metrics.jsonl').read_text().splitlines())
          if 'train/loss' in r][0] == 1  # a fresh run, not a resumed one
