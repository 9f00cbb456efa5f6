r"""The continual-pre-training benchmark: every method on every seed, with confidence intervals.

  python -m experiments.mixbench --workdir=W [--config=configs/mixbench.py] [--methods=a,b]
      [--agent_dir=A] [--norows] [--overwrite]

Runs the oracle search on the tuning seeds, collects the agent's trajectories and trains it (unless
--agent_dir gives one), then every method on every reported seed and the generalization rows
(experiments/recipes/mixbench.py), and writes W/results.json ({"seeds", "methods": {name: {"balanced",
"source", "target": [one per seed]}}, "rows", "oracle", "weights"}), W/results.md (means ± 95% CI,
paired differences) and the figures (W/source_vs_target, W/weights, W/agent_analysis). A re-run reuses
every finished stage (of the same config); intentionally kept short.
"""

import os
import time

from absl import flags
import jax
from ml_collections import config_flags

from experiments.recipes import closed_loop
from experiments.recipes import mixbench
from experiments.reporting import bench_report
from experiments.training import atomic
from experiments.training import cli
from experiments.training import distributed
from experiments.training import mirror
from mixing.agent import deploy

_CONFIG = config_flags.DEFINE_config_file('config', None, 'The benchmark config (configs/mixbench.py).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where every stage and the results go.',
                               required=True)
_METHODS = flags.DEFINE_list('methods', None, 'Methods to run (default: config.mixbench.methods).')
_AGENT_DIR = flags.DEFINE_string('agent_dir', '', 'Deploy this trained agent instead of collecting '
                                 'trajectories and training one.')
_ROWS = flags.DEFINE_bool('rows', True, 'Run the generalization rows.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace the stages of a workdir that holds '
                               'another config\'s.')


def main(argv):
  del argv
  distributed.initialize()
  config = cli.config_with(_CONFIG.value, 'mixbench', 'configs/mixbench.py')
  methods = _METHODS.value or config.mixbench.methods.split(',')
  with mirror.mirrored(_AGENT_DIR.value, field='agent_dir', upload=False) as agent_dir, \
      mirror.mirrored(_WORKDIR.value, _OVERWRITE.value) as workdir:  # gs://: local mirrors
    _run(config, methods, agent_dir, workdir)


def _run(config, methods, agent_dir, w):
  if agent_dir:
    try:  # a missing checkpoint, an old feature version or another choice metric: now
      closed_loop.check_agent_metric(config, deploy.load_agent(agent_dir)[1], agent_dir)
    except ValueError as e:
      cli.fail(str(e))
  start = time.time()
  results = mixbench.run(config, w, methods, rows=_ROWS.value,
                         log=lambda line: print(line, flush=True), agent_dir=agent_dir,
                         overwrite=_OVERWRITE.value)
  if jax.process_index() != 0:
    return
  atomic.write_json(os.path.join(w, 'results.json'), results)
  text = bench_report.markdown(results, {'this command': time.time() - start})
  atomic.write_text(os.path.join(w, 'results.md'), text)
  bench_report.write_figures(results, w)
  print(text, flush=True)


def console():
  """The `mixlab-mixbench` command."""
  cli.run(main, default_config=os.path.join(os.path.dirname(__file__), '..', 'configs',
                                            'mixbench.py'))


if __name__ == '__main__':
  console()
