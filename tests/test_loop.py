"""The one loop's logging (every evaluation at its step, learning rate, gradient norm), presets that
take effect, and the one registry of mixers."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from configs import tiny
from experiments.recipes import runs
from experiments.training import metrics as metrics_lib
from experiments.training import state as state_lib
from experiments.training import runtime
from mixing import mixer as mixer_lib
from mixing import registry
from models import presets
from models import transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_evaluation_is_logged_at_its_step_with_lr_and_grad_norm(tmp_path):
  config = tiny.get_config()
  config.steps, config.eval_every, config.log_every = 45, 15, 10
  config.checkpoint_every, config.eval_items = 100, 0
  runs.make_trainer(config, str(tmp_path), quiet=True).run()
  rows = {r['step']: r for r in metrics_lib.read_jsonl(str(tmp_path / 'metrics.jsonl'))}
  evals = sorted(s for s, r in rows.items() if any(k.startswith('eval/') for k in r))
  assert evals == [15, 30, 45]
  trains = sorted(s for s, r in rows.items() if 'train/loss' in r)
  assert trains == [10, 20, 30, 40, 45]
  for step in trains:
    assert rows[step]['learning_rate'] > 0 and np.isfinite(rows[step]['grad_norm'])
  # Warm-up then cosine decay: the logged rate is the schedule's at the last update.
  lr = [rows[s]['learning_rate'] for s in trains]
  _, schedule = state_lib.optimizer(config)
  np.testing.assert_allclose(lr, [float(schedule(s - 1)) for s in trains], rtol=1e-6)


def test_preset_on_the_command_line_takes_effect(tmp_path):
  config = tiny.get_config()  # preset 'tiny', every field 0: the preset's
  assert presets.model_config(config.model, 64).d_model == transformer.tiny().d_model
  config.model.preset = 'quickstart'
  assert presets.model_config(config.model, 64).d_model == transformer.quickstart().d_model
  config.model.d_model = 32  # a field set explicitly wins over the preset
  resolved = presets.model_config(config.model, 64)
  assert resolved.d_model == 32 and resolved.d_ff == transformer.quickstart().d_ff
  config.model.preset = 'nope'
  with pytest.raises(ValueError, match="model.preset: unknown 'nope'"):
    presets.model_config(config.model, 64)
  # Through the CLI: the built model has the chosen preset's width.
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.train', '--config=configs/quickstart.py',
       f'--workdir={tmp_path / "run"}', '--config.model.preset=tiny', '--config.steps=1',
       '--config.eval_items=0', '--config.eval_batches=1'],
      cwd=ROOT, env=env, capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-2000:]
  saved = ml_collections.ConfigDict(json.loads((tmp_path / 'run' / 'config.json').read_text()))
  assert saved.model.preset == 'tiny'
  like = state_lib.abstract_train_state(saved, runtime.make_mesh(saved))
  shapes = {x.shape for x in jax.tree.leaves(like.params)}
  vocab = transformer.tiny().padded_vocab
  assert (vocab, transformer.tiny().d_model) in shapes  # the input embedding table
  assert (vocab, transformer.quickstart().d_model) not in shapes


def test_one_registry_knows_every_mixer_and_builds_static_ones():
  assert set(registry.names()) == {'static', 'uniform', 'proportional', 'temperature', 'odm',
                                   'doremi', 'regmix', 'agent', 'taskpgm'}
  config = tiny.get_config()
  context = registry.Context(['a', 'b'], np.array([1.0, 3.0]))
  config.mixer.name = 'static'
  mixer = registry.build(config, context)
  mixer.init([mixer_lib.DomainInfo('a', 10), mixer_lib.DomainInfo('b', 10)])
  np.testing.assert_allclose(mixer.weights_at(0), [0.25, 0.75])
  # Mixers that need trained models refuse without the pipelines' stages, naming the field.
  config.mixer.name = 'regmix'
  config.mixer.regmix.num_proxies = 0
  with pytest.raises(ValueError, match='mixer.name: regmix trains models before the run'):
    registry.build(config, context)
