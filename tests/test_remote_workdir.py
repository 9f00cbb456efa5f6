"""Remote workdirs and checkpoints (`gs://...`) through etils.epath, on a fake bucket.

The fake bucket maps gs://bucket/... to a folder `store/` (every epath call translated), while the
process runs in another folder: a plain `open('gs://bucket/x')` would land in ./gs:/bucket/x, not in
the store, so a file reaching the store went through epath. Orbax gets the same translation (its
arrays go through tensorstore's GCS driver, which a test cannot reach).
"""

import contextlib
import filecmp
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from etils import epath
import pytest

from configs import tiny
from experiments import report as report_cli
from experiments.recipes import continual
from experiments.recipes import hf_export
from experiments.recipes import runs
from experiments.training import metrics as metrics_lib
from experiments.training import mirror
from experiments.training import runtime
from experiments.training import state as state_lib
from experiments.training import workdir as workdir_lib
from mixing import checkpoint as checkpoint_lib
from mixing.data import records

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures', 'hf')
_OPS = ('open', 'copy', 'rename', 'exists', 'glob', 'walk', 'isdir', 'listdir', 'makedirs', 'mkdir',
        'remove', 'replace', 'rmtree', 'stat')


def bucket_ops(store: str):
  """(local, ops): local maps gs://... to store/...; ops are epath mocks that apply it."""
  def local(path):
    path = os.fspath(path)
    return os.path.join(store, path[len('gs://'):]) if path.startswith('gs://') else path

  def translate(original, path, *args, **kwargs):
    return original(local(path), *[local(a) if isinstance(a, (str, os.PathLike)) else a
                                   for a in args], **kwargs)
  return local, {op: translate for op in _OPS}


@contextlib.contextmanager
def fake_bucket(tmp_path, monkeypatch):
  """gs://bucket/... is tmp_path/store/bucket/...; the process runs in tmp_path/cwd."""
  store = tmp_path / 'store'
  store.mkdir()
  for name in ('cwd', 'local'):
    (tmp_path / name).mkdir()
  monkeypatch.chdir(tmp_path / 'cwd')
  monkeypatch.setattr('tempfile.tempdir', str(tmp_path / 'local'))
  local, ops = bucket_ops(str(store))
  manager = checkpoint_lib.ocp.CheckpointManager
  monkeypatch.setattr(checkpoint_lib.ocp, 'CheckpointManager',
                      lambda directory, **kw: manager(local(directory), **kw))
  with epath.testing.mock_epath(**ops):
    yield store


def _config(steps):
  config = tiny.get_config()
  config.steps, config.log_every, config.eval_every, config.checkpoint_every = steps, 1, 3, 3
  config.eval_items = 2
  return config


def _deterministic(rows):
  return [{k: v for k, v in r.items() if not k.startswith('perf/')} for r in rows]


def test_a_run_writes_and_resumes_a_remote_workdir(tmp_path, monkeypatch):
  local = str(tmp_path / 'plain')
  workdir_lib.claim(local, _config(6))
  runs.make_trainer(_config(6), local, quiet=True).run()
  with fake_bucket(tmp_path, monkeypatch) as store:
    remote = 'gs://bucket/runs/a'
    for steps in (3, 6):  # a first run, then the same run extended: it resumes from step 3
      workdir_lib.claim(remote, _config(steps), remote=True)
      trainer = runs.make_trainer(_config(steps), remote, quiet=True)
      trainer.run()
    assert trainer.step == 6
    run = store / 'bucket' / 'runs' / 'a'
    assert {'config.json', 'metrics.jsonl', 'mixer.jsonl', 'summary.json', 'checkpoints',
            'tb'} <= set(os.listdir(run))
    assert sorted(os.listdir(run / 'checkpoints')) == ['3', '6']
    assert any(name.startswith('events.out.tfevents') for name in os.listdir(run / 'tb'))
    assert not os.listdir(tmp_path / 'cwd')  # nothing written with plain IO to ./gs:/...
    assert not [f for f in os.listdir(tmp_path / 'local') if f.startswith('mixlab-metrics-')]
    ours = metrics_lib.read_jsonl(f'{remote}/metrics.jsonl')
    assert _deterministic(ours) == _deterministic(metrics_lib.read_jsonl(f'{local}/metrics.jsonl'))
    assert json.loads((run / 'summary.json').read_text())['step'] == 6
    files = hf_export.export(remote, 'gs://bucket/export', 1 << 30)  # a remote run, to the bucket
    assert set(files) <= set(os.listdir(store / 'bucket' / 'export'))
    assert {'config.json', 'model.safetensors'} <= set(files)
    report_cli.report_workdir(remote, None, None, None)  # experiments.report on the remote run
    assert {'report.md', 'weights.png', 'eval_curves.png'} <= set(os.listdir(run))
    assert (run / 'report.md').read_text().startswith(f'# Report: {remote}\n')
    with pytest.raises(ValueError, match='^workdir: gs://bucket/runs/a holds a run of another '
                       r'config \(differs in seed\)'):
      other = _config(6)
      other.seed = 1
      workdir_lib.claim(remote, other, remote=True)
    with pytest.raises(ValueError, match='^workdir: --overwrite is not supported on a remote'):
      workdir_lib.claim(remote, _config(6), overwrite=True, remote=True)
    with pytest.raises(ValueError, match="^workdir: 'gs://bucket/q' is a URL, and this writes "
                       'with plain file IO'):
      workdir_lib.claim('gs://bucket/q', _config(6))  # commands that write with plain IO


