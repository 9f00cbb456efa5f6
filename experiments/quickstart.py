r"""The quickstart comparison (stages and outputs: experiments/recipes/quickstart_stages.py).

  python -m experiments.quickstart --workdir=/tmp/quickstart

uniform, DoReMi, ODM, the Data Mixing Agent (trained small, here) and a TaskPGM mixture on the same
continual pre-training budget, on built-in data; ends with the table and the plots in the workdir.
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments.training import cli
from experiments.training import mirror
from experiments.recipes import quickstart_stages as comparison
from experiments.reporting import plots
from experiments.reporting import potentials_figure
from experiments.training import workdir as workdir_lib

_DEFAULT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                        'quickstart_compare.py')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Comparison config (default: '
                                          'configs/quickstart_compare.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where every stage, the table and plots go.',
                               required=True)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace a workdir that holds another run.')


def main(argv):
  del argv
  config = _CONFIG.value
  comparison.check(config)
  with mirror.mirrored(_WORKDIR.value, _OVERWRITE.value) as workdir:  # gs://: a local mirror
    workdir_lib.claim(workdir, config, _OVERWRITE.value)
    comparison.run(config, workdir)
    potentials_figure.write_for(os.path.join(workdir, 'taskpgm_mixture'),
                               os.path.join(workdir, 'potentials'))
    files = plots.report_dir(workdir)
    with open(os.path.join(workdir, 'scores.md')) as f:
      print(f.read())
    for path in files:
      print(f'wrote {path}')


def console():
  """The `mixlab-quickstart` command."""
  cli.run(main, default_config=_DEFAULT)


if __name__ == '__main__':
  console()
