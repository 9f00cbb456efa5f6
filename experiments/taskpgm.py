r"""TaskPGM over model families and seeds (stages and outputs: experiments/recipes/taskpgm_seeds.py).

  python -m experiments.taskpgm --config=configs/taskpgm.py --workdir=W
"""

import os

from absl import flags
import jax
from ml_collections import config_flags

from experiments.recipes import task_mixtures as taskpgm_pipeline
from experiments.recipes import taskpgm_seeds
from experiments.reporting import taskpgm_report
from experiments.training import cli
from experiments.training import distributed
from experiments.training import mirror
from experiments.training import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'TaskPGM config (configs/taskpgm.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where every stage goes.', required=True)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace a workdir that holds another run.')


def main(argv):
  del argv
  distributed.initialize()
  config = cli.config_with(_CONFIG.value, 'taskpgm', 'configs/taskpgm.py')
  taskpgm_pipeline.check(config)
  taskpgm_seeds.check(config)
  with mirror.mirrored(_WORKDIR.value, _OVERWRITE.value) as workdir:  # gs://: a local mirror
    workdir_lib.claim(workdir, config, _OVERWRITE.value)
    results = taskpgm_seeds.run(config, workdir)
    if jax.process_index() == 0:
      taskpgm_report.write(workdir, results)
      with open(os.path.join(workdir, 'results.md')) as f:
        print(f.read())
    workdir_lib.release_replaced(workdir)  # --overwrite's old run: this one is complete now


def console():
  """The `mixlab-taskpgm` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
