r"""Trains an LM on a mixture of domains.

  python -m experiments.train --config=configs/quickstart.py --workdir=/tmp/qs \
      --config.steps=200 --config.mixer.name=static
"""

from absl import flags
import jax
from ml_collections import config_flags

from experiments.recipes import continual
from experiments.recipes import runs
from experiments.training import cli
from experiments.training import distributed
from experiments.training import validate
from experiments.training import workdir as workdir_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. configs/quickstart.py.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics.jsonl, tb/; a path or a '
                               'gs:// URL.',
                               required=True)
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace a workdir that holds another run.')


def main(argv):
  del argv
  distributed.initialize()
  config = _CONFIG.value
  if config is None:
    raise ValueError('config: give --config=FILE (e.g. configs/quickstart.py)')
  validate.check_run(config)  # before claiming: a mistyped config must not claim the workdir
  workdir_lib.claim(_WORKDIR.value, config, _OVERWRITE.value, remote=True)
  if 'continual' in config and not config.init_from:  # continual runs start from the base model
    config = continual.continual_config(config)
  trainer = runs.make_trainer(config, _WORKDIR.value)
  trainer.run()  # a non-finite loss: one line, exit 1 (cli.run), the checkpoints before it kept
  if jax.process_index() == 0:
    print(trainer.table())


def console():
  """The `mixlab-train` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
