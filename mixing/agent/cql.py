"""Offline training of the agent: behaviour cloning, then conservative Q-learning (CQL).

1. Behaviour cloning (BC) warm start: the policy imitates the actions of the best trajectories
   (`select_best`, the top `bc_fraction` by return), minimizing KL(a_data || pi(s)) (`bc_loss`).
2. CQL for continuous actions (Kumar et al. 2020), Q and policy updated together in one jitted step:
     target  = c * r + gamma * (1 - done) * Q_target(s', pi(s'))           (c: reward_scale)
     Q loss  = mean (Q(s, a) - target)^2
               + alpha_cql * mean max(p(s), -cql_gap),
     p(s)    = logsumexp_m Q(s, a_m) - log M - Q(s, a)                      (the CQL penalty)
   with M = num_sampled_actions actions a_m per state: half from a uniform Dirichlet on the real
   domains, half perturbations softmax(log pi(s) + perturb_scale * N(0, 1)) of the policy's. The
   penalty pushes Q down on those and up on the data's actions, so the policy is not drawn to
   actions the data never tried. It stops pushing a state once the data's Q exceeds the sampled
   actions' soft maximum by cql_gap (like CQL-Lagrange's threshold: on a small dataset the plain
   penalty drives Q of unseen actions down without bound and destabilizes the TD fit; cql_gap=None
   gives the plain penalty). Q_target follows Q by Polyak averaging (tau_polyak).
     policy loss = -mean Q(s, pi(s)) / mean |Q(s, pi(s))| + bc_weight * KL(a_data || pi(s))
   (TD3+BC's normalization: the Q term is scale-free, so bc_weight means the same for any reward.)

Hyperparameters (`CQLConfig`, defaults in brackets): gamma [0.9] (trajectories are short,
K ~ 10-20), alpha_cql [1.0], cql_gap [3.0, in units of the scaled reward], tau_polyak [0.01],
lr [3e-4] (Adam for both networks, gradients clipped to global norm grad_clip [1.0]),
num_sampled_actions [8], perturb_scale [1.0], bc_weight [0.1], bc_fraction [0.25], batch_size [64],
reward_scale [0: 1 / the std of the dataset's rewards, so Q is O(1)], log_every [50],
checkpoint_every [500] steps. The jitted steps `bc_step` and `train_step` are specialized only on
the networks, lr, grad_clip and num_sampled_actions (`StepConfig`); the other hyperparameters are
traced (`CQLConfig.hyperparams`), so changing them does not recompile.

`train` runs bc_steps of BC then `steps` of CQL, checkpointing (orbax) every checkpoint_every steps
into checkpoint_dir and resuming from its latest checkpoint. A checkpoint holds the networks, both
optimizers, the history and both minibatch streams (their RNG state and position), and each CQL
step's key is folded from (seed, step), so a run killed and resumed is bit-identical to an unbroken
one.
"""

import dataclasses
import functools
import json
import math
import os
from typing import Callable, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixing import checkpoint as checkpoint_lib
from mixing.agent import dataset as dataset_lib
from mixing.agent import policy as policy_lib


