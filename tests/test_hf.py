"""Hugging Face checkpoints: each family's logits match `transformers`' (fixtures made by
tools/make_hf_fixtures.py), export reproduces the files' tensors, loading goes into shards on 8
devices, and init_from='hf:DIR' trains, exports and starts the continual setting's base model."""

import json
import os
import shutil
import subprocess
import sys

from flax import nnx
import numpy as np
import pytest
from safetensors import safe_open

from configs import tiny
from experiments.recipes import continual
from experiments.recipes import hf_export
from experiments.recipes import runs
from experiments.training import metrics as metrics_lib
from experiments.training import workdir as workdir_lib
from mixing.data import bpe
from mixing.data import domains as domains_lib
from models import hf
from models import transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures', 'hf')
FAMILIES = ('llama2', 'llama3', 'qwen2', 'mistral', 'smollm')


def _load(folder, max_len=64):
  cfg = hf.model_config(hf.read_config(folder), max_len)
  graphdef, abstract = nnx.split(nnx.eval_shape(
      lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0))))
  return cfg, graphdef, hf.load_params(folder, cfg, abstract)


def _tensors(folder) -> dict[str, np.ndarray]:
  out = {}
  for file in sorted(os.listdir(folder)):
    if file.endswith('.safetensors'):
      with safe_open(os.path.join(folder, file), framework='numpy') as f:
        out.update({name: f.get_tensor(name) for name in f.keys()})
  return out


@pytest.mark.parametrize('family', FAMILIES)
def test_logits_match_transformers(family):
  folder = os.path.join(FIXTURES, family)
  cfg, graphdef, params = _load(folder)
  logits = np.asarray(nnx.merge(graphdef, params)(np.load(os.path.join(folder, 'inputs.npy'))))
  reference = np.load(os.path.join(folder, 'logits.npy'))
  assert logits.shape == reference.shape
  assert np.abs(logits - reference).max() <= 1e-4
  expected = {'llama2': (False, False, False, ()), 'qwen2': (True, True, True, ()),
              'llama3': (True, False, False, (8.0, 1.0, 4.0, 16.0)),
              'mistral': (True, False, False, ()), 'smollm': (True, False, True, ())}[family]
  assert (cfg.grouped, cfg.qkv_bias, cfg.tie_embeddings, cfg.rope_scaling) == expected


@pytest.mark.parametrize('family', ('llama3', 'qwen2'))
def test_export_reproduces_the_files_tensors(family, tmp_path):
  folder = os.path.join(FIXTURES, family)
  cfg, _, params = _load(folder)
  files = hf.export(params, cfg, str(tmp_path), hf.read_config(folder), max_shard_bytes=150_000)
  assert hf.INDEX in files and len([f for f in files if f.endswith('.safetensors')]) > 1
  ours, theirs = _tensors(str(tmp_path)), _tensors(folder)
  assert sorted(ours) == sorted(theirs)
  for name, x in theirs.items():
    np.testing.assert_array_equal(ours[name], x, err_msg=name)
  assert hf.model_config(hf.read_config(str(tmp_path)), 64) == cfg
  cfg2, _, params2 = _load(str(tmp_path))  # and reads back through the index it wrote
  for a, b in zip(*(jax_leaves(p) for p in (params, params2))):
    np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


SHARDED = r'''
import os, sys, json
import jax, numpy as np
from flax import nnx
sys.path.insert(0, {root!r})
from models import hf, sharding, transformer
folder = {folder!r}
cfg = hf.model_config(hf.read_config(folder), 64)
mesh = sharding.make_mesh(2, 4)
abstract = nnx.state(nnx.eval_shape(lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0))))
shardings = sharding.state_shardings(abstract, mesh)
like = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
reads = []
original = hf._Files.read
def counting(self, name, *index):
  out = original(self, name, *index)
  reads.append((name, out.size))
  return out
hf._Files.read = counting
params = hf.load_params(folder, cfg, like)
embed = params['embed_VxD']
graphdef = nnx.graphdef(nnx.eval_shape(lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0))))
logits = np.asarray(jax.jit(lambda p, t: nnx.merge(graphdef, p)(t))(params, np.load(os.path.join(folder, 'inputs.npy'))))
print(json.dumps({{'devices': len(embed.sharding.device_set), 'shard': embed.addressable_shards[0].data.shape,
                  'full': embed.shape, 'largest_read': max(n for name, n in reads if name == 'model.embed_tokens.weight'),
                  'err': float(np.abs(logits - np.load(os.path.join(folder, 'logits.npy'))).max())}}))
'''


