"""Workdir ownership: one live process per workdir (one-line refusal), a dead holder's lock taken
over, re-entrance within a process, unusable workdirs refused before anything is written, two
`experiments.train` on one workdir, and a SIGKILLed sweep that leaves no run behind and resumes."""

import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import ml_collections
import pytest

from experiments.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HOLDER = r'''
import sys, time
import ml_collections
from experiments.training import workdir
workdir.claim(sys.argv[1], ml_collections.ConfigDict({'seed': 1}))
print('claimed', flush=True)
time.sleep(300)
'''


def _env(**extra):
  return dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu', **extra)


def _config(seed: int):
  return ml_collections.ConfigDict({'seed': seed})


def _wait_for(condition, timeout: float, what: str, proc=None):
  deadline = time.time() + timeout
  while not condition():
    if proc is not None and proc.poll() is not None:
      out, err = proc.communicate()
      pytest.fail(f'exited ({proc.returncode}) before {what}: {(out or "")[-1000:]}'
                  f'{(err or "")[-2000:]}')
    if time.time() > deadline:
      pytest.fail(f'timed out waiting for {what}')
    time.sleep(0.1)


def _locked_elsewhere(workdir) -> bool:
  """Whether <workdir>/.lock is flocked (a new descriptor conflicts even within this process)."""
  fd = os.open(os.path.join(workdir, '.lock'), os.O_RDWR)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return False
  except BlockingIOError:
    return True
  finally:
    os.close(fd)


def _in_use(workdir, pid) -> str:
  return (rf'workdir: {re.escape(str(workdir))} is in use by pid {pid} on host '
          rf'{re.escape(socket.gethostname())} \(started [0-9: -]+\); wait for it or stop it')


