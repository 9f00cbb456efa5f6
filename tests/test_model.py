"""Tests for models/transformer.py, models/sharding.py, experiments/training/step.py."""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import AbstractMesh, PartitionSpec as P
import numpy as np
import optax
import pytest

from experiments.training import step as step_lib
from models import sharding as sharding_lib
from models import transformer

NUM_DOMAINS = 3


def make_batch(batch=4, seq_len=16, seed=0, domains=(0, 2, 2, 0)):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, 259, (batch, seq_len + 1), dtype=np.int32)
  mask = (rng.random((batch, seq_len)) < 0.8).astype(np.float32)
  return {'inputs_BxL': tokens[:, :-1], 'targets_BxL': tokens[:, 1:],
          'mask_BxL': mask, 'domain_B': np.asarray(domains, np.int32)}


@pytest.fixture(scope='module')
def model():
  return transformer.Transformer(transformer.tiny(), rngs=nnx.Rngs(0))


def direct_domain_losses(model, batch):
  """Per-domain mean ce computed example by example with numpy."""
  logits = np.asarray(model(batch['inputs_BxL']), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ce = -np.take_along_axis(logp, batch['targets_BxL'][..., None], -1)[..., 0]
  sums, counts = np.zeros(NUM_DOMAINS), np.zeros(NUM_DOMAINS)
  for b, d in enumerate(batch['domain_B']):
    sums[d] += (ce[b] * batch['mask_BxL'][b]).sum()
    counts[d] += batch['mask_BxL'][b].sum()
  return sums, counts


def test_output_shape_and_dtype(model):
  logits = model(jnp.zeros((2, 16), jnp.int32))
  assert logits.shape == (2, 16, 259)
  assert logits.dtype == jnp.float32
  assert model.cfg.padded_vocab % model.cfg.vocab_multiple == 0


def test_padded_vocab_is_not_in_softmax(model):
  # The padding rows exist as parameters but never reach the logits.
  assert model.unembed_DxV.shape[1] == model.cfg.padded_vocab > 259
  probs = jax.nn.softmax(model(jnp.ones((1, 4), jnp.int32)), axis=-1)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_causality(model):
  tokens = np.random.default_rng(1).integers(0, 256, (2, 16), dtype=np.int32)
  t = 9
  changed = tokens.copy()
  changed[:, t] = (changed[:, t] + 7) % 256
  logits, logits_changed = model(tokens), model(changed)
  np.testing.assert_allclose(logits[:, :t], logits_changed[:, :t], atol=1e-5)
  assert np.abs(logits[:, t:] - logits_changed[:, t:]).max() > 1e-3


def test_rope_positions_match_default():
  x = jax.random.normal(jax.random.key(0), (1, 6, 2, 8))
  full = transformer.rope(x, 10_000.0)
  at_3 = transformer.rope(x[:, 3:4], 10_000.0, jnp.array([3]))
  np.testing.assert_allclose(full[:, 3:4], at_3, atol=1e-6)
  # A rotation: norms of each head vector are preserved.
  np.testing.assert_allclose(jnp.linalg.norm(full, axis=-1),
                             jnp.linalg.norm(x, axis=-1), rtol=1e-5)


def test_per_domain_losses_match_direct(model):
  batch = make_batch()
  loss, aux = step_lib.loss_fn(model, batch, NUM_DOMAINS)
  sums, counts = direct_domain_losses(model, batch)
  np.testing.assert_allclose(aux['domain_loss_sum_D'], sums, rtol=1e-5)
  np.testing.assert_allclose(aux['domain_tokens_D'], counts)
  np.testing.assert_allclose(loss, sums.sum() / counts.sum(), rtol=1e-5)
  assert counts[1] == 0  # Domain 1 is absent from this batch.


def test_train_steps_reduce_loss_and_report_metrics():
  model = transformer.Transformer(transformer.tiny(), rngs=nnx.Rngs(1))
  tx = step_lib.make_optimizer(3e-3, warmup_steps=2, total_steps=30)
  graphdef, state = step_lib.init_train_state(model, tx)
  mesh = sharding_lib.make_mesh(1, 1)
  state_sharding = sharding_lib.state_shardings(state, mesh)
  train_step = step_lib.jit_train_step(mesh, graphdef, state_sharding, tx,
                                       NUM_DOMAINS)
  batch = make_batch()
  tokens_D = direct_domain_losses(model, batch)[1]  # Before donation.
  losses = []
  for _ in range(12):
    state, metrics = train_step(state, batch)
    losses.append(float(metrics['loss']))
  assert int(state.step) == 12
  assert losses[-1] < losses[0] - 1.0, losses
  assert metrics['domain_loss_D'].shape == (NUM_DOMAINS,)
  assert float(metrics['domain_loss_D'][1]) == 0.0  # Absent domain.
  np.testing.assert_allclose(metrics['domain_tokens_D'], tokens_D)
  assert np.isfinite(float(metrics['grad_norm']))
  # eval_step returns sums consistent with the training metrics' counts.
  sums = step_lib.eval_step(graphdef, state.params, batch, NUM_DOMAINS)
  np.testing.assert_allclose(sums['domain_tokens_D'],
                             metrics['domain_tokens_D'])


def test_optimizer_schedule_and_clipping():
  tx = step_lib.make_optimizer(1.0, warmup_steps=10, total_steps=100,
                               weight_decay=0.0, clip_norm=1e-3)
  params = {'w': jnp.ones((2, 2))}
  state = tx.init(params)
  updates, _ = tx.update({'w': jnp.full((2, 2), 100.0)}, state, params)
  # Step 0 of the warmup has learning rate 0.
  np.testing.assert_allclose(optax.tree.norm(updates), 0.0)


def test_flops_per_token_hand_count():
  cfg = transformer.ModelConfig(vocab_size=10, d_model=8, num_layers=2,
                                num_heads=2, d_ff=16)
  # Per layer: q, k, v, out 4 * 8*8 = 256; gate, up, down 3 * 8*16 = 384.
  matmul_params = 2 * (256 + 384)
  expected = 6 * matmul_params + 6 * 8 * 10 + 12 * 2 * 8 * 32
  assert transformer.flops_per_token(cfg, seq_len=32) == expected


def test_param_count(model):
  cfg = model.cfg
  d, f, v = cfg.d_model, cfg.d_ff, cfg.padded_vocab
  per_layer = 4 * d * d + 3 * d * f + 2 * d
  assert transformer.param_count(model) == (
      cfg.num_layers * per_layer + 2 * v * d + d)


def test_m13_is_about_13m_params():
  cfg = transformer.m13()
  abstract = nnx.eval_shape(lambda: transformer.Transformer(cfg,
                                                            rngs=nnx.Rngs(0)))
  assert 12e6 < transformer.param_count(abstract) < 14e6


EXPECTED_SPECS = {
    # (data=2, model=4): heads (4), mlp (128) and vocab (264) divide by 4.
    'embed_VxD': P('model'),
    'unembed_DxV': P(None, 'model'),
    'qkv_Dx3xHxK': P(None, None, 'model'),
    'out_HxKxD': P('model'),
    'gate_up_Dx2xF': P(None, None, 'model'),
    'down_FxD': P('model'),
    'scale': P(),
}


def _specs(model, mesh):
  params = nnx.state(model, nnx.Param)
  out = {}
  for path, var in jax.tree.leaves_with_path(
      params, is_leaf=lambda x: isinstance(x, nnx.Variable)):
    names = var.get_metadata()['out_sharding']
    out[path] = (path[-1].key, sharding_lib.logical_to_spec(
        names, var.shape, mesh))
  return out


def test_logical_axis_rules_give_expected_specs(model):
  mesh = AbstractMesh((2, 4), sharding_lib.MESH_AXES)
  specs = _specs(model, mesh)
  assert len(specs) == 6 * model.cfg.num_layers + 3
  for name, spec in specs.values():
    assert spec == EXPECTED_SPECS[name], (name, spec)
  # A dimension the mesh axis does not divide is replicated instead.
  mesh_8 = AbstractMesh((1, 8), sharding_lib.MESH_AXES)
  names = {name: spec for name, spec in _specs(model, mesh_8).values()}
  assert names['qkv_Dx3xHxK'] == P()  # 4 heads on 8 devices.
  assert names['gate_up_Dx2xF'] == P(None, None, 'model')  # 128 mlp units.


def test_state_shardings_cover_optimizer_state(model):
  mesh = sharding_lib.make_mesh(1, 1)
  tx = step_lib.make_optimizer(1e-3, 1, 10)
  _, state = step_lib.init_train_state(model, tx)
  shardings = sharding_lib.state_shardings(state, mesh)
  assert (jax.tree.structure(shardings) == jax.tree.structure(state))
  mu = shardings.opt_state[1][0].mu
  assert mu['embed_VxD'].get_value().spec == P('model')
  assert shardings.step.spec == P()
  assert sharding_lib.batch_sharding(mesh).spec == P('data')


def test_bf16_compute_keeps_float32_logits():
  cfg = dataclasses.replace(transformer.tiny(), dtype=jnp.bfloat16)
  model = transformer.Transformer(cfg, rngs=nnx.Rngs(0))
  assert model(jnp.zeros((1, 8), jnp.int32)).dtype == jnp.float32
