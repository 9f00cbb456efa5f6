"""Grouped-query attention: models/transformer.py, models/decode.py, models/presets.py."""

import dataclasses
import json
import os
import subprocess
import sys

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import decode
from models import presets
from models import transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mha_from_gqa(gqa: transformer.Transformer) -> transformer.Transformer:
  """A multi-head model computing what `gqa` does: each kv head repeated over its query group."""
  cfg = dataclasses.replace(gqa.cfg, num_kv_heads=0)
  mha = transformer.Transformer(cfg, rngs=nnx.Rngs(1))
  pure = nnx.to_pure_dict(nnx.state(gqa, nnx.Param))
  group = cfg.num_heads // gqa.cfg.kv_heads
  for block in pure['blocks'].values():
    attn = block['attn']
    q_DxHxK, kv_Dx2xGxK = attn.pop('q_DxHxK'), attn.pop('kv_Dx2xGxK')
    kv_Dx2xHxK = jnp.repeat(kv_Dx2xGxK, group, axis=2)  # head h reads kv head h // group
    attn['qkv_Dx3xHxK'] = jnp.concatenate([q_DxHxK[:, None], kv_Dx2xHxK], axis=1)
  state = nnx.state(mha, nnx.Param)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(mha, state)
  return mha


@pytest.mark.parametrize('num_kv_heads', [1, 2, 3])
def test_gqa_equals_mha_with_repeated_kv_heads(num_kv_heads):
  cfg = dataclasses.replace(transformer.tiny_gqa(), num_kv_heads=num_kv_heads)
  gqa = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  attn = gqa.blocks[0].attn
  assert attn.q_DxHxK.shape == (96, 6, 16)
  assert attn.kv_Dx2xGxK.shape == (96, 2, num_kv_heads, 16)
  assert not hasattr(attn, 'qkv_Dx3xHxK')
  mha = _mha_from_gqa(gqa)
  assert mha.blocks[0].attn.qkv_Dx3xHxK.shape == (96, 3, 6, 16)
  tokens_BxL = np.random.default_rng(0).integers(0, 259, (2, 24), dtype=np.int32)
  logits_gqa, logits_mha = gqa(tokens_BxL), mha(tokens_BxL)
  assert np.abs(np.asarray(logits_mha)).max() > 1e-2
  np.testing.assert_allclose(logits_gqa, logits_mha, rtol=1e-5, atol=1e-5)


def test_num_kv_heads_equal_to_num_heads_keeps_the_fused_kernel():
  cfg = transformer.tiny()
  explicit = dataclasses.replace(cfg, num_kv_heads=cfg.num_heads)
  assert not explicit.grouped and explicit.kv_heads == cfg.num_heads
  a = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  b = transformer.Transformer(explicit, rngs=nnx.Rngs(0))
  state_a, state_b = nnx.state(a, nnx.Param), nnx.state(b, nnx.Param)
  assert jax.tree.structure(state_a) == jax.tree.structure(state_b)
  for x, y in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    np.testing.assert_array_equal(x, y)
  assert a.blocks[0].attn.qkv_Dx3xHxK.shape == (64, 3, 4, 16)


def _forward_argmax_continuations(model, prompt_NxP, prompt_len_N, out_NxM):
  """The full forward's argmax at each generated position, fed the prompt then the output."""
  preds = []
  for prompt_P, length, out_M in zip(prompt_NxP, prompt_len_N, out_NxM):
    sequence = np.concatenate([prompt_P[:length], out_M])[None].astype(np.int32)
    logits = np.asarray(model(sequence))[0]
    preds.append(logits[length - 1:length - 1 + len(out_M)].argmax(-1))
  return np.stack(preds)


@pytest.mark.parametrize('preset', ['tiny', 'tiny_gqa'])
def test_greedy_decode_matches_forward_argmax(preset):
  model = transformer.Transformer(transformer.PRESETS[preset](), rngs=nnx.Rngs(3))
  graphdef, params = nnx.split(model)
  rng = np.random.default_rng(1)
  prompt_NxP = rng.integers(0, 256, (3, 7), dtype=np.int32)
  prompt_len_N = np.array([3, 7, 5], np.int32)
  out_NxM = np.asarray(decode.greedy_decode(graphdef, params, prompt_NxP, prompt_len_N, 6))
  assert out_NxM.shape == (3, 6)
  np.testing.assert_array_equal(
      out_NxM, _forward_argmax_continuations(model, prompt_NxP, prompt_len_N, out_NxM))


def test_decode_cache_holds_kv_heads():
  model = transformer.Transformer(transformer.tiny_gqa(), rngs=nnx.Rngs(0))
  cfg = model.cfg
  cache_NxTxGxK = jnp.zeros((2, 5, cfg.kv_heads, cfg.head_dim))
  x_Nx1xD = jnp.ones((2, 1, cfg.d_model))
  out_Nx1xD, k, v = decode._attend_step(  # pylint: disable=protected-access
      model.blocks[0].attn, x_Nx1xD, cache_NxTxGxK, cache_NxTxGxK, 0)
  assert out_Nx1xD.shape == (2, 1, cfg.d_model)
  assert k.shape == v.shape == (2, 5, 2, 16)
  assert np.abs(np.asarray(k[:, 0])).max() > 0 and not np.asarray(k[:, 1:]).any()


