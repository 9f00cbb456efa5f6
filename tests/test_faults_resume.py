"""SIGKILL fault matrix: each command is killed at a risky point, re-run, and must end identical.

A case starts the command as a subprocess in its own session, polls its workdir (and stderr) until
it is at the point under test, freezes the whole process tree (SIGSTOP: what is on disk then is what
the kill leaves), SIGKILLs it, checks that the point was really reached, re-runs the same command to
the end and compares with an uninterrupted run: final parameters, scores and result files equal,
metrics rows equal minus `perf/` keys; and nothing committed before the kill is lost (the re-run
resumes from the newest checkpoint, or keeps a finished stage's files untouched).

Points: `experiments.train` (configs/tiny.py) while compiling its train step, mid-steps between two
checkpoints, inside a checkpoint save (orbax's temporary folder present) and inside an evaluation;
`collect_trajectories`, `train_agent`, `taskpgm`, `sweep` and `quickstart` mid-stage, on configs as
tiny as tests/test_agent_pipeline.py's and tests/test_taskpgm_pipeline.py's. The uninterrupted
quickstart is also the reference of the collection and agent stages it runs with the same config.
Programs are shared through JAX's persistent compilation cache (one folder for the module), filled
by the uninterrupted runs first; the `compile` case runs without it, so that it really compiles.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

QUICKSTART_CONFIG = '''
from configs import models, quickstart_compare

def get_config():
  config = quickstart_compare.get_config()
  c = config.continual
  c.sources, c.targets, c.base_root = 'synthetic/copy', 'math/easy', {base!r}
  c.base_steps, c.reweights, c.steps_per_reweight = 4, 3, 2
  config.trajectories.num, config.trajectories.population = 4, 2
  config.agent.bc_steps, config.agent.cql_steps = 10, 30
  config.model = models.get_config('tiny')
  config.seq_len, config.batch_size, config.eval_items = 32, 4, 2
  config.data.num_train, config.data.num_heldout = 40, 10
  config.mixer.doremi.proxy_steps = 4
  config.taskpgm.single_task_steps, config.taskpgm.probes = 3, 6
  return config
'''
TASKPGM_CONFIG = '''
import ml_collections

from configs import models, taskpgm

def get_config():
  config = taskpgm.get_config()
  t = config.taskpgm
  t.tasks = 'bbh/navigate,bbh/web_of_lies,bbh/boolean_expressions,rephrase/bbh/navigate,noise/qa'
  t.eval_tasks, t.base_root = 'bbh/navigate,bbh/web_of_lies', {base!r}
  t.base_steps, t.single_task_steps, t.finetune_steps = 3, 3, 3
  t.probes, t.budget, t.em_items = 6, 2, 2
  t.seeds, t.families, t.select.lam = '0', 'tiny', '0.5,2.0'
  t.family_models = ml_collections.ConfigDict({{'tiny': models.get_config('tiny')}})
  config.seq_len, config.batch_size, config.eval_items = 64, 8, 8
  config.data.num_train, config.data.num_heldout = 40, 12
  return config
'''
SWEEP = '''
import ml_collections

def get_sweep():
  sweep = ml_collections.ConfigDict()
  sweep.config, sweep.kind = {config!r}, 'grid'
  sweep.params = ml_collections.ConfigDict(allow_dotted_keys=True)
  sweep.params['mixer.name'] = ['static', 'odm']
  return sweep
'''


@pytest.fixture(scope='module')
def box(tmp_path_factory):
  box = tmp_path_factory.mktemp('faults')
  for name, text in (('qs.py', QUICKSTART_CONFIG), ('taskpgm.py', TASKPGM_CONFIG)):
    (box / name).write_text(text.format(base=str(box / 'base')))
  (box / 'sweep.py').write_text(SWEEP.format(config=os.path.join(ROOT, 'configs', 'tiny.py')))
  return box


def _env(box, cache=True, log_compiles=False) -> dict:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  env['JAX_COMPILATION_CACHE_DIR'] = ''  # off (cli.use_compilation_cache would use ~/.cache)
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=str(box / 'jax_cache'),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  if log_compiles:
    env['JAX_LOG_COMPILES'] = '1'
  return env


def _popen(args, env, log):
  with open(f'{log}.out', 'w') as out, open(f'{log}.err', 'w') as err:
    return subprocess.Popen([sys.executable, '-m', *map(str, args)], cwd=ROOT, env=env, stdout=out,
                            stderr=err, start_new_session=True)


def _run(args, env, log) -> str:
  """Runs the command to the end (exit 0); its stdout."""
  proc = _popen(args, env, log)
  assert proc.wait(timeout=600) == 0, _text(f'{log}.err')[-3000:]
  return _text(f'{log}.out')


def _tree(pid: int) -> list[int]:
  """pid and its live descendants (from /proc), parents first."""
  children = {}
  for entry in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{entry}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except (OSError, IndexError):
      continue
    if fields[0] != 'Z':
      children.setdefault(int(fields[1]), []).append(int(entry))
  out, todo = [], [pid]
  while todo:
    out.append(todo.pop(0))
    todo += children.get(out[-1], [])
  return out


def _signal(pids, sig):
  for pid in pids:
    try:
      os.kill(pid, sig)
    except ProcessLookupError:
      pass


def _fault(args, env, log, ready, timeout=600) -> None:
  """Runs the command until ready() holds, then freezes its process tree and SIGKILLs it."""
  proc = _popen(args, env, log)
  deadline = time.time() + timeout
  try:
    while not ready():
      assert proc.poll() is None, (f'{args[0]} ended before the fault point\n'
                                   + _text(f'{log}.err')[-2000:])
      assert time.time() < deadline, f'{args[0]}: the fault point never came'
      time.sleep(0.002)
  except BaseException:
    _signal(_tree(proc.pid)[::-1], signal.SIGKILL)
    proc.wait()
    raise
  frozen = []
  while True:  # stop parents first, so that no new child appears unstopped
    new = [p for p in _tree(proc.pid) if p not in frozen]
    if not new:
      break
    _signal(new, signal.SIGSTOP)
    frozen += new
  _signal(frozen, signal.SIGKILL)
  proc.wait(timeout=60)
  for pid in frozen[1:]:  # the sweep's runs: gone before the re-run takes their workdirs
    while os.path.exists(f'/proc/{pid}') and time.time() < deadline:
      with open(f'/proc/{pid}/stat') as f:
        if f.read().rsplit(')', 1)[1].split()[0] == 'Z':
          break
      time.sleep(0.01)


def _text(path) -> str:
  try:
    with open(path, errors='replace') as f:
      return f.read()
  except FileNotFoundError:
    return ''


def _ls(path) -> list[str]:
  try:
    return os.listdir(path)
  except FileNotFoundError:
    return []


def _rows(path) -> list[dict]:
  """metrics.jsonl's complete rows (a line being written is not one)."""
  rows = []
  for line in _text(path).splitlines(keepends=True):
    try:
      rows.append(json.loads(line))
    except ValueError:
      assert not line.endswith('\n'), f'{path}: a malformed row {line!r}'
  return rows