@dataclasses.dataclass(frozen=True)
class CQLConfig:
  """BC and CQL hyperparameters (the module docstring gives each one's meaning)."""
  gamma: float = 0.9
  alpha_cql: float = 1.0
  cql_gap: float | None = 3.0
  tau_polyak: float = 0.01
  lr: float = 3e-4
  grad_clip: float = 1.0
  num_sampled_actions: int = 8
  perturb_scale: float = 1.0
  bc_weight: float = 0.1
  bc_fraction: float = 0.25
  batch_size: int = 64
  reward_scale: float = 0.0
  log_every: int = 50
  checkpoint_every: int = 500

  def __post_init__(self):
    checks = {'gamma': 0 <= self.gamma < 1, 'alpha_cql': self.alpha_cql >= 0,
              'cql_gap': self.cql_gap is None or self.cql_gap >= 0,
              'tau_polyak': 0 < self.tau_polyak <= 1, 'lr': self.lr > 0,
              'grad_clip': self.grad_clip > 0,
              'num_sampled_actions': self.num_sampled_actions >= 2,
              'perturb_scale': self.perturb_scale >= 0, 'bc_weight': self.bc_weight >= 0,
              'bc_fraction': 0 < self.bc_fraction <= 1, 'batch_size': self.batch_size >= 1,
              'reward_scale': self.reward_scale >= 0, 'log_every': self.log_every >= 1,
              'checkpoint_every': self.checkpoint_every >= 1}
    for name, ok in checks.items():
      if not ok:
        raise ValueError(f'cql.{name}: out of range, got {getattr(self, name)}')

  def step_config(self) -> 'StepConfig':
    return StepConfig(self.lr, self.grad_clip, self.num_sampled_actions)

  def hyperparams(self, reward_scale: float) -> dict:
    """The step's traced hyperparameters: changing them does not recompile it."""
    hp = {name: getattr(self, name) for name in DYNAMIC}
    hp['cql_gap'] = NO_GAP if self.cql_gap is None else self.cql_gap
    return {k: jnp.float32(v) for k, v in {**hp, 'reward_scale': reward_scale}.items()}


DYNAMIC = ('gamma', 'alpha_cql', 'tau_polyak', 'perturb_scale', 'bc_weight')
NO_GAP = 1e9  # cql_gap=None: the penalty never stops


@dataclasses.dataclass(frozen=True)
class StepConfig:
  """What the compiled steps are specialized on (the other hyperparameters are traced)."""
  lr: float
  grad_clip: float
  num_sampled_actions: int


class CQLState(NamedTuple):
  step: jax.Array
  policy: nnx.State
  q: nnx.State
  q_target: nnx.State
  policy_opt: optax.OptState
  q_opt: optax.OptState


def optimizer(config: CQLConfig | StepConfig) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.lr))


def init_state(policy: policy_lib.Policy, q: policy_lib.QNetwork, config: CQLConfig):
  """((policy graphdef, q graphdef), CQLState) from freshly built networks."""
  policy_def, policy_params = nnx.split(policy)
  q_def, q_params = nnx.split(q)
  tx = optimizer(config)
  state = CQLState(jnp.zeros((), jnp.int32), policy_params, q_params,
                   jax.tree.map(jnp.copy, q_params), tx.init(policy_params), tx.init(q_params))
  return (policy_def, q_def), state


def select_best(dataset: dataset_lib.Dataset, fraction: float) -> dataset_lib.Dataset:
  """The top `fraction` of trajectories by return (at least one) within each setting: trajectories
  with the same domains and roles (returns of different settings are not on one scale)."""
  if not 0 < fraction <= 1:
    raise ValueError(f'bc_fraction: must be in (0, 1], got {fraction}')
  settings = {}
  for t in range(dataset.num_trajectories):
    key = (tuple(dataset.names_TxD[t]), tuple(dataset.roles_TxD[t]))
    settings.setdefault(key, []).append(t)
  keep = []
  for members in settings.values():
    t_M = np.array(members)
    count = max(1, math.ceil(fraction * len(t_M)))
    keep.extend(t_M[np.argsort(-dataset.returns_T[t_M], kind='stable')][:count])
  return dataset.subset(np.array(keep))


def kl_B(action_BxD, weights_BxD, mask_BxD):
  """KL(action || weights) per row over the real domains (actions renormalized on them)."""
  a_BxD = action_BxD * mask_BxD
  a_BxD = a_BxD / jnp.maximum(a_BxD.sum(-1, keepdims=True), 1e-12)
  log_ratio_BxD = (jnp.log(jnp.where(a_BxD > 0, a_BxD, 1.0)) -
                   jnp.log(jnp.where(mask_BxD > 0, weights_BxD, 1.0)))
  return jnp.sum(jnp.where(a_BxD > 0, a_BxD * log_ratio_BxD, 0.0), axis=-1)