def test_loading_reads_each_shard_on_8_devices():
  folder = os.path.join(FIXTURES, 'llama3')
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8',
             JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', SHARDED.format(root=ROOT, folder=folder)], env=env,
                       capture_output=True, text=True, timeout=300, check=True)
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['devices'] == 8 and result['err'] <= 1e-4
  vp, d = result['full']
  assert result['shard'] == [vp // 4, d]  # vocabulary over the model axis of 4
  assert result['largest_read'] <= vp // 4 * d  # no device read more than its shard


@pytest.fixture
def hf_dir(tmp_path):
  """The SmolLM fixture with a trained BPE tokenizer of its vocabulary size beside it."""
  folder = str(tmp_path / 'smollm')
  shutil.copytree(os.path.join(FIXTURES, 'smollm'), folder)
  docs = domains_lib.builtin_domain('prose/plays', 0, domains_lib.BuiltinOptions(num_train=200))
  bpe.train([d.completion for d in docs.train], 320, folder)
  return folder


def _hf_config(folder, lr):
  config = tiny.get_config()
  config.init_from = f'hf:{folder}'
  config.domains = 'prose/plays:1,math/easy:1'
  config.steps, config.eval_every, config.log_every, config.eval_items = 20, 20, 10, 2
  config.optimizer.learning_rate = lr
  config.optimizer.weight_decay = 0.0
  return config


def test_init_from_hf_trains_from_the_checkpoint_and_exports_it(hf_dir, tmp_path):
  frozen = _hf_config(hf_dir, 0.0)  # learning rate 0: the run's model stays the checkpoint's
  frozen.steps = 2
  workdir_lib.claim(str(tmp_path / 'frozen'), frozen)  # as experiments.train does
  runs.make_trainer(frozen, str(tmp_path / 'frozen'), quiet=True).run()
  files = hf_export.export(str(tmp_path / 'frozen'), str(tmp_path / 'out'), 1 << 30)
  assert {'config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json'} <= set(files)
  ours, theirs = _tensors(str(tmp_path / 'out')), _tensors(hf_dir)
  assert sorted(ours) == sorted(theirs) and 'lm_head.weight' not in ours  # tied, as SmolLM
  for name, x in theirs.items():
    np.testing.assert_array_equal(ours[name], x, err_msg=name)
  config = _hf_config(hf_dir, 3e-3)
  trainer = runs.make_trainer(config, str(tmp_path / 'run'), quiet=True)
  assert trainer.domains[0].tokenizer.vocab_size == 320  # the checkpoint's tokenizer, by default
  trainer.run()
  rows = metrics_lib.read_jsonl(str(tmp_path / 'run' / 'metrics.jsonl'))
  losses = [r['train/loss'] for r in rows if 'train/loss' in r]
  assert losses[-1] < losses[0] and np.isfinite(rows[-1]['eval/math/easy/loss'])


def test_hf_checkpoint_is_the_continual_base_model(hf_dir, tmp_path):
  from configs import continual_math_small  # pylint: disable=g-import-not-at-top
  config = continual_math_small.get_config()
  config.init_from = f'hf:{hf_dir}'
  config.continual.base_root = str(tmp_path / 'bases')
  assert continual.base_dir(config) == continual.ensure_base(config) == f'hf:{hf_dir}'
  params = continual.base_params(config)
  _, _, reference = _load(hf_dir, config.seq_len)
  for a, b in zip(jax_leaves(params), jax_leaves(reference)):
    np.testing.assert_array_equal(a, b)
  assert not os.path.exists(config.continual.base_root)  # nothing trained
  assert continual.continual_config(config, quiet=True).init_from == f'hf:{hf_dir}'
  from configs import taskpgm  # pylint: disable=g-import-not-at-top
  tp = taskpgm.get_config()  # TaskPGM's base model (its single-task models start from it) too
  tp.init_from = f'hf:{hf_dir}'
  tp.taskpgm.base_root = str(tmp_path / 'tp_bases')
  for a, b in zip(jax_leaves(continual.base_params(tp, spec=tp.taskpgm)),
                  jax_leaves(_load(hf_dir, tp.seq_len)[2])):
    np.testing.assert_array_equal(a, b)


def test_bad_checkpoints_are_one_clear_error(tmp_path):
  with pytest.raises(ValueError, match='init_from: no Hugging Face config.json'):
    hf.read_config(str(tmp_path))
  gpt2 = {'model_type': 'gpt2', 'hidden_size': 64, 'num_attention_heads': 4}
  with pytest.raises(ValueError, match="hf config model_type: supported: llama, qwen2, mistral"):
    hf.model_config(gpt2, 64)
  config = dict(hf.read_config(os.path.join(FIXTURES, 'mistral')), sliding_window=32)
  with pytest.raises(ValueError, match='hf config sliding_window'):
    hf.model_config(config, 64)
  scaled = dict(hf.read_config(os.path.join(FIXTURES, 'llama2')),
                rope_parameters={'rope_type': 'yarn', 'rope_theta': 1e4, 'factor': 4.0})
  with pytest.raises(ValueError, match="hf config rope_type: only 'default' and 'llama3'"):
    hf.model_config(scaled, 64)
  out = subprocess.run([sys.executable, '-m', 'experiments.train', '--config=configs/tiny.py',
                        f'--workdir={tmp_path / "w"}', f'--config.init_from=hf:{tmp_path}/none'],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and out.stderr.strip().splitlines() == [
      f"error: init_from: no Hugging Face config.json in '{tmp_path}/none'"]