def test_a_live_holder_refuses_others_and_a_killed_ones_lock_is_taken_over(tmp_path):
  run = str(tmp_path / 'run')
  holder = subprocess.Popen([sys.executable, '-c', _HOLDER, run], env=_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'claimed', holder.communicate()[1][-2000:]
    with pytest.raises(ValueError, match='^' + _in_use(run, holder.pid) + '$'):
      workdir_lib.claim(run, _config(2))  # another config: refused before it is even compared
    with pytest.raises(ValueError, match=_in_use(run, holder.pid)):
      workdir_lib.lock(run)
    assert json.load(open(os.path.join(run, 'config.json')))['seed'] == 1
  finally:
    holder.send_signal(signal.SIGKILL)  # no exit handler runs: the lock file stays, naming it
    holder.wait()
  assert json.load(open(os.path.join(run, '.lock')))['pid'] == holder.pid
  workdir_lib.claim(run, _config(1))  # the holder is dead: its lock is taken over
  held = workdir_lib.lock(run)
  assert json.load(open(os.path.join(run, '.lock')))['pid'] == os.getpid()
  assert _locked_elsewhere(run)
  held.release()
  assert not _locked_elsewhere(run)
  workdir_lib.lock(run)
  workdir_lib.release(run)
  assert not _locked_elsewhere(run)
  workdir_lib.release(run)  # not held: nothing to do


def test_lock_is_reentrant_and_follows_overwrite_and_a_recreated_folder(tmp_path):
  run = str(tmp_path / 'run')
  first = workdir_lib.lock(run)
  assert workdir_lib.lock(run) is first and workdir_lib.lock(run + '/') is first
  workdir_lib.claim(run, _config(1))
  workdir_lib.claim(run, _config(1))  # the same process again: no deadlock, no error
  assert workdir_lib.lock(run) is first and _locked_elsewhere(run)
  with open(os.path.join(run, 'metrics.jsonl'), 'w') as f:
    f.write('{}\n')
  workdir_lib.claim(run, _config(2), overwrite=True)  # the old run moves aside; the new one locked
  aside = workdir_lib.replaced_path(run)
  assert os.path.exists(os.path.join(aside, 'metrics.jsonl'))
  assert sorted(os.listdir(run)) == ['.lock', 'config.json']
  assert not [d for d in os.listdir(tmp_path) if '.new-' in d]
  second = workdir_lib.lock(run)
  assert second is not first and second.current() and _locked_elsewhere(run)
  assert not _locked_elsewhere(aside)  # the replaced run's lock was given up
  shutil.rmtree(run)  # a folder deleted under a held lock: the next claim locks the new one
  assert not second.current()
  workdir_lib.claim(run, _config(3))
  assert workdir_lib.lock(run) is not second and _locked_elsewhere(run)
  workdir_lib.release(run)
  assert not _locked_elsewhere(run)


def test_unusable_workdirs_are_one_line_before_anything_is_written(tmp_path):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  with pytest.raises(ValueError, match=f'^workdir: {re.escape(str(a_file))} is a file, not a '
                     'directory$'):
    workdir_lib.claim(str(a_file), _config(1))
  below = a_file / 'run'
  with pytest.raises(ValueError, match=f'^workdir: cannot create or write {re.escape(str(below))}: '
                     'Not a directory$'):
    workdir_lib.claim(str(below), _config(1))
  with pytest.raises(ValueError, match='^workdir: .* is a URL'):
    workdir_lib.lock('gs://bucket/run')
  assert a_file.read_text() == 'x' and sorted(os.listdir(tmp_path)) == ['file']
  if os.geteuid() == 0:
    pytest.skip('running as root, which may write into a read-only folder: that case is untested')
  read_only = tmp_path / 'ro'
  read_only.mkdir(mode=0o555)
  for path in (read_only, read_only / 'run'):
    with pytest.raises(ValueError, match=f'^workdir: cannot create or write {re.escape(str(path))}: '
                       'Permission denied$'):
      workdir_lib.claim(str(path), _config(1))
  assert not os.listdir(read_only)


def test_a_record_older_than_an_added_field_resumes_at_its_old_value_only(tmp_path):
  """A workdir recorded before `data.draws` existed ran i.i.d. draws: the same config resumes there,
  one with quasi-random draws is another config."""
  old = {'seed': 1, 'data': {'seed': 0}}
  (tmp_path / 'config.json').write_text(json.dumps(old))
  new = lambda draws: ml_collections.ConfigDict({'seed': 1, 'data': {'seed': 0, 'draws': draws}})
  with pytest.raises(ValueError, match=r'another config \(differs in data\.draws\)'):
    workdir_lib.claim(str(tmp_path), new('quasi'))
  workdir_lib.claim(str(tmp_path), new('iid'))
  workdir_lib.release(str(tmp_path))
  assert workdir_lib.differences({'data': {'draws': 'iid'}}, {'data': {}}) == ['data.draws']


def test_two_train_processes_on_one_workdir(tmp_path):
  run = tmp_path / 'run'
  cmd = [sys.executable, '-m', 'experiments.train', '--config=configs/tiny.py', f'--workdir={run}',
         '--config.steps=30']
  first = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  try:
    _wait_for(lambda: (run / 'config.json').exists(), 120, 'the first run claims', first)
    second = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert first.poll() is None, 'the first run ended before the second started: test too slow'
    assert second.returncode == 2, second.stderr[-2000:]
    lines = [l for l in second.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and re.fullmatch('error: ' + _in_use(run, first.pid), lines[0]), lines
    _, err = first.communicate(timeout=300)
  finally:
    if first.poll() is None:
      first.kill()
      first.communicate()
  assert first.returncode == 0, err[-2000:]
  records = [json.loads(l) for l in (run / 'metrics.jsonl').read_text().splitlines()]
  assert [r['step'] for r in records if 'train/loss' in r] == list(range(1, 31))


def _processes_naming(text: str) -> list[str]:
  """Command lines of live processes that contain `text` (a /proc scan; zombies have none)."""
  found = []
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        cmdline = f.read().replace(b'\0', b' ').decode('utf-8', 'replace')
    except OSError:
      continue
    if text in cmdline and int(pid) != os.getpid():
      found.append(f'{pid}: {cmdline}')
  return found


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG is Linux-only')
def test_a_killed_sweep_leaves_no_run_behind_and_its_rerun_finishes(tmp_path):
  sweep_file = tmp_path / 's.py'
  sweep_file.write_text("def get_sweep():\n  return {'config': 'configs/tiny.py', 'kind': 'grid', "
                        "'params': {'seed': [0, 1]}, 'overrides': {'steps': 10, 'eval_items': 0}}\n")
  sweep_dir = str(tmp_path / 'sweep')
  cmd = [sys.executable, '-m', 'experiments.sweep', f'--sweep={sweep_file}',
         f'--workdir={sweep_dir}', '--workers=2', '--noplots']
  env = _env(XLA_FLAGS='--xla_backend_optimization_level=0')
  sweep = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)

  def past_a_checkpoint():
    for name in ('seed=0', 'seed=1'):
      metrics = os.path.join(sweep_dir, name, 'metrics.jsonl')
      if os.path.exists(metrics) and any(json.loads(l).get('step', 0) >= 6
                                         for l in open(metrics).read().splitlines()[:-1]):
        return name
    return None
  try:
    _wait_for(past_a_checkpoint, 180, 'a run past its first checkpoint', sweep)
    resumed = past_a_checkpoint()
    assert len(_processes_naming(sweep_dir)) >= 3  # the sweep and its 2 runs
  finally:
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
  _wait_for(lambda: not _processes_naming(sweep_dir), 30, 'the runs to die with the sweep')
  rerun = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-2000:]
  assert f'start   {resumed} (resuming)' in rerun.stdout, rerun.stdout
  for name in ('seed=0', 'seed=1'):
    summary = json.load(open(os.path.join(sweep_dir, name, 'summary.json')))
    assert summary['step'] == 10, (name, summary)
