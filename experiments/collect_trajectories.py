r"""Collects random data-mixing trajectories from small proxy models (see experiments/agent.py).

  python -m experiments.collect_trajectories --config=configs/continual_math.py --workdir=T
"""

import json
import os

from absl import flags
import jax
from ml_collections import config_flags

from experiments.recipes import trajectories as agent
from experiments.training import cli
from experiments.training import distributed

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Continual config, e.g. '
                                          'configs/continual_math.py.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the trajectories go.', required=True)


def main(argv):
  del argv
  distributed.initialize()
  config = cli.config_with(_CONFIG.value, 'continual', 'configs/continual_math.py')
  try:
    dataset = agent.collect(config, _WORKDIR.value)
  except ValueError as e:
    cli.fail(e)
  if jax.process_index() != 0:  # the others trained their share of the proxies; one reports
    return
  print(f'{dataset.num_trajectories} trajectories ({len(dataset)} transitions) in '
        f'{os.path.join(_WORKDIR.value, "dataset")}')
  with open(os.path.join(_WORKDIR.value, 'collection.json'), 'w') as f:
    json.dump({'trajectories': dataset.num_trajectories, 'transitions': len(dataset)}, f)


def console():
  """The `mixlab-collect-trajectories` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