def _last_step(run) -> int:
  return max([r['step'] for r in _rows(os.path.join(run, 'metrics.jsonl'))], default=0)


def _committed(folder) -> list[int]:
  """Steps of an orbax folder's finished checkpoints."""
  return sorted(int(n) for n in _ls(folder) if n.isdigit())


def _saving(folder) -> bool:
  """Whether orbax is writing a checkpoint into `folder` (its temporary folder is there)."""
  return any('orbax-checkpoint-tmp' in n for n in _ls(folder))


def _json(path):
  with open(path) as f:
    return json.load(f)


def _arrays(path) -> list:
  with warnings.catch_warnings():  # orbax: no sharding given, it takes the saved one (one CPU here)
    warnings.simplefilter('ignore', UserWarning)
    tree = ocp.PyTreeCheckpointer().restore(str(path))
  return [(jax.tree_util.keystr(k), np.asarray(v)) for k, v in
          jax.tree_util.tree_leaves_with_path(tree)]


def _assert_same_arrays(a, b):
  a, b = _arrays(a), _arrays(b)
  assert [k for k, _ in a] == [k for k, _ in b]
  for (key, x), (_, y) in zip(a, b):
    np.testing.assert_array_equal(x, y, err_msg=key)


def _metrics(path) -> list[dict]:
  return [{k: v for k, v in r.items() if not k.startswith('perf/')} for r in _rows(path)]


def _assert_same_run(ref, run):
  """Final parameters (and optimizer), summary, metrics rows minus perf/, mixer updates: equal."""
  last = _committed(os.path.join(ref, 'checkpoints'))[-1]
  assert _committed(os.path.join(run, 'checkpoints'))[-1] == last
  _assert_same_arrays(os.path.join(ref, 'checkpoints', str(last), 'state'),
                      os.path.join(run, 'checkpoints', str(last), 'state'))
  assert _json(os.path.join(run, 'summary.json')) == _json(os.path.join(ref, 'summary.json'))
  for name in ('metrics.jsonl', 'mixer.jsonl'):
    assert _metrics(os.path.join(run, name)) == _metrics(os.path.join(ref, name)), name