def test_hf_checkpoint_on_a_bucket_is_read_from_a_local_copy(tmp_path, monkeypatch):
  with fake_bucket(tmp_path, monkeypatch) as store:
    shutil.copytree(os.path.join(FIXTURES, 'llama3'), store / 'bucket' / 'llama3')
    folder = state_lib.hf_folder('hf:gs://bucket/llama3')
    assert folder.startswith(str(tmp_path / 'local'))
    index = json.loads((store / 'bucket' / 'llama3' / 'model.safetensors.index.json').read_text())
    wanted = {'config.json', 'model.safetensors.index.json', *index['weight_map'].values()}
    assert wanted <= set(os.listdir(folder))
    for name in wanted:
      assert filecmp.cmp(os.path.join(folder, name), os.path.join(FIXTURES, 'llama3', name), False)
    config = tiny.get_config()
    config.init_from = f'hf:{os.path.join(FIXTURES, "llama3")}'
    config.tokenizer = 'bytes'
    here = state_lib.run_model_config(config)
    config.init_from = 'hf:gs://bucket/llama3'
    assert state_lib.run_model_config(config) == here
    names = sorted(wanted)
    again = records.local_folder('gs://bucket/llama3', names)  # unchanged: the same linked files
    assert again == folder and os.path.samefile(os.path.join(folder, 'config.json'), os.path.join(
        str(tmp_path / 'local' / 'mixlab_remote'), next(n for n in os.listdir(
            tmp_path / 'local' / 'mixlab_remote') if n.endswith('-config.json'))))
    (store / 'bucket' / 'llama3' / 'config.json').write_text('{"changed": 1}')
    os.remove(store / 'bucket' / 'llama3' / 'model.safetensors.index.json')
    records.local_folder('gs://bucket/llama3', names)
    assert json.loads(epath.Path(folder, 'config.json').read_text()) == {'changed': 1}
    assert not os.path.exists(os.path.join(folder, 'model.safetensors.index.json'))
    with pytest.raises(ValueError, match="^init_from: no Hugging Face config.json in "
                       "'gs://bucket/none'$"):
      state_lib.hf_folder('hf:gs://bucket/none')
    assert not os.listdir(tmp_path / 'cwd')


