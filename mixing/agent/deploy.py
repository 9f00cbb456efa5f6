"""A trained agent on disk, and the Mixer that runs it inside the train loop.

An agent directory is an orbax checkpoint (its newest step) of two items: `params`, the policy's
parameters, and `meta`, JSON holding the architecture (`policy`: PolicyConfig's fields, the floor
among them), `feature_version`, `balance` (the balanced score's source weight the agent was trained
for) and whatever else the caller adds (e.g. the collection config).

`AgentMixer` follows mixing/mixer.py: `init(domains)` returns the AgentState as a dict of numpy
arrays (checkpointed with the run), and `update(state, observation)` turns the Observation into
features (features.observation_features, progress = re-weighting steps done / total_reweights) and
returns the policy's weights for the next re-weighting step.
"""

import os
from typing import Mapping, Sequence

from flax import nnx
import jax
import numpy as np
import orbax.checkpoint as ocp

from mixing import checkpoint as checkpoint_lib
from mixing import mixer as mixer_lib
from mixing.agent import features
from mixing.agent import policy as policy_lib


def _manager(agent_dir: str, create: bool) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(os.path.abspath(agent_dir), options=ocp.CheckpointManagerOptions(
      max_to_keep=1, create=create))


def save_agent(agent_dir: str, policy: policy_lib.Policy, meta: Mapping | None = None) -> str:
  """Saves the policy and meta (plus architecture and feature version) as the newest agent."""
  meta = {'balance': 0.5, **dict(meta or {}), 'policy': policy.config.to_dict(),
          'feature_version': features.FEATURE_VERSION}
  features.check_balance(meta['balance'])
  _, params = nnx.split(policy)
  manager = _manager(agent_dir, create=True)
  try:
    latest = manager.latest_step()
    step = 0 if latest is None else latest + 1
    manager.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                               meta=ocp.args.JsonSave(checkpoint_lib.encode(meta))))
    manager.wait_until_finished()
  finally:
    manager.close()
  return os.path.abspath(agent_dir)


def load_agent(agent_dir: str) -> tuple[policy_lib.Policy, dict]:
  """(policy, meta) of the newest agent in agent_dir; ValueError if there is none."""
  if not os.path.isdir(agent_dir):
    raise ValueError(f"agent_dir: no trained agent in '{agent_dir}'")
  manager = _manager(agent_dir, create=False)
  try:
    step = manager.latest_step()
    if step is None:
      raise ValueError(f"agent_dir: no trained agent in '{agent_dir}'")
    meta = checkpoint_lib.decode(manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta'])
    if meta.get('feature_version') != features.FEATURE_VERSION:
      raise ValueError(f"agent_dir: '{agent_dir}' uses feature version "
                       f"{meta.get('feature_version')}, this code builds "
                       f'{features.FEATURE_VERSION}')
    graphdef, params = nnx.split(policy_lib.Policy(policy_lib.PolicyConfig(**meta['policy']),
                                                   rngs=nnx.Rngs(0)))
    abstract = checkpoint_lib.abstract_of(params)
    params = manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract)))['params']
  finally:
    manager.close()
  return nnx.merge(graphdef, params), meta


class AgentMixer:
  """The trained policy as an online Mixer (module docstring)."""

  def __init__(self, policy: policy_lib.Policy, roles: Mapping[str, str],
               base_metrics: Mapping[str, float], total_reweights: int, balance: float = 0.5):
    if int(total_reweights) < 1:
      raise ValueError(f'total_reweights: must be >= 1, got {total_reweights}')
    self.roles = dict(roles)
    self.base_metrics = dict(base_metrics)
    self.total_reweights = int(total_reweights)
    self.balance = features.check_balance(balance)
    self.space: features.DomainSpace | None = None
    graphdef, self._params = nnx.split(policy)
    self._forward = jax.jit(lambda params, f, g: nnx.merge(graphdef, params)(f, g))

  def init(self, domains: Sequence[mixer_lib.DomainInfo]) -> dict:
    self.space = features.DomainSpace.build(
        [d.name for d in domains], self.roles, self.base_metrics,
        [d.num_tokens for d in domains], self.balance)
    return features.AgentState.initial(self.space).to_tree()

  def features(self, state, observation: mixer_lib.Observation):
    """(feats_DxF, global_G, new AgentState) for an observation."""
    if self.space is None:
      raise ValueError('mixer: update called before init')
    agent_state = features.AgentState.from_tree(state)
    progress = min(int(agent_state.updates) / self.total_reweights, 1.0)
    return features.observation_features(
        self.space, agent_state, progress=progress, weights_D=observation.weights_D,
        train_loss_D=observation.train_loss_D, eval_metrics=observation.eval_metrics)

  def weights(self, feats_DxF, global_G, step: int) -> np.ndarray:
    weights_D = np.asarray(self._forward(self._params, feats_DxF, global_G), np.float64)
    if not np.all(np.isfinite(weights_D)):
      raise ValueError(f'agent: policy produced non-finite weights at step {step}')
    return weights_D / weights_D.sum()

  def update(self, state, observation: mixer_lib.Observation) -> tuple[dict, np.ndarray]:
    feats_DxF, global_G, new_state = self.features(state, observation)
    return new_state.to_tree(), self.weights(feats_DxF, global_G, observation.step)


def load_mixer(agent_dir: str, roles: Mapping[str, str], base_metrics: Mapping[str, float],
               total_reweights: int) -> AgentMixer:
  """An AgentMixer running the agent saved in agent_dir, with the balance it was trained for."""
  policy, meta = load_agent(agent_dir)
  return AgentMixer(policy, roles, base_metrics, total_reweights, meta.get('balance', 0.5))
