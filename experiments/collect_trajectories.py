r"""Collects random data-mixing trajectories from small proxy models (recipes/trajectories.py).

  python -m experiments.collect_trajectories --config=configs/continual_math.py --workdir=T

Finished rounds are kept: a re-run (after a crash, or with more `trajectories.num`) resumes. T holds
the rounds of one collection config; another is refused unless --overwrite.
"""

import os

from absl import flags
import jax
from ml_collections import config_flags

from experiments.recipes import trajectories as agent
from experiments.training import atomic
from experiments.training import cli
from experiments.training import distributed
from experiments.training import mirror

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Continual config, e.g. '
                                          'configs/continual_math.py.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the trajectories go.', required=True)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace trajectories of another config.')


def main(argv):
  del argv
  distributed.initialize()
  config = cli.config_with(_CONFIG.value, 'continual', 'configs/continual_math.py')
  with mirror.mirrored(_WORKDIR.value, _OVERWRITE.value) as workdir:  # gs://: a local mirror
    dataset = agent.collect(config, workdir, overwrite=_OVERWRITE.value)
    if jax.process_index() != 0:  # the others trained their share of the proxies; one reports
      return
    print(f'{dataset.num_trajectories} trajectories ({len(dataset)} transitions) in '
          f'{os.path.join(workdir, "dataset")}')
    atomic.write_json(os.path.join(workdir, 'collection.json'),
                      {'trajectories': dataset.num_trajectories, 'transitions': len(dataset)})


def console():
  """The `mixlab-collect-trajectories` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