@pytest.mark.parametrize('process', [0, 1])
def test_hosts_sharing_a_bucket_build_once_process_0_first(process, monkeypatch):
  """With several processes and a remote data.dir, process 0 builds the file domains, the others
  open its build after it (the broadcast is the barrier); process 0's error is everyone's."""
  events, failure = [], {'message': ''}
  monkeypatch.setattr(runtime.jax, 'process_count', lambda: 2)
  monkeypatch.setattr(runtime.jax, 'process_index', lambda: process)
  monkeypatch.setattr(workdir_lib, '_multi', lambda: True)
  def broadcast(message):
    events.append('barrier')
    return message if process == 0 else failure['message']
  monkeypatch.setattr(workdir_lib, '_broadcast', broadcast)
  def load(*args, **kwargs):
    events.append('build')
    if failure['message'] and process == 0:
      raise ValueError(failure['message'])
    return ['packed']
  monkeypatch.setattr(runtime.load_lib, 'load_domains', load)
  config = tiny.get_config()
  config.domain_files = {'web': {'path': 'gs://bucket/web/*.jsonl'}}
  config.domains = 'web:1,math/easy:1'
  config.data.dir = 'gs://bucket/cache'
  assert runtime.load_run_domains(config)[2] == ['packed']
  assert events == (['build', 'barrier'] if process == 0 else ['barrier', 'build'])
  events.clear()
  failure['message'] = 'path: gs://bucket/web/a.jsonl:3: invalid JSON'
  with pytest.raises(ValueError, match='^path: gs://bucket/web/a.jsonl:3: invalid JSON$'):
    runtime.load_run_domains(config)
  assert events == (['build', 'barrier'] if process == 0 else ['barrier'])  # no build after it
  events.clear()
  failure['message'] = ''
  config.data.dir = '/tmp/local_cache'  # a local dir: each host builds its own copy, no barrier
  assert runtime.load_run_domains(config)[2] == ['packed'] and events == ['build']


def test_mixer_stages_of_a_remote_run_train_in_a_local_folder(tmp_path, monkeypatch):
  monkeypatch.setattr('tempfile.tempdir', str(tmp_path))
  assert runs.stage_folder('/runs/a/doremi') == '/runs/a/doremi'
  local = runs.stage_folder('gs://bucket/a/doremi')
  assert local.startswith(str(tmp_path / 'mixlab_stages')) and local != runs.stage_folder(
      'gs://bucket/b/doremi')
  monkeypatch.setattr(runs.jax, 'process_count', lambda: 2)
  with pytest.raises(ValueError, match=r'^mixer.name: doremi trains proxies in a local folder'):
    runs.stage_folder('gs://bucket/a/doremi')


