"""Every CLI, fed bad input: one line `error: ...` naming the field or path, exit code 2, no traceback.

One table of bad inputs over all CLIs (each run as `python -m ...`, as a user would): wrong values
and types of every kind of config field, unknown and missing flags, paths that are files, read-only or
under a file, corrupt user files. A case pointed at a finished run (`{run}`: a copy of one tiny run
made once) must leave it exactly as it was: checks come before any write. A full disk during training
is one line too, and the checkpoint before it survives.
"""

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TINY = '--config=configs/tiny.py'
_SMALL = '--config=configs/continual_math_small.py'
_FIT = ['--mixtures={mix}', '--losses={loss}', '--target=loss', '--samples=100', '--top_k=10']
_NONE_CONFIG = '''
from configs import tiny
def get_config():
  config = tiny.get_config()
  config.{field} = None
  return config
'''

# (id, module, args, text the error line must contain). `{run}`: a finished tiny run (checked
# unchanged afterwards); `{file}`: a plain file; `{tmp}`: an empty folder; `{ro}`: a folder on a
# read-only file system (skipped when one cannot be mounted); others: files made by `_inputs`.
CASES = [
    ('mesh-model-too-wide', 'train', [_TINY, '--workdir={run}', '--config.mesh.model=3'],
     'mesh.model: 3'),
    ('mesh-data-too-wide', 'train', [_TINY, '--workdir={run}', '--config.mesh.data=3'], 'mesh.data'),
    ('lr-nan', 'train', [_TINY, '--workdir={run}', '--config.optimizer.learning_rate=nan'],
     'optimizer.learning_rate: must be a finite number'),
    ('lr-inf', 'train', [_TINY, '--workdir={run}', '--config.optimizer.learning_rate=inf'],
     'optimizer.learning_rate'),
    ('int-field-float', 'train', [_TINY, '--workdir={run}', '--config.steps=1.5'], 'config.steps'),
    ('int-field-none', 'train', ['--config={none_seq_len}', '--workdir={run}'],
     'seq_len: must be an integer, got None'),
    ('float-field-text', 'train', [_TINY, '--workdir={run}', '--config.optimizer.b1=abc'],
     'config.optimizer.b1'),
    ('float-field-range', 'train', [_TINY, '--workdir={run}', '--config.optimizer.b2=1.0'],
     'optimizer.b2: must be in [0, 1)'),
    ('bool-field-text', 'train', [_TINY, '--workdir={run}', '--config.data.loss_on_prompt=maybe'],
     'config.data.loss_on_prompt'),
    ('draws-unknown', 'train', [_TINY, '--workdir={run}', '--config.data.draws=sobol'],
     "data.draws: 'sobol' is not one of iid, quasi"),
    ('str-field-none', 'train', ['--config={none_domains}', '--workdir={run}'],
     'domains: must be a string, got None'),
    ('negative-int', 'train', [_TINY, '--workdir={run}', '--config.seed=-1'], 'seed: must be >= 0'),
    ('zero-steps', 'train', [_TINY, '--workdir={run}', '--config.steps=0'], 'steps: must be positive'),
    ('unknown-field', 'train', [_TINY, '--workdir={run}', '--config.mixer.nme=x'],
     "no field 'mixer.nme' (did you mean 'mixer.name'?)"),
    ('unknown-flag', 'train', [_TINY, '--workdir={run}', '--nope'], "'nope'"),
    ('missing-workdir', 'train', [_TINY], 'workdir'),
    ('missing-config', 'train', ['--workdir={run}'], 'config: give --config'),
    ('config-file-missing', 'train', ['--config={tmp}/nope.py', '--workdir={run}'], 'config'),
    ('workdir-is-file', 'train', [_TINY, '--workdir={file}'], 'workdir: {file}'),
    ('workdir-under-file', 'train', [_TINY, '--workdir={file}/run'], 'workdir'),
    ('workdir-read-only', 'train', [_TINY, '--workdir={ro}/run'], 'workdir'),
    ('data-dir-is-file', 'train', [_TINY, '--workdir={run}', '--config.data.dir={file}'],
     'data.dir: {file} is a file'),
    ('data-dir-read-only', 'train', [_TINY, '--workdir={run}', '--config.data.dir={ro}/data'],
     'data.dir: {ro}/data cannot be written'),
    ('init-from-other-shape', 'train',
     [_TINY, '--workdir={tmp}/new', '--config.init_from={run}', '--config.model.d_model=128'],
     'init_from: {run} holds a model of another shape'),
    ('init-from-missing', 'train', [_TINY, '--workdir={run}', '--config.init_from={tmp}/none'],
     'init_from: no checkpoints'),
    ('quickstart-gs-overwrite', 'quickstart', ['--workdir=gs://bucket/q', '--overwrite'],
     'workdir: --overwrite is not supported on a remote workdir (gs://bucket/q)'),
    ('train-gs-overwrite', 'train', [_TINY, '--workdir=gs://bucket/t', '--overwrite'],
     'workdir: --overwrite is not supported on a remote workdir (gs://bucket/t)'),
    ('quickstart-nan', 'quickstart', ['--workdir={run}', '--config.continual.balance=nan'],
     'continual.balance: must be a finite number'),
    ('quickstart-base-root-file', 'quickstart',
     ['--workdir={run}', '--config.continual.base_root={file}'], 'continual.base_root: {file}'),
    ('trajectories-population-0', 'collect_trajectories',
     [_SMALL, '--workdir={run}', '--config.trajectories.population=0'],
     'trajectories.population: must be positive'),
    ('trajectories-no-config', 'collect_trajectories', ['--workdir={run}'], 'config'),
    ('agent-fraction-0', 'train_agent',
     [_SMALL, '--trajectories={tmp}', '--workdir={run}', '--config.agent.best_fraction=0'],
     'agent.best_fraction'),
    ('agent-no-trajectories', 'train_agent', [_SMALL, '--trajectories={tmp}', '--workdir={run}'],
     '{tmp}'),
    ('compare-missing-agent-dir', 'continual_compare', [_SMALL, '--workdir={run}'], 'agent_dir'),
    ('taskpgm-redundancy', 'taskpgm',
     ['--config=configs/taskpgm.py', '--workdir={run}', '--config.taskpgm.redundancy=foo'],
     'taskpgm.redundancy'),
    ('taskpgm-no-section', 'taskpgm', [_TINY, '--workdir={run}'], 'config: give --config=FILE'),
    ('regmix-nan-weight', 'fit_regmix', [a.replace('{mix}', '{mix_nan}') for a in _FIT],
     "{mix_nan}' line 3, column 'a': nan"),
    ('regmix-negative-weight', 'fit_regmix', [a.replace('{mix}', '{mix_neg}') for a in _FIT],
     "{mix_neg}' line 2, column 'b': -0.5"),
    ('regmix-inf-loss', 'fit_regmix', [a.replace('{loss}', '{loss_inf}') for a in _FIT],
     "{loss_inf}' line 4, column 'loss': inf"),
    ('regmix-out-under-file', 'fit_regmix', _FIT + ['--predict={mix}', '--out={file}/p.csv'],
     'out: {file}/p.csv'),
    ('regmix-missing-file', 'fit_regmix', [a.replace('{mix}', '{tmp}/no.csv') for a in _FIT],
     'mixtures'),
    ('regmix-missing-target', 'fit_regmix', ['--mixtures={mix}', '--losses={loss}'], 'target'),
    ('report-corrupt-summary', 'report', ['--workdir={corrupt}'], '{corrupt}/summary.json'),
    ('report-summary-not-one', 'report', ['--workdir={not_summary}'],
     '{not_summary}/summary.json: not a run summary'),
    ('report-out-is-file', 'report', ['--workdir={run}', '--out={file}'], 'out: {file}'),
    ('report-workdir-missing', 'report', ['--workdir={tmp}/none'], 'workdir'),
    ('report-source-only', 'report', ['--workdir={run}', '--source=math/easy'], 'target'),
    ('sweep-missing-file', 'sweep', ['--sweep={tmp}/none.py'], 'sweep'),
    ('sweep-workers-0', 'sweep', ['--sweep=configs/sweeps/tiny.py', '--workers=0'], 'workers'),
    ('bench-unknown-section', 'bench', ['--only=nope'], "only: unknown section 'nope'"),
    ('inspect-seq-len-0', 'inspect', ['--seq_len=0'], 'seq_len: must be positive'),
    ('inspect-unknown-flag', 'inspect', ['--nope=1'], "'nope'"),
    ('inspect-bad-domain-flag', 'inspect', ['--domain=nameonly'], 'domain: expected NAME=GLOB'),
    ('train-bad-domain-flag', 'train', [_TINY, '--workdir={run}', '--domain=x={tmp}/none/*.txt'],
     "domain_files.x.path: no files match '{tmp}/none/*.txt'"),
    ('report-takes-no-domain', 'report', ['--workdir={run}', '--domain=x=/a'],
     "domain: 'x=/a': this command takes no domains"),
]


