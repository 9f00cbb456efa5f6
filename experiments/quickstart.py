r"""The quickstart comparison (stages and outputs: experiments/comparison.py).

  python -m experiments.quickstart --workdir=/tmp/quickstart

uniform, DoReMi, ODM, the Data Mixing Agent (trained small, here) and a TaskPGM mixture on the same
continual pre-training budget, on built-in data; ends with the table and the plots in the workdir.
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments import comparison
from experiments import plots
from experiments import workdir as workdir_lib

_DEFAULT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs',
                        'quickstart_compare.py')
_CONFIG = config_flags.DEFINE_config_file('config', _DEFAULT, 'Comparison config.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where every stage, the table and plots go.',
                               required=True)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace a workdir that holds another run.')


def main(argv):
  del argv
  config = _CONFIG.value
  try:
    comparison.check(config)
    workdir_lib.claim(_WORKDIR.value, config, _OVERWRITE.value)
  except ValueError as e:
    cli.fail(e)
  comparison.run(config, _WORKDIR.value)
  files = plots.report_dir(_WORKDIR.value)
  with open(os.path.join(_WORKDIR.value, 'scores.md')) as f:
    print(f.read())
  for path in files:
    print(f'wrote {path}')


if __name__ == '__main__':
  cli.run(main)
