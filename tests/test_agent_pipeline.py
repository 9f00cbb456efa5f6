"""The Data Mixing Agent's commands on a tiny continual set-up: collect, train, deploy, resume, errors."""

import copy
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import continual_math
from configs import models
from configs import quickstart_compare
from experiments.recipes import quickstart_stages as comparison
from experiments.recipes import trajectories as agent_lib
from experiments.recipes import runs
from experiments.training import trainer as trainer_lib
from experiments.recipes import continual
from mixing.agent import dataset as dataset_lib
from mixing.agent import deploy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(tmp_path):
  config = continual_math.get_config()
  c = config.continual
  c.sources, c.targets = 'synthetic/copy', 'math/easy'
  c.base_root = str(tmp_path / 'base')
  c.base_steps, c.reweights, c.steps_per_reweight = 4, 3, 2
  config.trajectories.num, config.trajectories.population = 4, 2
  config.agent.bc_steps, config.agent.cql_steps = 5, 10
  config.model = models.get_config('tiny')
  config.seq_len, config.batch_size, config.eval_items = 32, 4, 2
  config.data.num_train, config.data.num_heldout = 40, 10
  return config


@pytest.fixture(scope='module')
def pipeline(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('agent')
  config = _tiny(tmp)
  data = agent_lib.collect(config, str(tmp / 'T'), log=lambda *_: None)
  agent_lib.train_agent(config, str(tmp / 'T'), str(tmp / 'A'), quiet=True)
  return tmp, config, data


def test_trajectories_record_every_reweighting_step(pipeline):
  _, config, data = pipeline
  assert data.num_trajectories == 4 and len(data) == 4 * 3
  assert data.domain_names(0) == ['synthetic/copy', 'math/easy']
  np.testing.assert_allclose(data.action_NxD.sum(1), 1.0, rtol=1e-5)
  assert data.done_N.sum() == 4 and np.isfinite(data.reward_N).all()
  assert data.meta['roles'] == {'synthetic/copy': 'source', 'math/easy': 'target'}


def test_collection_resumes_by_round(pipeline, tmp_path):
  tmp, config, data = pipeline
  lines = []
  again = agent_lib.collect(config, str(tmp / 'T'), log=lines.append)
  assert lines == ['round 1/2: done before, kept', 'round 2/2: done before, kept']
  np.testing.assert_array_equal(again.action_NxD, data.action_NxD)


def test_an_unreadable_round_is_collected_again_to_the_same_trajectories(pipeline):
  tmp, config, data = pipeline
  transitions = tmp / 'T' / 'rounds' / 'round_001' / 'transitions.npz'
  with open(transitions, 'r+b') as f:  # cut short, as by a full disk
    f.truncate(transitions.stat().st_size // 2)
  lines = []
  again = agent_lib.collect(config, str(tmp / 'T'), log=lines.append)
  assert lines[0] == 'round 1/2: done before, kept'
  assert lines[1].startswith("round 2/2: dataset: cannot read '") and 'collecting it again' in lines[1]
  np.testing.assert_array_equal(again.action_NxD, data.action_NxD)
  np.testing.assert_array_equal(again.reward_N, data.reward_N)


def test_deployed_agent_reweights_a_continual_run(pipeline):
  tmp, config, _ = pipeline
  cfg = continual.continual_config(config, quiet=True, **{'mixer.name': 'agent',
                                                          'mixer.agent_dir': str(tmp / 'A')})
  trainer = runs.make_trainer(cfg, str(tmp / 'R'), quiet=True)
  trainer.run()
  updates = trainer_lib.metrics_lib.read_jsonl(str(tmp / 'R' / 'mixer.jsonl'))
  assert [u['step'] for u in updates] == [0, 2, 4]
  assert trainer.last_eval['eval/math/easy/loss'] < 10


def test_agent_with_dropped_features_and_group_shares_trains_and_deploys(pipeline, tmp_path):
  tmp, config, _ = pipeline
  config = continual.with_overrides(config, {'agent.drop_features': 'log_size, log_size_rel',
                                             'agent.group_shares': True})
  policy = agent_lib.train_agent(config, str(tmp / 'T'), str(tmp_path / 'A'), quiet=True)
  assert policy.config.drop_features == ('log_size', 'log_size_rel')
  loaded, _ = deploy.load_agent(str(tmp_path / 'A'))
  assert loaded.config.drop_features == ('log_size', 'log_size_rel')
  assert policy.config.group_shares and loaded.config.group_shares


def test_other_settings_trajectories_join_the_main_ones(pipeline, tmp_path):
  tmp, config, data = pipeline
  shutil.copytree(tmp / 'T', tmp_path / 'T')
  swapped = 'continual.sources=math/easy|continual.targets=synthetic/copy'
  config = continual.with_overrides(config, {'trajectories.settings': swapped,
                                             'trajectories.settings_num': 2})
  with pytest.raises(ValueError, match=r"trajectories.settings\[0\]: no trajectories in '"):
    agent_lib.training_data(config, str(tmp_path / 'T'))
  lines = []
  main = agent_lib.collect(config, str(tmp_path / 'T'), log=lines.append)
  assert lines[:2] == ['round 1/2: done before, kept', 'round 2/2: done before, kept']
  assert lines[-1].startswith('setting 1/1: round 1/1: 2 trajectories')
  np.testing.assert_array_equal(main.action_NxD, data.action_NxD)  # the main setting's, unchanged
  both = agent_lib.training_data(config, str(tmp_path / 'T'))
  assert both.num_trajectories == 6
  roles = [dict(zip(both.domain_names(t), map(str, both.roles_TxD[t]))) for t in (0, 5)]
  assert roles == [{'synthetic/copy': 'source', 'math/easy': 'target'},
                   {'math/easy': 'source', 'synthetic/copy': 'target'}]
  agent_lib.train_agent(config, str(tmp_path / 'T'), str(tmp_path / 'A'), quiet=True)
  with open(tmp_path / 'A' / 'config.json') as f:
    assert json.load(f)['stage']['trajectories'] == both.fingerprint()


@pytest.mark.parametrize('settings,message', [
    ('continual.nope=1', r"trajectories.settings\[0\]: unknown config field 'continual.nope'"),
    ('continual.targets=synthetic/copy', r"trajectories.settings\[0\]: domains: domain "
     r"'synthetic/copy' is listed twice"),
    ('continual.targets=math/hard;continual.targets=math/hard',
     r"trajectories.settings\[1\]: repeats an earlier setting"),
])
def test_other_settings_errors_name_the_setting(tmp_path, settings, message):
  config = continual.with_overrides(_tiny(tmp_path), {'trajectories.settings': settings})
  with pytest.raises(ValueError, match=message):
    agent_lib.check(config)


def test_agent_gamma_is_the_discount_cql_trains_with(pipeline, tmp_path):
  tmp, config, _ = pipeline
  td = {}
  for gamma in (0.9, 0.0):
    cfg = continual.with_overrides(config, {'agent.gamma': gamma})
    agent_lib.train_agent(cfg, str(tmp / 'T'), str(tmp_path / f'A{gamma}'), quiet=True)
    rows = trainer_lib.metrics_lib.read_jsonl(str(tmp_path / f'A{gamma}' / 'metrics.jsonl'))
    td[gamma] = [r['agent/td_loss'] for r in rows if 'agent/td_loss' in r]
  assert td[0.9] and td[0.0] and td[0.9] != td[0.0]
  with open(tmp / 'A' / 'metrics.jsonl') as f:  # the fixture's agent: the default, 0.9
    assert [json.loads(l).get('agent/td_loss') for l in f if 'td_loss' in l] == td[0.9]
  for bad in (1.0, -0.1):
    with pytest.raises(ValueError, match=r'agent.gamma: must be in \[0, 1\)'):
      agent_lib.check(continual.with_overrides(config, {'agent.gamma': bad}))


def test_train_agent_refuses_another_domain_space(pipeline, tmp_path):
  tmp, config, _ = pipeline
  config = copy.deepcopy(config)  # the fixture's config is shared
  config.continual.targets = 'math/medium'
  config.domains = 'synthetic/copy,math/medium'
  with pytest.raises(ValueError, match='trajectories: domain space'):
    agent_lib.train_agent(config, str(tmp / 'T'), str(tmp_path / 'A2'), quiet=True)


@pytest.mark.parametrize('args,message', [
    (['-m', 'experiments.train', '--config=configs/continual_math.py',
      '--config.mixer.name=agent', '--config.mixer.agent_dir=EMPTY'], "agent_dir: no trained agent"),
    (['-m', 'experiments.train_agent', '--config=configs/continual_math.py',
      '--trajectories=/no/such'], "dataset: no dataset directory at '/no/such/dataset'"),
    (['-m', 'experiments.train_agent', '--config=configs/continual_math.py',
      '--trajectories=/no/such', '--config.agent.drop_features=weight,size'],
     "agent.drop_features: unknown feature 'size'"),
])
def test_bad_agent_inputs_exit_2(tmp_path, args, message):
  empty = tmp_path / 'empty'
  empty.mkdir()
  args = [a.replace('EMPTY', str(empty)) for a in args]
  base = str(tmp_path / 'base')
  proc = subprocess.run([sys.executable, *args, f'--workdir={tmp_path / "w"}',
                         f'--config.continual.base_root={base}', '--config.continual.base_steps=2',
                         '--config.model.d_model=32', '--config.model.num_heads=2',
                         '--config.model.num_layers=1', '--config.model.d_ff=64',
                         '--config.data.num_train=20', '--config.data.num_heldout=6',
                         '--config.seq_len=32', '--config.batch_size=4', '--config.eval_items=1'],
                        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT))
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2 and lines and message in lines[-1], proc.stderr[-1500:]
  assert len([l for l in lines if l.startswith('error:')]) == 1


def test_quickstart_comparison_scores_every_method_and_resumes(pipeline, tmp_path):
  tmp, config, _ = pipeline
  config = copy.deepcopy(config)
  config.mixer.doremi.proxy_steps = 4
  config.taskpgm = quickstart_compare.get_config().taskpgm
  config.taskpgm.single_task_steps, config.taskpgm.probes = 3, 6
  work = str(tmp_path / 'w')
  # The agent's stages are this module's fixture: the comparison reuses what it finds.
  shutil.copytree(tmp / 'T', os.path.join(work, 'trajectories'))
  shutil.copytree(tmp / 'A', os.path.join(work, 'agent_policy'))
  lines = []
  rows = comparison.run(config, work, log=lines.append)
  assert list(rows) == list(comparison.METHODS)
  for scores in rows.values():
    assert set(scores) == {'source', 'target', 'balanced'}
    assert all(np.isfinite(v) for v in scores.values())
  assert json.loads(open(os.path.join(work, 'scores.json')).read()) == rows
  mixture = json.loads(open(os.path.join(work, 'taskpgm_mixture', 'mixture.json')).read())
  assert list(mixture) == ['synthetic/copy', 'math/easy']
  assert abs(sum(mixture.values()) - 1) < 1e-6 and min(mixture.values()) > 0
  with np.load(os.path.join(work, 'taskpgm_mixture', 'potentials.npz')) as pots:
    assert pots['jsd'].shape == (2, 2) and pots['unary'].shape == (2,)
  # The TaskPGM run trained on exactly that mixture.
  with open(os.path.join(work, 'taskpgm', 'summary.json')) as f:
    np.testing.assert_allclose(json.load(f)['weights'], list(mixture.values()), atol=1e-6)
  assert '| agent |' in open(os.path.join(work, 'scores.md')).read()
  stamps = {m: os.path.getmtime(os.path.join(work, m, 'summary.json')) for m in rows}
  again = []
  assert comparison.run(config, work, log=again.append) == rows
  assert {m: os.path.getmtime(os.path.join(work, m, 'summary.json')) for m in rows} == stamps
  assert not any(line.startswith('running') for line in again)
  assert any(line.startswith('running') for line in lines)
