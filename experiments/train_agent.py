r"""Trains the Data Mixing Agent offline on collected trajectories: behaviour cloning, then CQL.

  python -m experiments.train_agent --config=configs/continual_math.py --trajectories=T --workdir=A

Learning curves go to A/metrics.jsonl; checkpoints (networks, optimizers, minibatch streams) to
A/checkpoints every --checkpoint_every steps, so a re-run after a crash resumes and ends
bit-identical to an unbroken run; the trained agent to A (orbax), ready for
`--config.mixer.name=agent --config.mixer.agent_dir=A`. A records its config and trajectories
(A/config.json): a trained agent is reused as it is; one of another config or of other
trajectories is refused unless --overwrite.
"""

from absl import flags
from ml_collections import config_flags

from experiments.recipes import trajectories as agent
from experiments.training import cli
from experiments.training import mirror
from mixing.agent import cql

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Continual config with an `agent` section.')
_TRAJECTORIES = flags.DEFINE_string('trajectories', None, 'experiments.collect_trajectories workdir.',
                                    required=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the agent goes.', required=True)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace an agent of another config.')
_CHECKPOINT_EVERY = flags.DEFINE_integer('checkpoint_every', cql.CQLConfig.checkpoint_every,
                                         'Steps between checkpoints (results do not depend on it).',
                                         lower_bound=1)


def main(argv):
  del argv
  config = cli.config_with(_CONFIG.value, 'agent', 'configs/continual_math.py')
  with mirror.mirrored(_TRAJECTORIES.value, field='trajectories', upload=False) as trajectories, \
      mirror.mirrored(_WORKDIR.value, _OVERWRITE.value) as workdir:  # gs://: local mirrors
    agent.train_agent(config, trajectories, workdir, overwrite=_OVERWRITE.value,
                      checkpoint_every=_CHECKPOINT_EVERY.value)
  print(f'agent saved in {_WORKDIR.value}')


def console():
  """The `mixlab-train-agent` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