def _stamps(root, paths) -> dict:
  return {p: os.stat(os.path.join(root, p)).st_mtime_ns for p in paths}


# --- experiments.train -------------------------------------------------------------------------
TRAIN = ['experiments.train', '--config=configs/tiny.py']  # 20 steps; checkpoint 5, eval 10 apart


@pytest.fixture(scope='module')
def train_ref(box):
  _run(TRAIN + [f'--workdir={box / "train_ref"}'], _env(box), box / 'train_ref')
  return box / 'train_ref'


@pytest.mark.parametrize('point', ['compile', 'mid-step', 'checkpoint-save', 'eval'])
def test_train_killed_resumes_identical(box, train_ref, point):
  work, log = box / f'train_{point}', box / f'train_{point}_killed'
  args = TRAIN + [f'--workdir={work}']
  err = f'{log}.err'
  ckpts = work / 'checkpoints'
  # Each point but `compile` comes after a committed checkpoint, which the re-run must resume from.
  # The evaluation runs uncached: compiling it takes seconds, in which the save before it commits.
  ready = {
      'compile': lambda: 'Compiling jit(train_step)' in _text(err),
      'mid-step': lambda: 5 in _committed(ckpts) and _last_step(work) >= 7,
      'checkpoint-save': lambda: _saving(ckpts) and _committed(ckpts),
      'eval': lambda: ('Compiling jit(eval_step)' in _text(err) and 5 in _committed(ckpts)
                       and _last_step(work) == 9),
  }[point]
  _fault(args, _env(box, cache=point not in ('compile', 'eval'), log_compiles=True), log, ready)
  committed, step = _committed(ckpts), _last_step(work)
  if point == 'compile':  # killed compiling: no step ran
    assert step == 0 and not committed
    assert 'Finished XLA compilation of jit(train_step)' not in _text(err)
  elif point == 'mid-step':  # rows past the newest checkpoint: the re-run redoes and rewrites them
    assert committed[-1] < step < 20
  elif point == 'checkpoint-save':  # a newer checkpoint half-written: the re-run must ignore it
    assert _saving(ckpts) and committed
  else:  # inside the first evaluation (step 10): its row is not written yet
    assert step == 9 and committed == [5]
  out = _run(args, _env(box), box / f'train_{point}_rerun')
  if committed:  # nothing lost: the newest checkpoint committed before the kill is where it resumes
    assert f'resumed from step {committed[-1]}' in out
  _assert_same_run(train_ref, work)


# --- the Data Mixing Agent's stages and the quickstart -----------------------------------------
def _quickstart(box, work):
  return ['experiments.quickstart', f'--config={box / "qs.py"}', f'--workdir={work}']


@pytest.fixture(scope='module')
def quickstart_ref(box):
  _run(_quickstart(box, box / 'qs_ref'), _env(box), box / 'qs_ref')
  return box / 'qs_ref'


def test_collect_trajectories_killed_mid_round_resumes_identical(box, quickstart_ref):
  work = box / 'collect'
  args = ['experiments.collect_trajectories', f'--config={box / "qs.py"}', f'--workdir={work}']
  rounds = work / 'rounds'
  _fault(args, _env(box), box / 'collect_killed',
         lambda: (rounds / 'round_000').is_dir() and (rounds / 'round_001.work').is_dir())
  assert not (work / 'dataset').exists()
  kept = _stamps(rounds, ['round_000/transitions.npz'])
  out = _run(args, _env(box), box / 'collect_rerun')
  assert 'round 1/2: done before, kept' in out and _stamps(rounds, kept) == kept
  ref = quickstart_ref / 'trajectories' / 'dataset'
  with np.load(ref / 'transitions.npz') as a, np.load(work / 'dataset' / 'transitions.npz') as b:
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  assert _json(work / 'dataset' / 'config.json') == _json(ref / 'config.json')


