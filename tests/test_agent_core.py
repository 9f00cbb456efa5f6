"""The Data Mixing Agent's core: features, networks, trajectory data, BC + CQL, save and deploy."""

import json
import os

from flax import nnx
import jax
import numpy as np
import pytest

from mixing import checkpoint as checkpoint_lib
from mixing import mixer as mixer_lib
from mixing.agent import cql
from mixing.agent import dataset as dataset_lib
from mixing.agent import deploy
from mixing.agent import features
from mixing.agent import policy as policy_lib

SMALL = policy_lib.PolicyConfig(d_model=32, num_layers=1, num_heads=2)
ROLES = {'web': 'source', 'code': 'source', 'math': 'target'}
BASE = {'eval/web/loss': 2.0, 'eval/code/loss': 1.0, 'eval/math/loss': 4.0,
        'eval/math/accuracy': 0.1}
INFOS = [mixer_lib.DomainInfo('web', 10**6), mixer_lib.DomainInfo('code', 10**5),
         mixer_lib.DomainInfo('math', 10**4)]


def _random_policy(config=policy_lib.PolicyConfig(), seed=0):
  policy = policy_lib.Policy(config, rngs=nnx.Rngs(seed))
  kernel = policy.head.kernel
  kernel[...] = jax.random.normal(jax.random.key(seed + 7), kernel.shape)  # not uniform
  return policy


@nnx.jit
def _weights(policy, feats, glob, mask=None):
  return policy(feats, glob, mask)


@nnx.jit
def _q(q, feats, glob, action, mask=None):
  return q(feats, glob, action, mask)


def _state(d, seed):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(d, features.F)).astype(np.float32),
          rng.normal(size=features.G).astype(np.float32))


def test_scores_and_features():
  s = features.scores({'eval/web/loss': 1.8, 'eval/code/loss': 1.1, 'eval/math/loss': 3.0,
                       'eval/math/accuracy': 0.3}, BASE, ROLES, balance=0.25)
  assert s['source'] == pytest.approx((0.1 - 0.1) / 2)
  assert s['target'] == pytest.approx(0.5 * (0.25 + 0.2))
  assert s['balanced'] == pytest.approx(0.75 * s['target'])
  with pytest.raises(ValueError, match='eval_metrics: eval/code/loss'):
    features.scores({'eval/web/loss': 1.0, 'eval/math/loss': 1.0}, BASE, ROLES)
  with pytest.raises(ValueError, match="roles: domain 'x'"):
    features.scores({}, BASE, {'x': 'other'})
  space = features.DomainSpace.build(['web', 'code', 'math'], ROLES, BASE, [1e6, 1e5, 1e4])
  state = features.AgentState.initial(space)
  feats, glob, state = features.observation_features(
      space, state, progress=0.0, weights_D=np.full(3, 1 / 3), train_loss_D=np.full(3, np.nan),
      eval_metrics={})
  assert feats.shape == (3, features.F) and glob.shape == (features.G,)
  np.testing.assert_allclose(feats[:, 0], 1.0)  # uniform weights -> 1
  np.testing.assert_allclose(feats[:, 1:5], 0.0)  # nothing measured yet: the base model's values
  np.testing.assert_allclose(feats[:, 5:7], [[1, 0], [1, 0], [0, 1]])
  np.testing.assert_allclose(feats[:, 10], [0, 0, 1])
  np.testing.assert_allclose(glob, 0.0)
  feats, glob, state = features.observation_features(
      space, state, progress=0.5, weights_D=[0.2, 0.2, 0.6], train_loss_D=[2.0, np.nan, 3.0],
      eval_metrics={'eval/web/loss': 2.2, 'eval/code/loss': 1.0, 'eval/math/loss': 3.0,
                    'eval/math/accuracy': 0.2})
  assert feats[2, 2] < 0 < feats[0, 2] and feats[1, 3] == 0  # code not drawn: last value kept
  assert glob[0] == 0.5 and glob[1] < 0 < glob[2] and glob[3] < 0 < glob[4]
  tree = checkpoint_lib.decode(json.loads(json.dumps(checkpoint_lib.encode(state.to_tree()))))
  assert features.AgentState.from_tree(tree).scores == pytest.approx(state.scores)
  assert features.reward({'source': 0, 'target': 0}, state.scores) == pytest.approx(
      0.5 * sum(state.scores.values()))


