r"""Trains the Data Mixing Agent offline on collected trajectories: behaviour cloning, then CQL.

  python -m experiments.train_agent --config=configs/continual_math.py --trajectories=T --workdir=A

Learning curves go to A/metrics.jsonl; checkpoints to A/checkpoints (a re-run resumes); the trained
agent to A (orbax), ready for `--config.mixer.name=agent --config.mixer.agent_dir=A`.
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import cli
from experiments import metrics as metrics_lib
from mixing.agent import cql
from mixing.agent import dataset as dataset_lib
from mixing.agent import deploy

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Continual config with an `agent` section.')
_TRAJECTORIES = flags.DEFINE_string('trajectories', None, 'experiments.collect_trajectories workdir.',
                                    required=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the agent goes.', required=True)


def train_agent(config, trajectories: str, workdir: str, quiet: bool = False):
  dataset = dataset_lib.load(os.path.join(trajectories, 'dataset'))
  a = config.agent
  writer = metrics_lib.MetricsWriter(workdir, 0, tensorboard=False)
  total = a.bc_steps + a.cql_steps

  def log(step, record):
    writer.write(step, {f'agent/{k}': v for k, v in record.items() if k not in ('step', 'phase')})
    if not quiet and (step % 100 == 0 or step == total):
      shown = ', '.join(f'{k} {v:.4f}' for k, v in record.items() if k not in ('step', 'phase'))
      print(f'[{record["phase"]}] step {step}/{total}  {shown}', flush=True)

  policy, _, history = cql.train(dataset, a.cql_steps, a.bc_steps, a.seed, log_fn=log,
                                 checkpoint_dir=os.path.join(workdir, 'checkpoints'),
                                 config=cql.CQLConfig(bc_fraction=a.best_fraction))
  writer.close()
  deploy.save_agent(workdir, policy, {'balance': config.continual.balance,
                                      'trajectories': os.path.abspath(trajectories),
                                      'domains': dataset.meta.get('domains')})
  return policy, history


def main(argv):
  del argv
  if _CONFIG.value is None or 'agent' not in _CONFIG.value:
    cli.fail('config: give --config=FILE with an `agent` section (configs/continual_math.py)')
  try:
    train_agent(_CONFIG.value, _TRAJECTORIES.value, _WORKDIR.value)
  except ValueError as e:
    cli.fail(e)
  print(f'agent saved in {_WORKDIR.value}')


if __name__ == '__main__':
  cli.run(main)
