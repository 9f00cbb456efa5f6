"""Continual pre-training towards math without forgetting the source field: the Data Mixing Agent.

A base model is pre-trained on the source domains (cached), then continues on sources + targets for
`reweights` re-weighting steps of `steps_per_reweight` optimizer steps each; before each, the mixer
picks the weights. Small enough for the end-to-end pipeline to run in minutes on 2 CPU cores.
"""

import ml_collections

from configs import base


def get_config():
  config = base.get_config()
  config.continual = ml_collections.ConfigDict()
  config.continual.sources = 'code/python,prose/plays'  # the base model's domains (source field)
  config.continual.targets = 'math/easy,math/medium'  # the domains to gain (target field)
  config.continual.base_steps = 400  # pre-training steps of the base model on the sources
  config.continual.base_learning_rate = 3e-3  # peak learning rate of the base model's pre-training
  config.continual.base_root = '/tmp/mixlab_base'  # base models are cached here, by their config
  config.continual.reweights = 10  # K re-weighting steps per continual run
  config.continual.steps_per_reweight = 20  # S optimizer steps between re-weightings
  config.continual.balance = 0.5  # balanced score = balance * source + (1 - balance) * target
  config.continual.learning_rate = 1e-3  # peak learning rate of continual pre-training

  config.trajectories = ml_collections.ConfigDict()
  config.trajectories.num = 64  # mixing trajectories to collect
  config.trajectories.population = 16  # proxies trained together (one population per round)
  config.trajectories.walk_scale = 0.6  # std of the log-space random walk between re-weightings
  config.trajectories.ramp_share = 0.5  # share of schedules that perturb a target-share ramp
  config.trajectories.phase_share = 0.0  # share of schedules that switch the target share 1-2 times
  config.trajectories.anchor_share = 0.0  # share exploring around anchor schedules (mixbench: oracle's)
  config.trajectories.baseline_share = 0.0  # share of proxies mixed by ODM with log-normal noise
  # Other settings whose trajectories join these in what the agent trains on: ';' between settings,
  # '|' between one's overrides of this config (e.g. continual.sources=a,b|continual.targets=c).
  config.trajectories.settings = ''
  config.trajectories.settings_num = 128  # trajectories per other setting

  config.agent = ml_collections.ConfigDict()
  config.agent.bc_steps = 300  # behaviour-cloning warm start on the best trajectories
  config.agent.cql_steps = 1500  # conservative Q-learning steps
  config.agent.best_fraction = 0.25  # share of trajectories (by return) used for cloning
  # CQL's discount. A run's rewards add up to its final balanced score, so values near 1 aim at the
  # score at the end of the run; smaller ones at the next few re-weighting steps.
  config.agent.gamma = 0.9
  config.agent.seed = 0  # seeds the agent's init and minibatches
  # Features both networks read as 0, comma-separated (mixing/agent/features.py names them): e.g.
  # 'log_size,log_size_rel', the domain sizes, which identify a domain within one domain space.
  config.agent.drop_features = ''
  # Policy logits relative to their group's size (mixing/agent/policy.py): the agent carries group
  # shares, not per-domain weights, to a domain space with other numbers of sources and targets.
  config.agent.group_shares = False

  # The continual run itself (what the agent re-weights, and every baseline on the same budget).
  # These follow the continual fields (FieldReferences), so overriding those updates them.
  per = config.continual.get_ref('steps_per_reweight')
  config.steps = config.continual.get_ref('reweights') * per  # K * S
  config.domains = config.continual.get_ref('sources') + ',' + config.continual.get_ref('targets')
  config.eval_every = per  # fresh held-out losses at every re-weighting
  config.checkpoint_every = per
  config.mixer.update_every = per
  config.optimizer.learning_rate = config.continual.get_ref('learning_rate')
  config.eval_items = 8  # math items decoded at each evaluation
  config.optimizer.warmup_steps = 10
  return config