def test_train_agent_killed_mid_training_resumes_identical(box, quickstart_ref):
  work = box / 'agent'
  args = ['experiments.train_agent', f'--config={box / "qs.py"}', '--checkpoint_every=10',
          f'--trajectories={quickstart_ref / "trajectories"}', f'--workdir={work}']
  _fault(args, _env(box), box / 'agent_killed', lambda: 20 in _committed(work / 'checkpoints'))
  committed = _committed(work / 'checkpoints')
  assert 20 in committed and 40 not in committed and not _committed(work)  # no agent saved yet
  out = _run(args, _env(box), box / 'agent_rerun')
  assert f'resumed from step {committed[-1]}' in out
  ref = quickstart_ref / 'agent_policy'  # trained with one checkpoint, at the end: the same agent
  assert _committed(work) == _committed(ref) == [0]
  _assert_same_arrays(ref / '0' / 'params', work / '0' / 'params')
  assert _metrics(work / 'metrics.jsonl') == _metrics(ref / 'metrics.jsonl')


def test_quickstart_killed_mid_run_resumes_identical(box, quickstart_ref):
  work = box / 'qs'
  _fault(_quickstart(box, work), _env(box), box / 'qs_killed',
         lambda: _committed(work / 'odm' / 'checkpoints')
         and not (work / 'odm' / 'summary.json').exists())
  done = ['trajectories/dataset/transitions.npz', 'agent_policy/0/params',
          'taskpgm_mixture/mixture.json', 'uniform/summary.json', 'doremi/summary.json']
  kept = _stamps(work, done)
  committed = _committed(work / 'odm' / 'checkpoints')
  out = _run(_quickstart(box, work), _env(box), box / 'qs_rerun')
  assert _stamps(work, done) == kept and f'resumed from step {committed[-1]}' in out
  assert _json(work / 'scores.json') == _json(quickstart_ref / 'scores.json')
  for method in _json(work / 'scores.json'):
    _assert_same_run(quickstart_ref / method, work / method)


# --- taskpgm and sweep -------------------------------------------------------------------------
def test_taskpgm_killed_mid_finetune_resumes_identical(box):
  args = lambda work: ['experiments.taskpgm', f'--config={box / "taskpgm.py"}', f'--workdir={work}']
  ref, work = box / 'taskpgm_ref', box / 'taskpgm'
  _run(args(ref), _env(box), ref)
  run = lambda w: w / 'tiny' / 'seed_0'
  _fault(args(work), _env(box), box / 'taskpgm_killed', lambda: (run(work) / 'ablate').exists())
  assert (run(work) / 'select.json').exists() and not (work / 'results.json').exists()
  kept = _stamps(work, ['tiny/seed_0/potentials.npz', 'tiny/seed_0/select.json'])
  _run(args(work), _env(box), box / 'taskpgm_rerun')
  assert _stamps(work, kept) == kept
  for name in ('results.json', 'tiny/results.json', 'tiny/seed_0/scores.json',
               'tiny/seed_0/select.json'):
    assert _json(work / name) == _json(ref / name), name
  no_times = lambda p: [l for l in p.read_text().splitlines() if not l.startswith('Wall time')]
  assert no_times(work / 'results.md') == no_times(ref / 'results.md')
  with np.load(run(ref) / 'potentials.npz') as a, np.load(run(work) / 'potentials.npz') as b:
    for key in a.files:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_sweep_killed_mid_run_resumes_identical(box, train_ref):
  args = lambda work: ['experiments.sweep', f'--sweep={box / "sweep.py"}', f'--workdir={work}',
                       '--workers=1', '--noplots', '--progress_seconds=0']
  ref, work = box / 'sweep_ref', box / 'sweep'
  _run(args(ref), _env(box), ref)
  first, second = work / 'mixer.name=static', work / 'mixer.name=odm'
  _fault(args(work), _env(box), box / 'sweep_killed',
         lambda: (first / 'summary.json').exists() and 5 in _committed(second / 'checkpoints'))
  assert not (second / 'summary.json').exists()
  kept, committed = _stamps(first, ['summary.json']), _committed(second / 'checkpoints')
  _run(args(work), _env(box), box / 'sweep_rerun')
  assert _stamps(first, kept) == kept  # the finished run is skipped, the other resumed
  assert f'resumed from step {committed[-1]}' in _text(work / 'logs' / f'{second.name}.out')
  for run in (first, second):
    _assert_same_run(ref / run.name, run)
  # results.csv equal but for `status`, which says what each call did ('done', then 'skipped')
  table = lambda path: [{k: v for k, v in row.items() if k != 'status'}
                        for row in csv.DictReader(open(path, newline=''))]
  assert table(work / 'results.csv') == table(ref / 'results.csv')
