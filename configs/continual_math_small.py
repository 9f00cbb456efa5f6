"""The Data Mixing Agent end to end in minutes: fewer, shorter trajectories and a short agent training.

  python -m experiments.collect_trajectories --config=configs/continual_math_small.py --workdir=T
  python -m experiments.train_agent --config=configs/continual_math_small.py --trajectories=T --workdir=A
  python -m experiments.train --config=configs/continual_math_small.py --workdir=R \
      --config.mixer.name=agent --config.mixer.agent_dir=A
"""

from configs import continual_math
from configs import models


def get_config():
  config = continual_math.get_config()
  config.continual.base_steps = 300  # base pre-training steps on the sources
  config.continual.reweights = 8  # K re-weighting steps
  config.continual.steps_per_reweight = 15  # S steps between re-weightings
  config.trajectories.num = 32  # trajectories (two populations of 16)
  config.agent.bc_steps = 200  # behaviour-cloning steps
  config.agent.cql_steps = 800  # CQL steps
  config.eval_items = 4  # math items decoded at each evaluation
  config.model = models.get_config('tiny')  # base, proxies and deployed run: d_model 64, 2 layers
  config.batch_size = 8  # sequences per step (proxies and runs)
  return config
