r"""TaskPGM end to end (stages and outputs: experiments/recipes/task_mixtures.py).

  python -m experiments.taskpgm --config=configs/taskpgm.py --workdir=W
"""

import os

from absl import flags
import jax
from ml_collections import config_flags

from experiments.training import cli
from experiments.training import distributed
from experiments.recipes import task_mixtures as taskpgm_pipeline
from experiments.reporting import potentials_figure
from experiments.training import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'TaskPGM config (configs/taskpgm.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where every stage goes.', required=True)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace a workdir that holds another run.')


def main(argv):
  del argv
  distributed.initialize()
  config = cli.config_with(_CONFIG.value, 'taskpgm', 'configs/taskpgm.py')
  taskpgm_pipeline.check(config)
  workdir_lib.claim(_WORKDIR.value, config, _OVERWRITE.value)
  taskpgm_pipeline.run(config, _WORKDIR.value)
  if jax.process_index() == 0:
    potentials_figure.write_for(_WORKDIR.value)
    with open(os.path.join(_WORKDIR.value, 'results.md')) as f:
      print(f.read())


def console():
  """The `mixlab-taskpgm` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
