r"""TaskPGM end to end (stages and outputs: experiments/taskpgm_pipeline.py).

  python -m experiments.taskpgm --config=configs/taskpgm.py --workdir=W
"""

import os

from absl import flags
import jax
from ml_collections import config_flags

from experiments import cli
from experiments import distributed
from experiments import taskpgm_pipeline
from experiments import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'TaskPGM config (configs/taskpgm.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where every stage goes.', required=True)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace a workdir that holds another run.')


def main(argv):
  del argv
  distributed.initialize()
  config = cli.config_with(_CONFIG.value, 'taskpgm', 'configs/taskpgm.py')
  try:
    taskpgm_pipeline.check(config)
    workdir_lib.claim(_WORKDIR.value, config, _OVERWRITE.value)
  except ValueError as e:
    cli.fail(e)
  taskpgm_pipeline.run(config, _WORKDIR.value)
  if jax.process_index() == 0:
    with open(os.path.join(_WORKDIR.value, 'results.md')) as f:
      print(f.read())


if __name__ == '__main__':
  cli.run(main)
