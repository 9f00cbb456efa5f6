r"""Trains an LM on a mixture of domains.

  python -m experiments.train --config=configs/quickstart.py --workdir=/tmp/qs \
      --config.steps=200 --config.mixer.name=static
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments import trainer as trainer_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file, e.g. configs/quickstart.py.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory: checkpoints, metrics.jsonl, tb/.',
                               required=True)


def main(argv):
  del argv
  if _CONFIG.value is None:
    cli.fail('config: give --config=FILE (e.g. configs/quickstart.py)')
  config = _CONFIG.value
  try:
    if 'continual' in config and not config.init_from:  # continual runs start from the base model
      from experiments import continual  # pylint: disable=g-import-not-at-top
      config = continual.continual_config(config)
    trainer = trainer_lib.Trainer(config, _WORKDIR.value)
  except ValueError as e:
    cli.fail(e)
  try:
    trainer.run()
  except trainer_lib.NonFiniteLossError as e:
    print(f'error: {e}', flush=True)
    raise SystemExit(1) from None
  except ValueError as e:  # e.g. a mixer's bad output (an agent's non-finite weights)
    cli.fail(e)
  print(trainer.table())


if __name__ == '__main__':
  cli.run(main)
