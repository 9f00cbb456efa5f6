r"""Trains the Data Mixing Agent offline on collected trajectories: behaviour cloning, then CQL.

  python -m experiments.train_agent --config=configs/continual_math.py --trajectories=T --workdir=A

Learning curves go to A/metrics.jsonl; checkpoints to A/checkpoints (a re-run resumes); the trained
agent to A (orbax), ready for `--config.mixer.name=agent --config.mixer.agent_dir=A`.
"""

from absl import flags
from ml_collections import config_flags

from experiments.recipes import trajectories as agent
from experiments.training import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Continual config with an `agent` section.')
_TRAJECTORIES = flags.DEFINE_string('trajectories', None, 'experiments.collect_trajectories workdir.',
                                    required=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the agent goes.', required=True)


def main(argv):
  del argv
  config = cli.config_with(_CONFIG.value, 'agent', 'configs/continual_math.py')
  try:
    agent.train_agent(config, _TRAJECTORIES.value, _WORKDIR.value)
  except ValueError as e:
    cli.fail(e)
  print(f'agent saved in {_WORKDIR.value}')


def console():
  """The `mixlab-train-agent` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
