"""The quickstart comparison: continual pre-training towards math, every method on the same budget.

  python -m experiments.quickstart --workdir=W

A tiny base model is pre-trained on code and plays (cached), then continues on code, plays and two
math levels for 8 re-weighting steps of 15 optimizer steps, mixed by uniform, DoReMi, ODM, a Data
Mixing Agent trained within the command (on 16 proxy trajectories), and a TaskPGM mixture over the
four domains. Sized to finish in minutes on 2 CPU cores.
"""

import ml_collections

from configs import continual_math_small


def get_config():
  config = continual_math_small.get_config()
  config.trajectories.num = 16  # proxy trajectories for the agent (one population)
  config.agent.bc_steps = 100  # behaviour-cloning steps
  config.agent.cql_steps = 400  # conservative Q-learning steps
  config.mixer.doremi.proxy_steps = 60  # DoReMi's reference and proxy runs (half the budget)

  config.taskpgm = ml_collections.ConfigDict()  # TaskPGM over the domains (experiments/recipes/task_mixtures.py)
  config.taskpgm.single_task_steps = 30  # steps of each single-domain fine-tune of the base
  config.taskpgm.probes = 32  # held-out rows whose predictive distributions are compared
  config.taskpgm.probe_positions = 16  # scored positions read per probe row
  config.taskpgm.redundancy = 'jsd'  # 'jsd' (1 - JSD / ln 2) or 'pmi' (max(PMI, 0))
  config.taskpgm.self_redundancy = True  # keep R's diagonal (see configs/taskpgm.py)
  config.taskpgm.lam = 1.0  # weight of the redundancy
  # Entropy weight. Higher than for SFT task pools (configs/taskpgm.py): a single-domain model's
  # balanced score cannot show forgetting, which only mixtures reveal, so the utilities move the
  # mixture away from uniform by at most e^(1/tau) between the best and worst domain.
  config.taskpgm.tau = 1.0
  return config
