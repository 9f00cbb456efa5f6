"""What a real model needs to train at scale, on 8 forced CPU devices: bf16 compute over float32
master weights, rematerialization, scanned layers, FSDP and gradient accumulation give the plain
float32 step's losses (to float32 rounding without bf16, to 2e-2 with it); the prefill decoder gives
the step-by-step decoder's tokens; validation names the field."""

import json
import os
import subprocess
import sys

from flax import nnx
import numpy as np
import pytest

from configs import tiny
from experiments.training import validate
from models import decode
from models import transformer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import json, sys
import jax, numpy as np
sys.path.insert(0, {root!r})
from configs import tiny
from experiments.training import runtime, state as state_lib, step as step_lib
from models import transformer

def config(**overrides):
  c = tiny.get_config()
  c.model.preset, c.batch_size, c.seq_len = 'tiny_gqa', 16, 32
  c.mesh.model = 2
  c.optimizer.warmup_steps = 1
  for dotted, value in overrides.items():
    node, (*path, last) = c, dotted.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return c

rng = np.random.default_rng(0)
batch = {{'inputs_BxL': rng.integers(0, 259, (16, 32)).astype(np.int32),
          'targets_BxL': rng.integers(0, 259, (16, 32)).astype(np.int32),
          'mask_BxL': (rng.random((16, 32)) > 0.2).astype(np.float32),
          'domain_B': rng.integers(0, 3, 16).astype(np.int32)}}
plain_params = None

def losses(c):
  global plain_params
  mesh = runtime.make_mesh(c)
  like = state_lib.abstract_train_state(c, mesh).params
  init = None if plain_params is None else transformer.relayout(plain_params, like)
  built = state_lib.build_train_state(c, mesh, init_params=init)
  if plain_params is None:
    plain_params = jax.tree.map(np.asarray, built.state.params)
  fn = step_lib.jit_train_step(mesh, built.graphdef, built.sharding, built.tx, 3, c.microbatches)
  state, out = built.state, []
  for _ in range(4):
    state, m = fn(state, runtime.to_global(mesh, batch))
    out.append(float(m['loss']))
  q = state.params['blocks']['attn']['q_DxHxK'] if c.model.scan_layers else (
      state.params['blocks'][0]['attn']['q_DxHxK'])
  return {{'loss': out, 'spec': str(q.sharding.spec), 'devices': len(q.sharding.device_set),
          'shard': list(q.addressable_shards[0].data.shape)}}

scaled = {{'model.remat': 'full', 'model.scan_layers': True, 'mesh.fsdp': True, 'microbatches': 2}}
print(json.dumps({{'plain': losses(config()), 'f32': losses(config(**scaled)),
                  'bf16': losses(config(**scaled, **{{'model.dtype': 'bfloat16'}}))}}))
'''


def test_bf16_remat_scan_fsdp_microbatches_match_the_plain_step():
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=8', JAX_PLATFORMS='cpu')
  out = subprocess.run([sys.executable, '-c', SCRIPT.format(root=ROOT)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  plain, f32, bf16 = (np.array(r[k]['loss']) for k in ('plain', 'f32', 'bf16'))
  assert plain[-1] < plain[0]  # it trains
  np.testing.assert_allclose(f32, plain, rtol=2e-5)
  np.testing.assert_allclose(bf16, plain, atol=2e-2)
  # Scanned layers lead with 'layers'; FSDP splits 'embed' (96) over data (4), heads over model (2).
  assert r['f32']['spec'] == "P(None, 'data', 'model')"
  assert r['f32']['devices'] == 8 and r['f32']['shard'] == [3, 24, 3, 16]
  assert r['plain']['shard'] == [96, 3, 16]


@pytest.mark.parametrize('preset,scan', [('tiny', False), ('tiny_gqa', True)])
def test_prefill_decoder_gives_the_stepwise_tokens(preset, scan):
  import dataclasses  # pylint: disable=g-import-not-at-top
  cfg = dataclasses.replace(transformer.PRESETS[preset](), scan_layers=scan)
  graphdef, params = nnx.split(transformer.Transformer(cfg, rngs=nnx.Rngs(3)))
  rng = np.random.default_rng(1)
  prompt_NxP = rng.integers(0, 256, (5, 16), dtype=np.int32)
  prompt_len_N = np.array([3, 16, 5, 1, 9], np.int32)
  fast = np.asarray(decode.greedy_decode(graphdef, params, prompt_NxP, prompt_len_N, 8))
  slow = np.asarray(decode.greedy_decode_stepwise(graphdef, params, prompt_NxP, prompt_len_N, 8))
  np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize('field,value,message', [
    ('model.dtype', 'float16', 'model.dtype: one of float32, bfloat16'),
    ('model.remat', 'some', 'model.remat: one of none, full, dots'),
    ('microbatches', 3, 'microbatches: must be >= 1 and split batch_size 8'),
])
def test_bad_scale_settings_name_the_field(field, value, message):
  config = tiny.get_config()
  node, (*path, last) = config, field.split('.')
  for part in path:
    node = node[part]
  node[last] = value
  with pytest.raises(ValueError, match=message):
    validate.check_run(config)