def test_a_mirrored_workdir_syncs_both_ways(tmp_path, monkeypatch):
  """Commands that write with plain IO get a local mirror of a remote workdir: it uploads what
  changed (periodically and at the end), deletes there what was deleted here, skips the lock and
  orbax's temporary folders, and a fresh machine (no mirror) gets the remote files back."""
  with fake_bucket(tmp_path, monkeypatch) as store:
    remote, there = 'gs://bucket/w', store / 'bucket' / 'w'
    monkeypatch.setattr(mirror, 'SYNC_SECONDS', 0.05)
    with mirror.mirrored(remote) as local:
      assert local.startswith(str(tmp_path / 'local' / 'mixlab_mirror'))
      os.makedirs(os.path.join(local, 'ckpt', '3.orbax-checkpoint-tmp-1'))
      for name, text in (('a.txt', 'a'), ('ckpt/b.json', '{}'), ('.lock', 'pid'),
                         ('ckpt/3.orbax-checkpoint-tmp-1/x', 'partial')):
        with open(os.path.join(local, name), 'w') as f:
          f.write(text)
      deadline = time.time() + 20
      # A pass may catch a.txt opened but not yet written; a later pass uploads it again.
      uploaded = lambda: (there / 'a.txt').exists() and (there / 'a.txt').read_text() == 'a'
      while not uploaded() and time.time() < deadline:
        time.sleep(0.05)
      assert (there / 'a.txt').read_text() == 'a'  # uploaded while the command runs
    assert sorted(str(p.relative_to(there)) for p in there.rglob('*') if p.is_file()) == [
        'a.txt', 'ckpt/b.json']
    with mirror.mirrored(remote) as local:  # the same machine: nothing downloaded again
      os.remove(os.path.join(local, 'ckpt', 'b.json'))
      with open(os.path.join(local, 'a.txt'), 'w') as f:
        f.write('a2')
    assert not (there / 'ckpt' / 'b.json').exists() and (there / 'a.txt').read_text() == 'a2'
    (there / 'c.txt').write_text('from elsewhere')  # another machine wrote the workdir
    shutil.rmtree(local)  # and this one lost its mirror
    with mirror.mirrored(remote) as again:
      assert again == local
      assert sorted(os.listdir(again)) == ['.lock', '.mixlab_mirror.json', 'a.txt', 'c.txt']
      with open(os.path.join(again, 'a.txt')) as f:
        assert f.read() == 'a2'
      for name in ('results.json.tmp.json', 'ckpt/9/state/x'):  # written, then the command killed
        os.makedirs(os.path.dirname(os.path.join(again, name)), exist_ok=True)
        with open(os.path.join(again, name), 'w') as f:
          f.write('never uploaded')
      mirror.Mirror(remote, again).download()  # the next command: the bucket is what it resumes
      assert sorted(os.listdir(again)) == ['.lock', '.mixlab_mirror.json', 'a.txt', 'c.txt']
      assert not os.path.exists(there / 'results.json.tmp.json')
    mirror.workdir_lib.release(again)  # this process is done with it
    holder = subprocess.Popen(  # a live command holds the mirror: another is refused, untouched
        [sys.executable, '-c', 'import sys, time\nfrom experiments.training import workdir\n'
         'workdir.lock(sys.argv[1]); print("locked", flush=True); time.sleep(60)', again],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
      assert holder.stdout.readline().strip() == 'locked'
      with open(os.path.join(again, 'a.txt'), 'w') as f:
        f.write('live')
      with pytest.raises(ValueError, match=r'is in use by pid .* \(the local mirror of '
                         r'gs://bucket/w\)$'):
        with mirror.mirrored(remote):
          pass
      with open(os.path.join(again, 'a.txt')) as f:
        assert f.read() == 'live'
    finally:
      holder.kill()
      holder.wait()
    with pytest.raises(ValueError, match='^workdir: --overwrite is not supported on a remote'):
      with mirror.mirrored(remote, overwrite=True):
        pass
    assert mirror.mirrored('/a/path').__enter__() == '/a/path'
    assert not os.listdir(tmp_path / 'cwd')


def test_a_base_model_cached_on_a_bucket_is_trained_once(tmp_path, monkeypatch):
  from configs import continual_math_small  # pylint: disable=import-outside-toplevel
  config = continual_math_small.get_config()
  config.continual.base_steps, config.eval_items, config.eval_batches = 4, 0, 1
  config.continual.base_root = 'gs://bucket/base'
  with fake_bucket(tmp_path, monkeypatch) as store:
    folder = continual.ensure_base(config, quiet=True)
    assert folder.startswith('gs://bucket/base/')
    run = store / 'bucket' / folder[len('gs://bucket/'):]
    assert json.loads((run / 'summary.json').read_text())['step'] == 4
    metrics = continual.base_metrics(config)
    def train_again(*args, **kwargs):
      raise AssertionError('the cached base model was trained again')
    monkeypatch.setattr(continual, 'static_trainer', train_again)
    assert continual.ensure_base(config, quiet=True) == folder
    assert continual.base_metrics(config) == metrics  # cached beside it, on the bucket
    assert not os.listdir(tmp_path / 'cwd')


_PREEMPTED = r'''
import os, sys, time
from etils import epath
from experiments.training import mirror
from tests.test_remote_workdir import bucket_ops
mirror.SYNC_SECONDS = 3600  # only the last upload can bring the file to the bucket
with epath.testing.mock_epath(**bucket_ops(sys.argv[1])[1]):
  with mirror.mirrored('gs://bucket/p') as folder:
    with open(os.path.join(folder, 'step.json'), 'w') as f:
      f.write('{"step": 7}')
    print('written', flush=True)
    time.sleep(120)
'''


def test_a_preempted_mirrored_command_uploads_before_it_exits(tmp_path):
  (tmp_path / 'store').mkdir()
  env = dict(os.environ, PYTHONPATH=ROOT, TMPDIR=str(tmp_path))
  proc = subprocess.Popen([sys.executable, '-c', _PREEMPTED, str(tmp_path / 'store')],
                          cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
  try:
    while 'written' not in proc.stdout.readline():
      assert proc.poll() is None, 'the command ended early'
    proc.send_signal(signal.SIGTERM)  # a preemption notice
    assert proc.wait(timeout=60) == 143
  finally:
    proc.kill()
  assert (tmp_path / 'store' / 'bucket' / 'p' / 'step.json').read_text() == '{"step": 7}'