def bc_loss(policy: policy_lib.Policy, batch) -> jax.Array:
  """Mean KL(a_data || pi(s)): 0 when the policy reproduces the data's actions."""
  w_BxD = policy(batch['feats_BxDxF'], batch['global_BxG'], batch['mask_BxD'])
  return kl_B(batch['action_BxD'], w_BxD, batch['mask_BxD']).mean()


def sample_actions(key, pi_BxD, mask_BxD, num: int, perturb_scale: float):
  """B x M x D mixtures: num // 2 uniform Dirichlet, the rest perturbations of pi (module doc)."""
  b, d = mask_BxD.shape
  num_uniform = num // 2
  key_u, key_p = jax.random.split(key)
  e_BxMxD = jax.random.exponential(key_u, (b, num_uniform, d)) * mask_BxD[:, None]
  uniform_BxMxD = e_BxMxD / jnp.maximum(e_BxMxD.sum(-1, keepdims=True), 1e-12)
  noise_BxMxD = perturb_scale * jax.random.normal(key_p, (b, num - num_uniform, d))
  log_pi_BxD = jnp.log(jnp.where(mask_BxD > 0, pi_BxD, 1.0))
  logits_BxMxD = jnp.where(mask_BxD[:, None] > 0, log_pi_BxD[:, None] + noise_BxMxD,
                           policy_lib.NEG_INF)
  perturbed_BxMxD = jax.nn.softmax(logits_BxMxD, axis=-1) * mask_BxD[:, None]
  return jnp.concatenate([uniform_BxMxD, perturbed_BxMxD], axis=1)


def q_of_samples(q: policy_lib.QNetwork, feats_BxDxF, global_BxG, action_BxMxD, mask_BxD):
  """Q(s, a_m) for M actions per state, B x M."""
  b, m, d = action_BxMxD.shape
  rep = lambda x: jnp.repeat(x, m, axis=0)
  q_N = q(rep(feats_BxDxF), rep(global_BxG), action_BxMxD.reshape(b * m, d), rep(mask_BxD))
  return q_N.reshape(b, m)


def q_loss(q_params, q_def, policy: policy_lib.Policy, q_target: policy_lib.QNetwork, batch, key,
           hp: dict, num_sampled_actions: int):
  """TD error + alpha_cql * CQL penalty; (loss, metrics). Only q_params is differentiated.

  hp holds the traced hyperparameters (CQLConfig.hyperparams): gamma, alpha_cql, cql_gap,
  perturb_scale, reward_scale (and the policy's).
  """
  q = nnx.merge(q_def, q_params)
  feats, glob, mask = batch['feats_BxDxF'], batch['global_BxG'], batch['mask_BxD']
  q_data_B = q(feats, glob, batch['action_BxD'], mask)
  next_pi_BxD = policy(batch['next_feats_BxDxF'], batch['next_global_BxG'], mask)
  q_next_B = q_target(batch['next_feats_BxDxF'], batch['next_global_BxG'], next_pi_BxD, mask)
  target_B = jax.lax.stop_gradient(
      hp['reward_scale'] * batch['reward_B'] + hp['gamma'] * (1.0 - batch['done_B']) * q_next_B)
  td = jnp.mean((q_data_B - target_B) ** 2)
  pi_BxD = jax.lax.stop_gradient(policy(feats, glob, mask))
  samples_BxMxD = sample_actions(key, pi_BxD, mask, num_sampled_actions, hp['perturb_scale'])
  q_samples_BxM = q_of_samples(q, feats, glob, samples_BxMxD, mask)
  lse_B = jax.nn.logsumexp(q_samples_BxM, axis=1) - jnp.log(num_sampled_actions)
  penalty_B = lse_B - q_data_B
  penalty = jnp.mean(penalty_B)
  loss = td + hp['alpha_cql'] * jnp.mean(jnp.maximum(penalty_B, -hp['cql_gap']))
  return loss, {'q_loss': loss, 'td_loss': td, 'cql_penalty': penalty,
                'mean_q': q_data_B.mean(), 'mean_q_sampled': q_samples_BxM.mean()}