def _module(cli: str) -> str:
  return 'mixing.data.inspect' if cli == 'inspect' else f'experiments.{cli}'


def _run(cli: str, args, timeout: int = 240) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=1')  # one device: mesh cases
  return subprocess.run([sys.executable, '-m', _module(cli), *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _snapshot(path: str) -> dict:
  """Every file under path: its size and modification time."""
  files = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
  return {os.path.relpath(p, path): (os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in files}


def _mount_tmpfs(path: str, size: str) -> bool:
  """Whether a tmpfs of `size` could be mounted at path (it can as root, where `mount` exists)."""
  os.makedirs(path, exist_ok=True)
  try:
    return subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', path],
                          capture_output=True).returncode == 0
  except OSError:
    return False


@pytest.fixture(scope='module')
def good_run(tmp_path_factory):
  """A finished 4-step tiny run, made once."""
  run = str(tmp_path_factory.mktemp('good') / 'run')
  proc = _run('train', [_TINY, f'--workdir={run}', '--config.steps=4'])
  assert proc.returncode == 0, proc.stderr[-2000:]
  return run


@pytest.fixture(scope='module')
def read_only(tmp_path_factory):
  """A folder on a read-only file system (a tmpfs remounted read-only), or None where mounting is
  not allowed (not root)."""
  path = str(tmp_path_factory.mktemp('ro') / 'mnt')
  if not _mount_tmpfs(path, '1m'):
    yield None
    return
  subprocess.run(['mount', '-o', 'remount,ro', path], check=True)
  yield path
  subprocess.run(['umount', path], check=False)


def _inputs(tmp, good_run, read_only) -> dict:
  """What each `{name}` in the cases stands for: the files and folders they point at."""
  def write(name, text):
    with open(os.path.join(tmp, name), 'w') as f:
      f.write(text)
    return os.path.join(tmp, name)
  header = 'index,a,b\n'
  values = {
      'tmp': os.path.join(tmp, 'empty'), 'file': write('a_file', 'not a directory\n'),
      'ro': read_only,
      'mix': write('mix.csv', header + '1,0.5,0.5\n2,0.1,0.9\n3,0.2,0.8\n4,0.9,0.1\n'),
      'mix_nan': write('mix_nan.csv', header + '1,0.5,0.5\n2,nan,0.9\n3,0.2,0.8\n4,0.9,0.1\n'),
      'mix_neg': write('mix_neg.csv', header + '1,1.5,-0.5\n2,0.1,0.9\n3,0.2,0.8\n4,0.9,0.1\n'),
      'loss': write('loss.csv', 'index,loss\n1,3.0\n2,3.1\n3,2.9\n4,3.3\n'),
      'loss_inf': write('loss_inf.csv', 'index,loss\n1,3.0\n2,3.1\n3,inf\n4,3.3\n'),
      'none_seq_len': write('none_seq_len.py', _NONE_CONFIG.format(field='seq_len')),
      'none_domains': write('none_domains.py', _NONE_CONFIG.format(field='domains')),
  }
  os.makedirs(values['tmp'])
  for name, summary in (('corrupt', '{"step": 4, "eval'), ('not_summary', '[]')):
    values[name] = os.path.join(tmp, name)
    shutil.copytree(good_run, values[name])
    write(os.path.join(name, 'summary.json'), summary)
  values['run'] = os.path.join(tmp, 'run')
  shutil.copytree(good_run, values['run'])
  return values


@pytest.mark.parametrize('cli,args,expected', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(tmp_path, good_run, read_only, cli, args, expected):
  if any('{ro}' in a for a in args) and read_only is None:
    pytest.skip('cannot mount a read-only tmpfs here (needs root)')
  values = _inputs(str(tmp_path), good_run, read_only)
  fill = lambda text: text.format(**values)
  before = _snapshot(values['run'])
  proc = _run(cli, [fill(a) for a in args])
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert 'Traceback' not in proc.stdout + proc.stderr, proc.stderr[-3000:]
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert len(lines) == 1 and lines[0].startswith('error: '), lines
  assert fill(expected) in lines[0], lines[0]
  assert _snapshot(values['run']) == before, 'the finished run was changed'


def test_full_disk_is_one_line_and_keeps_the_last_checkpoint(tmp_path, good_run):
  """A tmpfs with room for one checkpoint: the second save fails (ENOSPC) mid-run."""
  checkpoint = os.path.join(good_run, 'checkpoints', '4')
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(checkpoint) for f in fs)
  disk = str(tmp_path / 'disk')
  if not _mount_tmpfs(disk, f'{int(size * 1.6) // 1024}k'):
    pytest.skip('cannot mount a small tmpfs here (needs root): the full-disk case is untested')
  try:
    run = os.path.join(disk, 'run')
    proc = _run('train', [_TINY, f'--workdir={run}', '--config.steps=10',
                          '--config.eval_every=100', '--config.checkpoint_every=5'])
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert 'Traceback' not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and 'No space left on device' in lines[0], lines
    assert lines[0].startswith('error: ') and run in lines[0], lines[0]
    assert os.path.isdir(os.path.join(run, 'checkpoints', '5')), os.listdir(run)
  finally:
    subprocess.run(['umount', disk], check=False)


def test_a_gs_path_without_the_gcs_extra_is_one_line():
  pytest.importorskip('fsspec')
  if importlib.util.find_spec('gcsfs') is not None:
    pytest.skip('gcsfs is installed: the path would reach Google Cloud Storage')
  for module, args in (('train', [_TINY, '--workdir=gs://bucket/t']),
                       ('quickstart', ['--workdir=gs://bucket/q'])):
    result = subprocess.run([sys.executable, '-m', f'experiments.{module}', *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "error: Please install gcsfs to access Google Storage (gs:// paths need the gcs extra: "
        "pip install -e '.[gcs]')")
    assert 'Traceback' not in result.stderr


def test_an_os_error_without_a_file_names_the_run(monkeypatch):
  """A write in a library's thread (orbax's async save) can fail with no file to name: the line then
  says whose run it was, from --workdir."""
  from experiments.training import cli  # pylint: disable=g-import-not-at-top
  full = OSError(28, 'No space left on device')
  monkeypatch.setattr(cli, '_flag_value', lambda name: '/w/run' if name == 'workdir' else None)
  assert cli.one_line(full) == 'No space left on device (the run in /w/run)'
  assert cli.one_line(OSError(28, 'No space left on device', '/w/run/x')) == (
      '/w/run/x: No space left on device')
  monkeypatch.setattr(cli, '_flag_value', lambda name: None)
  assert cli.one_line(full) == 'No space left on device'
