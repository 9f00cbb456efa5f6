"""Multi-host runs (experiments/distributed.py): two processes of one CPU device each on 127.0.0.1.

Two processes with one device each must train exactly like one process with two devices (each process
feeds its half of every global batch), resume from the checkpoint both wrote, write every metrics file
once; an unreachable coordinator is one line and exit 2, within the timeout.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments.training import distributed
from experiments.training import metrics as metrics_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A learning rate that is still warming up at the last step makes the schedule the same for a run to
# step 4 and a run to step 8 (warmup_cosine_decay_schedule decays over `steps`), so a run stopped at
# 4 and resumed to 8 must match an uninterrupted run to 8. Peak 0.3 over 1000 steps: 3e-3 at step 10.
_OVERRIDES = ['--config.optimizer.learning_rate=0.3', '--config.optimizer.warmup_steps=1000',
              '--config.checkpoint_every=4', '--config.eval_every=100', '--config.eval_items=0']
_TIMEOUT = 150  # seconds for any one command: a hung collective fails the test instead of the suite


def _env(devices, cache=None):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  if cache:  # compiling dominates these short runs: the resumed run reuses the first run's programs
    env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  return env


def _train_cmd(workdir, steps, *extra):
  return [sys.executable, '-m', 'experiments.train', '--config=configs/tiny.py',
          f'--workdir={workdir}', f'--config.steps={steps}', *_OVERRIDES, *extra]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, steps, cache):
  """The same command as process 0 and 1 (one device each); returns their stdouts."""
  address = f'127.0.0.1:{_free_port()}'
  procs = [subprocess.Popen(
      _train_cmd(workdir, steps, f'--coordinator_address={address}', '--num_processes=2',
                 f'--process_id={i}'),
      env=_env(1, cache), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    outs = [p.communicate(timeout=_TIMEOUT) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, (_, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, f'process {i} exited {p.returncode}: {err[-2000:]}'
  return [out for out, _ in outs]


def _records(workdir):
  return metrics_lib.read_jsonl(os.path.join(workdir, 'metrics.jsonl'))


def test_two_processes_train_resume_and_match_one_process_with_two_devices(tmp_path):
  one, two, cache = tmp_path / 'one_process', tmp_path / 'two_processes', tmp_path / 'jax_cache'
  single = subprocess.Popen(_train_cmd(one, 8), env=_env(2, cache), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    first = _run_two_processes(two, 4, cache)  # stops at 4, a checkpoint (checkpoint_every=4)
    assert 'resumed' not in first[0]
    resumed = _run_two_processes(two, 8, cache)  # the same command with more steps resumes
    _, err = single.communicate(timeout=_TIMEOUT)
  finally:
    if single.poll() is None:
      single.kill()
  assert single.returncode == 0, err[-2000:]
  assert 'resumed from step 4' in resumed[0]  # from the checkpoint, not from step 0
  expected, got = _records(one), _records(two)
  # Process 0 alone writes the metrics: every step once, steps 1-4 from the first run, 5-8 resumed.
  assert [r['step'] for r in got] == list(range(1, 9))
  np.testing.assert_allclose([r['train/loss'] for r in got],
                             [r['train/loss'] for r in expected], rtol=0, atol=1e-5)
  eval_keys = [k for k in expected[-1] if k.startswith('eval/')]
  assert eval_keys
  np.testing.assert_allclose([got[-1][k] for k in eval_keys], [expected[-1][k] for k in eval_keys],
                             rtol=0, atol=1e-5)
  with open(two / 'summary.json') as f:
    assert json.load(f)['step'] == 8
  assert sorted(int(s) for s in os.listdir(two / 'checkpoints')) == [4, 8]


def test_unreachable_coordinator_is_one_line_and_exit_2_within_the_timeout(tmp_path):
  start = time.time()
  proc = subprocess.run(
      _train_cmd(tmp_path, 4, f'--coordinator_address=127.0.0.1:{_free_port()}',
                 '--num_processes=2', '--process_id=1', '--distributed_timeout=2'),
      env=_env(1), cwd=ROOT, capture_output=True, text=True, timeout=60)
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith('error: coordinator_address: '), lines
  assert '127.0.0.1:' in lines[0]
  assert time.time() - start < 30  # 2 s of probing plus the interpreter's start
  assert not os.listdir(tmp_path)  # it failed before touching the workdir


def test_inconsistent_flags_are_one_line_naming_the_flag_and_exit_2(tmp_path):
  proc = subprocess.run(
      _train_cmd(tmp_path, 4, '--coordinator_address=127.0.0.1:1234', '--num_processes=2',
                 '--process_id=2'), env=_env(1), cwd=ROOT, capture_output=True, text=True, timeout=60)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      'error: process_id: must be in 0..1 (num_processes=2), got 2']


@pytest.mark.parametrize('flags,message', [
    (('1.2.3.4', None, None, 'auto', 60), "num_processes: missing; --coordinator_address=1.2.3.4"),
    ((None, None, 1, 'auto', 60), 'coordinator_address: missing; --process_id=1'),
    (('host:1', 0, 0, 'auto', 60), 'num_processes: must be >= 1, got 0'),
    (('host:1', 2, -1, 'auto', 60), 'process_id: must be in 0..1 (num_processes=2), got -1'),
    (('host', 2, 0, 'auto', 60), "coordinator_address: expected HOST:PORT (port 1-65535), got 'h"),
    (('host:0', 2, 0, 'auto', 60), "coordinator_address: expected HOST:PORT (port 1-65535), got 'h"),
    (('host:x', 2, 0, 'auto', 60), "coordinator_address: expected HOST:PORT (port 1-65535), got 'h"),
    (('host:1', 2, 0, 'off', 60), 'distributed: off, but --coordinator_address=host:1'),
    ((None, None, None, 'auto', 0), 'distributed_timeout: must be a positive number of seconds'),
])
def test_flag_checks_name_the_flag_and_value(flags, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    distributed.check_flags(*flags)


def test_flag_checks_accept_a_full_set_or_none():
  assert distributed.check_flags('10.0.0.1:1234', 4, 3, 'auto', 60)
  assert distributed.check_flags('[::1]:1234', 1, 0, 'on', 60)
  assert not distributed.check_flags(None, None, None, 'auto', 60)
  assert distributed.parse_address('[::1]:8476') == ('::1', 8476)
