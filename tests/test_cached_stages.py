"""Cached stages reuse only what their own config made: another config is refused in one line.

Nothing here trains: each stage's folder is claimed with one config, then the stage is called with
another and must refuse before it trains anything (or, for the scores, merge as documented).
"""

import copy
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import quickstart_compare
from experiments.recipes import agent_study
from experiments.recipes import runs
from experiments.recipes import task_mixtures
from experiments.recipes import trajectories
from experiments.training import workdir as workdir_lib
from mixing.agent import dataset as dataset_lib
from mixing.agent import features
from tests.test_agent_pipeline import _tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _changed(config, **fields):
  config = copy.deepcopy(config)
  for dotted, value in fields.items():
    *path, last = dotted.split('.')
    node = config
    for part in path:
      node = node[part]
    node[last] = value
  return config


def test_compare_refuses_another_config_before_training(tmp_path, monkeypatch):
  config = _tiny(tmp_path)
  # The agents 'A' and 'B' are not trained here: only the config records are compared.
  monkeypatch.setattr(agent_study.deploy, 'load_agent', lambda agent_dir: None)
  work = str(tmp_path / 'W')
  assert agent_study.compare(config, 'A', work, methods=[]) == {}  # claims W, trains nothing
  runs.claim_run(config, os.path.join(work, 'uniform'), **{'mixer.name': 'uniform'})
  other = _changed(config, **{'continual.learning_rate': 1e-2, 'seed': 3})
  with pytest.raises(ValueError, match=r'^workdir: .*/W holds a run of another config \(differs in '
                     r'continual.learning_rate, optimizer.learning_rate, seed\); pass --overwrite'):
    agent_study.compare(other, 'A', work, methods=['uniform'])
  # A row run under another config (here: another agent) is refused too, before anything trains.
  runs.claim_run(config, os.path.join(work, 'agent'), **{'mixer.name': 'agent',
                                                        'mixer.agent_dir': 'A'})
  with pytest.raises(ValueError, match=r'/W/agent holds a run of another config \(differs in '
                     r'mixer.agent_dir\)'):
    agent_study.compare(config, 'B', work, methods=['uniform', 'agent'])
  assert not os.path.exists(config.continual.base_root)  # no base model was trained for either


def test_compare_cli_exits_2_with_one_line(tmp_path):
  config = _tiny(tmp_path)
  work = tmp_path / 'W'
  runs.claim_run(config, str(work / 'uniform'), **{'mixer.name': 'uniform'})
  workdir_lib.lock(str(work / 'uniform')).release()  # as if another process had claimed it
  (tmp_path / 'tiny.py').write_text(
      'from tests.test_agent_pipeline import _tiny\nimport pathlib\n'
      f'def get_config():\n  return _tiny(pathlib.Path({str(tmp_path)!r}))\n')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.continual_compare', f'--config={tmp_path / "tiny.py"}',
       f'--workdir={work}', '--agent_dir=A', '--methods=uniform', '--config.seed=5'],
      cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'))
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
  assert lines[0].startswith(f'error: workdir: {work}/uniform holds a run of another config '
                             '(differs in init_from, seed)')


def test_scores_of_methods_not_run_are_kept(tmp_path):
  s = lambda x: {'source': x, 'target': x, 'balanced': x}
  old = {'uniform': s(1), 'best static ratio (target share 0.1)': s(2), 'agent': s(3),
         'unseen source field: uniform': s(4), 'unseen source field: agent': s(5)}
  new = {'best static ratio (target share 0.5)': s(6), 'odm': s(7), 'agent': s(8)}
  merged = agent_study.merge_scores(old, new, ['oracle', 'odm', 'agent'])
  assert list(merged) == ['uniform', 'odm', 'best static ratio (target share 0.5)', 'agent',
                          'unseen source field: uniform', 'unseen source field: agent']
  assert merged['agent'] == s(8) and merged['uniform'] == s(1)
  with pytest.raises(ValueError, match="methods: unknown method 'odn'"):
    agent_study.plan(_tiny(tmp_path), 'A', ['odn'], (), '', '', '', '')


def _dataset(seed: int) -> dataset_lib.Dataset:
  rng = np.random.default_rng(seed)
  writer = dataset_lib.TrajectoryWriter()
  for _ in range(2):
    writer.add(['synthetic/copy', 'math/easy'], ['source', 'target'],
               rng.normal(size=(3, 2, features.F)), rng.normal(size=(3, features.G)),
               rng.dirichlet(np.ones(2), 2), rng.normal(size=2))
  return writer.dataset()


def test_agent_and_trajectories_refuse_another_config(tmp_path):
  config = _tiny(tmp_path)
  traj = tmp_path / 'T'
  data = _dataset(0)
  writer = dataset_lib.TrajectoryWriter()
  writer.add_dataset(data)
  writer.save(str(traj / 'dataset'), {'domains': ['synthetic/copy', 'math/easy']})
  agent_dir = str(tmp_path / 'A')
  workdir_lib.claim(agent_dir, trajectories.agent_config(config, data))
  longer = _changed(config, **{'agent.cql_steps': 11})
  with pytest.raises(ValueError, match=r'/A holds a run of another config \(differs in '
                     r'agent.cql_steps\)'):
    trajectories.train_agent(longer, str(traj), agent_dir, quiet=True)
  writer.add_dataset(_dataset(1))  # other trajectories in the same folder
  writer.save(str(traj / 'dataset'))
  with pytest.raises(ValueError, match=r'differs in stage.trajectories\)'):
    trajectories.train_agent(config, str(traj), agent_dir, quiet=True)
  workdir_lib.claim(str(traj), trajectories.collection_config(config))
  more = _changed(config, **{'trajectories.num': 8})  # more rounds: the same collection, resumed
  assert not workdir_lib.differences(trajectories.collection_config(config).to_dict(),
                                     trajectories.collection_config(more).to_dict())
  with pytest.raises(ValueError, match=r'differs in continual.steps_per_reweight'):
    trajectories.collect(_changed(config, **{'continual.steps_per_reweight': 3}), str(traj))
  config.taskpgm = quickstart_compare.get_config().taskpgm
  folder = str(tmp_path / 'mixture')
  workdir_lib.claim(folder, task_mixtures.domain_mixture_config(config))
  with pytest.raises(ValueError, match=r'differs in data.num_train'):
    task_mixtures.domain_mixture(_changed(config, **{'data.num_train': 41}), folder)
  assert not os.path.exists(config.continual.base_root)