def policy_loss(policy_params, policy_def, q: policy_lib.QNetwork, batch, hp: dict):
  """-Q(s, pi(s)) / mean |Q| + bc_weight * KL(a_data || pi(s)); (loss, metrics)."""
  policy = nnx.merge(policy_def, policy_params)
  feats, glob, mask = batch['feats_BxDxF'], batch['global_BxG'], batch['mask_BxD']
  pi_BxD = policy(feats, glob, mask)
  q_pi_B = q(feats, glob, pi_BxD, mask)
  scale = jax.lax.stop_gradient(jnp.mean(jnp.abs(q_pi_B))) + 1e-6
  bc = kl_B(batch['action_BxD'], pi_BxD, mask).mean()
  loss = -jnp.mean(q_pi_B) / scale + hp['bc_weight'] * bc
  return loss, {'policy_loss': loss, 'bc_loss': bc, 'mean_q_pi': q_pi_B.mean()}


@functools.partial(jax.jit, static_argnames=('graphdefs', 'step_config'))
def bc_step(state: CQLState, batch, *, graphdefs, step_config: StepConfig):
  """One behaviour-cloning update of the policy."""
  policy_def, _ = graphdefs
  loss_fn = lambda params: bc_loss(nnx.merge(policy_def, params), batch)
  loss, grads = jax.value_and_grad(loss_fn)(state.policy)
  updates, policy_opt = optimizer(step_config).update(grads, state.policy_opt, state.policy)
  state = state._replace(step=state.step + 1, policy=optax.apply_updates(state.policy, updates),
                         policy_opt=policy_opt)
  return state, {'bc_loss': loss}


@functools.partial(jax.jit, static_argnames=('graphdefs', 'step_config'))
def train_step(state: CQLState, batch, key, hp: dict, *, graphdefs, step_config: StepConfig):
  """One CQL update of Q (then its Polyak target) and of the policy, from the same batch."""
  policy_def, q_def = graphdefs
  tx = optimizer(step_config)
  policy = nnx.merge(policy_def, state.policy)
  q_target = nnx.merge(q_def, state.q_target)
  (_, q_metrics), q_grads = jax.value_and_grad(q_loss, has_aux=True)(
      state.q, q_def, policy, q_target, batch, key, hp, step_config.num_sampled_actions)
  q_updates, q_opt = tx.update(q_grads, state.q_opt, state.q)
  (_, pi_metrics), pi_grads = jax.value_and_grad(policy_loss, has_aux=True)(
      state.policy, policy_def, nnx.merge(q_def, state.q), batch, hp)
  pi_updates, policy_opt = tx.update(pi_grads, state.policy_opt, state.policy)
  q_params = optax.apply_updates(state.q, q_updates)
  q_target_params = optax.incremental_update(q_params, state.q_target, hp['tau_polyak'])
  state = CQLState(state.step + 1, optax.apply_updates(state.policy, pi_updates), q_params,
                   q_target_params, policy_opt, q_opt)
  return state, {**q_metrics, **pi_metrics}


def _reward_scale(dataset: dataset_lib.Dataset, config: CQLConfig) -> float:
  if config.reward_scale > 0:
    return float(config.reward_scale)
  std = float(np.std(dataset.reward_N))
  return 1.0 / std if std > 1e-12 else 1.0


def _check_architecture(checkpoint_dir: str, architecture: dict):
  """Records the architecture in checkpoint_dir; ValueError if it holds another's checkpoints.

  (Restoring another architecture's checkpoint would fail and be set aside as corrupt.)
  """
  path = os.path.join(checkpoint_dir, 'architecture.json')
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved != architecture:
      raise ValueError(f"checkpoint_dir: '{checkpoint_dir}' holds checkpoints of the architecture "
                       f'{saved}, not {architecture}')
    return
  os.makedirs(checkpoint_dir, exist_ok=True)
  with open(path + '.tmp', 'w') as f:
    json.dump(architecture, f)
  os.replace(path + '.tmp', path)