@pytest.mark.parametrize('d', [2, 5, 17])
def test_policy_is_permutation_equivariant_for_any_domain_count(d):
  config = policy_lib.PolicyConfig(floor_frac=0.2)
  policy = _random_policy(config)
  feats, glob = _state(d, d)
  w = np.asarray(_weights(policy, feats, glob))
  assert w.shape == (d,) and w.sum() == pytest.approx(1.0, abs=1e-5)
  assert w.min() >= 0.2 / d - 1e-7 and w.max() - w.min() > 1e-3
  perm = np.random.default_rng(d).permutation(d)
  np.testing.assert_allclose(_weights(policy, feats[perm], glob), w[perm], atol=1e-6)


def test_padded_batch_gives_the_unpadded_weights():
  policy = _random_policy()
  q = policy_lib.QNetwork(rngs=nnx.Rngs(1))
  states = [_state(d, d) for d in (2, 5, 17)]
  feats = np.zeros((3, 17, features.F), np.float32)
  mask = np.zeros((3, 17), np.float32)
  for i, (f, _) in enumerate(states):
    feats[i, :len(f)], mask[i, :len(f)] = f, 1.0
    feats[i, len(f):] = 123.0  # garbage on padding must not matter
  glob = np.stack([g for _, g in states])
  w = np.asarray(_weights(policy, feats, glob, mask))
  q_B = np.asarray(_q(q, feats, glob, w, mask))
  for i, (f, g) in enumerate(states):
    np.testing.assert_allclose(w[i, :len(f)], _weights(policy, f, g), atol=1e-6)
    assert np.all(w[i, len(f):] == 0)
    np.testing.assert_allclose(q_B[i], _q(q, f, g, w[i, :len(f)]), rtol=1e-5, atol=1e-5)


def test_q_network_is_permutation_invariant():
  q = policy_lib.QNetwork(rngs=nnx.Rngs(3))
  feats, glob = _state(6, 0)
  action = np.random.default_rng(1).dirichlet(np.ones(6)).astype(np.float32)
  perm = np.array([3, 0, 5, 1, 4, 2])
  assert float(_q(q, feats[perm], glob, action[perm])) == pytest.approx(
      float(_q(q, feats, glob, action)), abs=1e-5)


def _bandit(n=128, d=3, seed=0):
  """One state; actions near (0.8, .1, .1) earn 1, actions near (.1, .8, .1) earn 0."""
  rng = np.random.default_rng(seed)
  feats, glob = _state(d, 99)
  writer = dataset_lib.TrajectoryWriter()
  for i in range(n):
    centre = np.full(d, 0.1)
    centre[i % 2] = 0.8
    writer.add([f'd{j}' for j in range(d)], ['source'] * (d - 1) + ['target'],
               np.stack([feats, feats]), np.stack([glob, glob]),
               rng.dirichlet(centre * 50)[None], [1.0 - i % 2])
  return writer.dataset(), feats, glob


def test_cql_prefers_the_rewarded_action_and_is_conservative_out_of_distribution():
  data, feats, glob = _bandit()
  ood = np.random.default_rng(0).dirichlet(np.ones(3), 64)  # what the penalty samples
  probes = np.concatenate([[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]], data.action_NxD[:64], ood])
  n = len(probes)
  gaps = {}
  for alpha in (1.0, 0.0):
    config = cql.CQLConfig(alpha_cql=alpha, lr=1e-3, batch_size=32, log_every=25)
    policy, q, history = cql.train(data, steps=100, bc_steps=0, seed=0, config=config,
                                   policy_config=SMALL)
    q_N = np.asarray(_q(q, np.repeat(feats[None], n, 0), np.repeat(glob[None], n, 0),
                        probes.astype(np.float32)))
    gaps[alpha] = q_N[2:66].mean() - q_N[66:].mean()  # data actions minus OOD actions
    if alpha:
      assert q_N[0] > q_N[1] + 0.5  # Q(s, a_good) > Q(s, a_bad)
      w = np.asarray(_weights(policy, feats, glob))
      assert w.argmax() == 0 and w[0] > 0.5
      assert {'q_loss', 'cql_penalty', 'policy_loss', 'mean_q'} <= set(history[-1])
      assert gaps[alpha] > 0.5  # OOD actions are valued below the data's
  assert gaps[1.0] > gaps[0.0] + 0.5