def test_tiny_gqa_param_count_and_flops():
  cfg = transformer.tiny_gqa()
  assert (cfg.d_model, cfg.num_layers, cfg.num_heads, cfg.kv_heads, cfg.head_dim) == (
      96, 3, 6, 2, 16)
  model = nnx.eval_shape(lambda: transformer.Transformer(cfg, rngs=nnx.Rngs(0)))
  d, f, v, g, k = cfg.d_model, cfg.d_ff, cfg.padded_vocab, cfg.kv_heads, cfg.head_dim
  attention = d * d + 2 * d * g * k + d * d  # q, k and v, out
  per_layer = attention + 3 * d * f + 2 * d
  expected = cfg.num_layers * per_layer + 2 * v * d + d
  assert transformer.param_count(model) == expected == 235_680
  # FLOPs: 6 x the matmul weights actually built (embeddings and norm scales aside).
  matmul = sum(int(np.prod(x.shape)) for path, x in jax.tree.leaves_with_path(
      nnx.state(model, nnx.Param)) if 'blocks' in str(path) and len(x.shape) > 1)
  assert matmul == cfg.num_layers * (attention + 3 * d * f)
  seq_len = 64
  assert transformer.flops_per_token(cfg, seq_len) == (
      6 * matmul + 6 * d * cfg.vocab_size + 12 * cfg.num_layers * d * seq_len)
  assert transformer.flops_per_token(cfg, seq_len) < transformer.flops_per_token(
      dataclasses.replace(cfg, num_kv_heads=0), seq_len)


def test_bad_num_kv_heads_is_a_value_error():
  for bad in (4, -1, 12):
    with pytest.raises(ValueError, match='model.num_kv_heads'):
      transformer.ModelConfig(d_model=96, num_heads=6, num_kv_heads=bad)
  config = presets.get_config('tiny')
  config.num_kv_heads = 3  # tiny has 4 heads
  with pytest.raises(ValueError, match='model.num_kv_heads: 3 key/value heads must divide'):
    presets.resolve(config)
  config = presets.get_config('tiny_gqa')
  config.num_heads = 3  # the preset's 2 kv heads do not divide 3
  with pytest.raises(ValueError, match='model.num_kv_heads'):
    presets.resolve(config)


def test_presets_num_kv_heads_field():
  config = presets.get_config('tiny_gqa')
  assert presets.model_config(config, 64) == transformer.tiny_gqa()
  config.num_kv_heads = 6  # back to multi-head attention
  assert not presets.model_config(config, 64).grouped
  config = presets.get_config('tiny')
  assert presets.model_config(config, 64).kv_heads == 4
  config.num_kv_heads = 1  # multi-query attention
  assert presets.model_config(config, 64).kv_heads == 1
  del config.num_kv_heads  # a config saved before the field existed
  assert presets.model_config(config, 64) == transformer.tiny()


_MESH_CHILD = r'''
import json
from flax import nnx
import jax
import numpy as np
from experiments.training import step as step_lib
from models import sharding as sharding_lib
from models import transformer

assert len(jax.devices()) == 8
tokens = np.random.default_rng(0).integers(0, 259, (4, 17), dtype=np.int32)
batch = {'inputs_BxL': tokens[:, :-1], 'targets_BxL': tokens[:, 1:],
         'mask_BxL': np.ones((4, 16), np.float32), 'domain_B': np.array([0, 2, 1, 0], np.int32)}
tx = step_lib.make_optimizer(3e-3, warmup_steps=0, total_steps=10)
out = {}
for data, model in ((1, 1), (4, 2), (2, 4)):
  net = transformer.Transformer(transformer.tiny_gqa(), rngs=nnx.Rngs(0))
  graphdef, state = step_lib.init_train_state(net, tx)
  mesh = sharding_lib.make_mesh(data, model)
  shardings = sharding_lib.state_shardings(state, mesh)
  attn = shardings.params['blocks'][0]['attn']
  specs = [tuple(attn[name].get_value().spec) for name in ('q_DxHxK', 'kv_Dx2xGxK')]
  state = jax.device_put(state, shardings)
  train_step = step_lib.jit_train_step(mesh, graphdef, shardings, tx, 3)
  state, metrics = train_step(state, batch)
  out[f'{data}x{model}'] = {
      'loss': float(metrics['loss']), 'specs': specs,
      'params': [np.asarray(x).ravel()[:64].tolist() for x in jax.tree.leaves(state.params)]}
print(json.dumps(out))
'''


def test_one_train_step_on_model_parallel_meshes():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=8')
  proc = subprocess.run([sys.executable, '-c', _MESH_CHILD], env=env, cwd=ROOT,
                        capture_output=True, text=True)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  # model=2: 6 query heads and 2 kv heads split with their groups; model=4 divides neither.
  assert out['4x2']['specs'] == [[None, 'model'], [None, None, 'model']]
  assert out['2x4']['specs'] == [[], []]
  assert out['1x1']['specs'] == out['4x2']['specs']  # a model axis of 1 divides everything
  assert np.isfinite(out['1x1']['loss'])
  for mesh in ('4x2', '2x4'):
    np.testing.assert_allclose(out[mesh]['loss'], out['1x1']['loss'], rtol=1e-5)
    for a, b in zip(out[mesh]['params'], out['1x1']['params']):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
