"""Every Mixer runs end to end through the trainer on built-in domains; the report compares them."""

import json
import os

import numpy as np
import pytest

from configs import tiny
from experiments.training import metrics as metrics_lib
from experiments import report
from experiments.recipes import runs as runs_lib
from experiments.training import trainer as trainer_lib


def _config(name):
  config = tiny.get_config()
  config.steps, config.eval_every, config.checkpoint_every = 8, 8, 8
  config.mixer.name = name
  config.mixer.update_every = 2
  config.mixer.doremi.proxy_steps = 6
  config.mixer.regmix.proxy_steps = 4
  config.mixer.regmix.samples, config.mixer.regmix.top_k = 2000, 20
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp('compare')
  out = {}
  for name in ('uniform', 'proportional', 'temperature', 'odm', 'doremi', 'regmix'):
    trainer = runs_lib.make_trainer(_config(name), str(root / name), quiet=True)
    trainer.run()
    out[name] = trainer
  return root, out


def _updates(workdir):
  return metrics_lib.read_jsonl(os.path.join(workdir, 'mixer.jsonl'))


def test_static_mixers_weights(runs):
  root, trainers = runs
  sizes = np.array([d.train.num_tokens for d in trainers['uniform'].domains], float)
  np.testing.assert_allclose(trainers['uniform'].sampler.weights_D, 1 / 3)
  np.testing.assert_allclose(trainers['proportional'].sampler.weights_D, sizes / sizes.sum())
  t = np.sqrt(sizes)
  np.testing.assert_allclose(trainers['temperature'].sampler.weights_D, t / t.sum())
  updates = _updates(root / 'uniform')
  assert [u['step'] for u in updates] == [0, 2, 4, 6]  # logged at every update


def test_odm_changes_weights_online(runs):
  root, _ = runs
  updates = _updates(root / 'odm')
  names = [k for k in updates[0] if k.startswith('mixture/')]
  first = [updates[0][n] for n in names]
  last = [updates[-1][n] for n in names]
  np.testing.assert_allclose(first, 1 / 3)
  assert not np.allclose(first, last)


def test_offline_mixers_cache_their_mixture_and_run_static(runs):
  root, trainers = runs
  for name in ('doremi', 'regmix'):
    with open(root / name / name / 'mixture.json') as f:
      saved = json.load(f)
    np.testing.assert_allclose(trainers[name].sampler.weights_D, saved['weights'])
    assert abs(sum(saved['weights']) - 1) < 1e-9
  assert (root / 'regmix' / 'regmix' / 'mixtures.csv').exists()
  assert len((root / 'regmix' / 'regmix' / 'losses.csv').read_text().splitlines()) == 1 + 12


def test_report_compares_per_domain_eval_loss(runs):
  root, trainers = runs
  text = report.report(report.find_runs(str(root), []))
  lines = text.splitlines()
  header = next(l for l in lines if l.startswith('| run |'))
  assert all(n in header for n in trainers['uniform'].names)
  for name in trainers:
    assert any(l.startswith(f'| {name} |') for l in lines)
  assert '**' in text  # the best run per domain is marked