def test_bc_reproduces_the_data_action_and_resumes_from_a_checkpoint(tmp_path):
  actions = np.array([[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
  writer = dataset_lib.TrajectoryWriter()
  for i in range(8):
    feats, glob = _state(3, i % 2)
    writer.add(['a', 'b', 'c'], ['source', 'source', 'target'], np.stack([feats] * 3),
               np.stack([glob] * 3), actions[[i % 2] * 2], [0.0, 0.0])
  data = writer.dataset()
  config = cql.CQLConfig(lr=3e-3, batch_size=16, bc_fraction=1.0, log_every=50,
                         checkpoint_every=100)
  ckpt = str(tmp_path / 'ckpt')
  _, _, first = cql.train(data, steps=0, bc_steps=100, seed=0, config=config,
                          policy_config=SMALL, checkpoint_dir=ckpt)
  logged = []
  policy, _, history = cql.train(data, steps=0, bc_steps=250, seed=0, config=config,
                                 policy_config=SMALL, checkpoint_dir=ckpt,
                                 log_fn=lambda step, record: logged.append(step))
  assert history[:2] == first and logged == [150, 200, 250]  # resumed at step 100
  for i in range(2):
    feats, glob = _state(3, i)
    np.testing.assert_allclose(policy(feats, glob), actions[i], atol=0.03)
  assert history[-1]['bc_loss'] < 0.01
  with pytest.raises(ValueError, match=f"checkpoint_dir: '{ckpt}' holds checkpoints of the"):
    cql.train(data, steps=0, bc_steps=300, seed=0, config=config, checkpoint_dir=ckpt)


def _observation(step, seed):
  rng = np.random.default_rng(seed)
  return mixer_lib.Observation(
      step=step, total_steps=100, tokens_seen=0, train_loss_D=rng.uniform(1, 4, 3),
      train_tokens_D=np.ones(3), weights_D=rng.dirichlet(np.ones(3)),
      eval_metrics={f'eval/{n}/loss': float(rng.uniform(1, 4)) for n in ROLES})


def _run(mixer, steps=3):
  state = mixer.init(INFOS)
  out = []
  for k in range(steps):
    state, w = mixer.update(state, _observation(10 * k, k))
    out.append(w)
  return state, np.stack(out)


def _training_leftovers(agent_dir):
  """What experiments/train_agent.py leaves beside the agent: CQL checkpoints and metrics."""
  checkpointer = checkpoint_lib.Checkpointer(str(agent_dir / 'checkpoints'), keep=1)
  checkpointer.save(5, {'x': np.zeros(2)}, {'history': []})
  checkpointer.close()
  (agent_dir / 'metrics.jsonl').write_text('{}\n')


def test_saved_agent_reloads_and_mixes_identically(tmp_path):
  policy = _random_policy(SMALL)
  _training_leftovers(tmp_path / 'agent')
  agent_dir = str(tmp_path / 'agent')
  deploy.save_agent(agent_dir, policy, {'balance': 0.3, 'note': 'test'})
  loaded, meta = deploy.load_agent(agent_dir)
  assert meta['balance'] == 0.3 and meta['note'] == 'test' and meta['policy'] == SMALL.to_dict()
  feats, glob = _state(3, 0)
  np.testing.assert_array_equal(policy(feats, glob), loaded(feats, glob))
  state, w = _run(deploy.AgentMixer(policy, ROLES, BASE, total_reweights=10, balance=0.3))
  state2, w2 = _run(deploy.load_mixer(agent_dir, ROLES, BASE, total_reweights=10))
  np.testing.assert_array_equal(w, w2)
  np.testing.assert_allclose(w.sum(1), 1.0)
  assert all(np.array_equal(state[k], state2[k]) for k in state) and int(state['updates']) == 3


def test_dropped_features_change_nothing_and_the_others_do(tmp_path):
  drop = ('log_size_rel', 'log_size', 'progress')
  config = policy_lib.PolicyConfig(d_model=32, num_layers=1, num_heads=2, drop_features=drop)
  policy = _random_policy(config)
  q = policy_lib.QNetwork(config, rngs=nnx.Rngs(3))
  feats, glob = _state(4, 1)
  action = np.full(4, 0.25, np.float32)
  other_feats, other_glob = feats.copy(), glob.copy()
  for name in drop[:2]:
    other_feats[:, features.DOMAIN_FEATURES.index(name)] += 5.0
  other_glob[features.GLOBAL_FEATURES.index('progress')] += 5.0
  np.testing.assert_array_equal(_weights(policy, feats, glob), _weights(policy, other_feats, other_glob))
  np.testing.assert_array_equal(_q(q, feats, glob, action), _q(q, other_feats, other_glob, action))
  kept = feats.copy()
  kept[:, features.DOMAIN_FEATURES.index('eval_loss')] += 5.0
  assert not np.allclose(_weights(policy, feats, glob), _weights(policy, kept, glob))
  assert not np.allclose(_q(q, feats, glob, action), _q(q, kept, glob, action))
  agent_dir = str(tmp_path / 'agent')
  deploy.save_agent(agent_dir, policy)
  loaded, meta = deploy.load_agent(agent_dir)
  assert loaded.config.drop_features == drop and meta['policy']['drop_features'] == list(drop)
  np.testing.assert_array_equal(policy(other_feats, other_glob), loaded(feats, glob))
  with pytest.raises(ValueError, match="policy.drop_features: unknown feature 'size'"):
    policy_lib.PolicyConfig(drop_features=('size',))


def test_agent_errors(tmp_path):
  policy = _random_policy(SMALL)
  policy.head.kernel[...] = policy.head.kernel[...] * np.nan
  mixer = deploy.AgentMixer(policy, ROLES, BASE, total_reweights=10)
  state = mixer.init(INFOS)
  with pytest.raises(ValueError, match='agent: policy produced non-finite weights at step 7'):
    mixer.update(state, _observation(7, 0))
  empty = tmp_path / 'empty'
  _training_leftovers(empty)
  for path in (empty, tmp_path / 'missing'):
    with pytest.raises(ValueError, match=f"agent_dir: no trained agent in '{path}'"):
      deploy.load_agent(str(path))
  with pytest.raises(ValueError, match='base_metrics: eval/code/loss must be a positive finite '
                     'number, got None'):
    deploy.AgentMixer(policy, ROLES, {'eval/web/loss': 1.0}, 10).init(INFOS)


def test_cloning_takes_the_best_of_each_setting():
  """Returns of different settings are not on one scale: the best fraction is taken per setting."""
  writer = dataset_lib.TrajectoryWriter()
  returns = {('a', 2): [0.1, 0.4, 0.2, 0.3], ('b', 3): [10.0, 20.0]}
  for (prefix, d), values in returns.items():
    for r in values:
      writer.add([f'{prefix}{j}' for j in range(d)], ['source'] * (d - 1) + ['target'],
                 np.zeros((3, d, features.F)), np.zeros((3, features.G)), np.full((2, d), 1 / d),
                 [r, 0.0])
  data = writer.dataset()
  best = cql.select_best(data, 0.5)
  np.testing.assert_allclose(sorted(best.returns_T), [0.3, 0.4, 20.0])
  alone = cql.select_best(data.subset(range(4)), 0.5)  # one setting: the top fraction, best first
  np.testing.assert_allclose(alone.returns_T, [0.4, 0.3])


def test_dataset_round_trip_and_domain_space_check(tmp_path):
  writer = dataset_lib.TrajectoryWriter()
  for t, d in enumerate((2, 4)):
    feats = np.random.default_rng(t).normal(size=(4, d, features.F))
    writer.add([f'x{j}' for j in range(d)], ['source'] * (d - 1) + ['target'], feats,
               np.zeros((4, features.G)), np.full((3, d), 1 / d), [0.1, 0.2, 0.3 * t])
  path = str(tmp_path / 'data')
  writer.save(path, {'feature_version': features.FEATURE_VERSION})
  writer.save(path, {'feature_version': features.FEATURE_VERSION})  # replacing is atomic too
  assert sorted(os.listdir(tmp_path)) == ['data']
  data = dataset_lib.load(path)
  assert len(data) == 6 and data.num_trajectories == 2 and data.max_domains == 4
  assert data.meta == {'feature_version': features.FEATURE_VERSION}
  np.testing.assert_allclose(data.returns_T, [0.3, 0.6])
  np.testing.assert_array_equal(data.done_N, [0, 0, 1, 0, 0, 1])
  np.testing.assert_array_equal(data.mask_NxD.sum(1), [2, 2, 2, 4, 4, 4])
  again = dataset_lib.TrajectoryWriter()
  again.add_dataset(data)
  for key, value in again.dataset().arrays().items():
    np.testing.assert_array_equal(value, getattr(data, key), err_msg=key)
  best = data.subset([1])
  assert best.domain_names(0) == ['x0', 'x1', 'x2', 'x3'] and len(best) == 3
  batch = next(data.batches(5, 0))
  assert batch['feats_BxDxF'].shape == (5, 4, features.F) and batch['mask_BxD'].shape == (5, 4)
  dataset_lib.check_domain_space(best, ['x0', 'x1', 'x2', 'x3'])
  with pytest.raises(ValueError, match=r"trajectories: domain space \['x0', 'x1'\] does not "
                     r"match the config \['x0', 'x1', 'x2'\]"):
    dataset_lib.check_domain_space(data, ['x0', 'x1', 'x2'])
  with pytest.raises(ValueError, match="dataset: no dataset directory at '/nonexistent'"):
    dataset_lib.load('/nonexistent')
  os.remove(os.path.join(path, 'config.json'))
  with pytest.raises(ValueError, match='dataset: missing .*config.json'):
    dataset_lib.load(path)
  with pytest.raises(ValueError, match=r'actions_KxD: expected shape \(1, 2\)'):
    writer.add(['a', 'b'], ['source', 'target'], np.zeros((2, 2, features.F)),
               np.zeros((2, features.G)), np.zeros((1, 3)), [0.0])


def _roles_state(n_source, n_target, seed):
  feats, glob = _state(n_source + n_target, seed)
  feats[:, features.DOMAIN_FEATURES.index('is_source')] = [1.0] * n_source + [0.0] * n_target
  feats[:, features.DOMAIN_FEATURES.index('is_target')] = [0.0] * n_source + [1.0] * n_target
  return feats, glob


def test_group_shares_make_logits_relative_to_their_group_size(tmp_path):
  config = policy_lib.PolicyConfig(d_model=32, num_layers=1, num_heads=2, floor_frac=0.2,
                                   group_shares=True, drop_features=('is_source', 'is_target'))
  untrained = policy_lib.Policy(config, rngs=nnx.Rngs(0))
  for n_source, n_target in ((7, 5), (4, 2), (1, 3)):  # equal logits: equal group shares
    feats, glob = _roles_state(n_source, n_target, 0)
    w = np.asarray(_weights(untrained, feats, glob))
    floor = 0.2 * n_target / (n_source + n_target)  # the floor is spread over every domain
    assert w[n_source:].sum() == pytest.approx(floor + 0.8 * 0.5, abs=1e-5)
    assert w.min() >= 0.2 / len(w) - 1e-7
  policy = _random_policy(config)
  plain = nnx.merge(nnx.graphdef(_random_policy(SMALL)), nnx.state(policy))  # same parameters
  feats, glob = _roles_state(5, 2, 3)
  n_D = np.array([5.0] * 5 + [2.0] * 2)
  logits, _ = policy.logits(feats, glob)
  soft = np.exp(np.asarray(logits) - np.log(n_D))
  expected = 0.2 / 7 + 0.8 * soft / soft.sum()
  np.testing.assert_allclose(_weights(policy, feats, glob), expected, atol=1e-6)
  assert not np.allclose(_weights(plain, feats, glob), expected, atol=1e-3)
  padded = np.full((1, 9, features.F), 123.0, np.float32)  # garbage roles on padding
  padded[0, :7] = feats
  mask = np.array([[1.0] * 7 + [0.0] * 2], np.float32)
  np.testing.assert_allclose(_weights(policy, padded, glob[None], mask)[0, :7], expected, atol=1e-6)
  agent_dir = str(tmp_path / 'agent')
  deploy.save_agent(agent_dir, policy)
  loaded, meta = deploy.load_agent(agent_dir)
  assert loaded.config.group_shares and meta['policy']['group_shares']
  np.testing.assert_allclose(loaded(feats, glob), expected, atol=1e-6)
  with pytest.raises(ValueError, match='policy.group_shares: needs the 11 features'):
    policy_lib.PolicyConfig(num_features=4, group_shares=True)
