r"""TaskPGM end to end (stages and outputs: experiments/taskpgm_pipeline.py).

  python -m experiments.taskpgm --config=configs/taskpgm.py --workdir=W
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments import taskpgm_pipeline

_CONFIG = config_flags.DEFINE_config_file('config', None, 'TaskPGM config (configs/taskpgm.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where every stage goes.', required=True)


def main(argv):
  del argv
  if _CONFIG.value is None or 'taskpgm' not in _CONFIG.value:
    cli.fail('config: give --config=FILE with a `taskpgm` section (configs/taskpgm.py)')
  try:
    taskpgm_pipeline.check(_CONFIG.value)
  except ValueError as e:
    cli.fail(e)
  taskpgm_pipeline.run(_CONFIG.value, _WORKDIR.value)
  with open(os.path.join(_WORKDIR.value, 'results.md')) as f:
    print(f.read())


if __name__ == '__main__':
  cli.run(main)