def train(dataset: dataset_lib.Dataset, steps: int, bc_steps: int, seed: int,
          log_fn: Callable[[int, dict], None] | None = None, checkpoint_dir: str | None = None,
          config: CQLConfig = CQLConfig(), policy_config: policy_lib.PolicyConfig | None = None,
          start_fn: Callable[[int], None] | None = None):
  """BC for bc_steps, then CQL for steps; returns (policy, q, history).

  history is a list of {'step', 'phase' ('bc' or 'cql'), metric: value} every log_every steps (and
  at the end); log_fn(step, record) is called with each. Metrics: bc_loss; in the CQL phase also
  q_loss, td_loss, cql_penalty, mean_q (data actions), mean_q_sampled, policy_loss, mean_q_pi.
  start_fn(step) is called once before training, with the step it starts from (0, or the restored
  checkpoint's: history then holds the records up to it, e.g. to keep only those of a metrics file).
  A policy_config (default: PolicyConfig's, sized to the dataset's features) sets the architecture.
  """
  if steps < 0 or bc_steps < 0:
    raise ValueError(f'steps: must be >= 0, got steps={steps}, bc_steps={bc_steps}')
  f, g = dataset.feats_NxDxF.shape[2], dataset.global_NxG.shape[1]
  policy_config = policy_config or policy_lib.PolicyConfig(num_features=f, num_global=g)
  if (policy_config.num_features, policy_config.num_global) != (f, g):
    raise ValueError(f'policy_config: expects {policy_config.num_features} domain and '
                     f'{policy_config.num_global} global features, the dataset has {f} and {g}')
  if checkpoint_dir:
    _check_architecture(checkpoint_dir, policy_config.to_dict())
  graphdefs, state = init_state(policy_lib.Policy(policy_config, rngs=nnx.Rngs(seed)),
                                policy_lib.QNetwork(policy_config, rngs=nnx.Rngs(seed + 1)), config)
  reward_scale = _reward_scale(dataset, config)
  hp = config.hyperparams(reward_scale)
  history, start = [], 0
  sources = {'bc': select_best(dataset, config.bc_fraction), 'cql': dataset}
  stream = lambda name, step: sources[name].batches(config.batch_size,
                                                    [seed, step, list(sources).index(name)])
  streams = {name: stream(name, 0) for name in sources}
  checkpointer = None
  if checkpoint_dir:
    checkpointer = checkpoint_lib.Checkpointer(checkpoint_dir, keep=2)
    restored = checkpointer.restore_latest(checkpoint_lib.abstract_of(state))
    if restored is not None:
      start, state, meta = restored
      history = list(meta.get('history', []))
      for name in sources:
        if 'batches' in meta:
          streams[name].restore(meta['batches'][name])
        else:  # a checkpoint from before the streams were saved: fresh streams, seeded by the step
          streams[name] = stream(name, start)
  if start_fn:
    start_fn(start)
  statics = {'graphdefs': graphdefs, 'step_config': config.step_config()}
  key = jax.random.key(seed)
  total = bc_steps + steps
  try:
    for step in range(start, total):
      if step < bc_steps:
        phase, (state, metrics) = 'bc', bc_step(state, next(streams['bc']), **statics)
      else:
        phase, (state, metrics) = 'cql', train_step(state, next(streams['cql']),
                                                    jax.random.fold_in(key, step), hp, **statics)
      done = step + 1
      if done % config.log_every == 0 or done == total:
        record = {'step': done, 'phase': phase,
                  **{k: float(v) for k, v in jax.device_get(metrics).items()}}
        history.append(record)
        if log_fn:
          log_fn(done, record)
      if checkpointer and (done % config.checkpoint_every == 0 or done == total):
        checkpointer.save(done, state, {'history': history, 'reward_scale': reward_scale,
                                        'batches': {n: s.state() for n, s in streams.items()}})
  finally:
    if checkpointer:
      checkpointer.close()
  policy_def, q_def = graphdefs
  return nnx.merge(policy_def, state.policy), nnx.merge(q_def, state.q), history
