r"""Continual pre-training on the same budget: every baseline and the Data Mixing Agent, scored.

  python -m experiments.continual_compare --config=configs/continual_math.py --agent_dir=A --workdir=W

Runs (each a continual run from the cached base model, in W/<row>/; finished runs are reused, but
only under the config that made them: another is refused before anything trains, with one line naming
the fields, and `--overwrite` recomputes every row):
source-only, target-only, uniform, the best static two-group ratio of a grid over the target share (an
oracle for static mixing), DoReMi, ODM, RegMix and the agent; then, without retraining the agent, three
generalization settings, each with uniform beside the agent: an unseen source field (a base model
pre-trained on `--unseen_sources`), an unseen target model (wider and deeper than the proxies), and an
unseen domain space (`--unseen_space_sources` + `--unseen_space_targets`). Writes W/scores.json (the
rows of `--methods` replace theirs; the other rows already there are kept), W/report.md (source,
target and balanced scores) and plots: the weights the agent chose over its run
(stacked) and, from the trajectories, the mean weights of the steps that raised each score against
those that lowered it.
"""

import os

from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from experiments.training import cli
from experiments.training import distributed
from experiments.training import mirror
from experiments.recipes import agent_study
from experiments.recipes import continual
from experiments.reporting import figures
from experiments.reporting import plots
from mixing.agent import dataset as dataset_lib

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Continual config.')
_AGENT_DIR = flags.DEFINE_string('agent_dir', None, 'A trained agent (experiments.train_agent).',
                                 required=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the runs and the report go.', required=True)
_TRAJECTORIES = flags.DEFINE_string('trajectories', None, 'Trajectories for the analysis plot.')
_GRID = flags.DEFINE_list('grid', ['0.1', '0.3', '0.5', '0.7', '0.9'], 'Target shares of the oracle.')
_UNSEEN_SOURCES = flags.DEFINE_string('unseen_sources', 'prose/poems,bbh/word_sorting',
                                      'Source field of the unseen-source setting.')
_UNSEEN_MODEL = flags.DEFINE_string('unseen_model', 'd_model=192,num_layers=3,num_heads=6,d_ff=512',
                                    'The unseen target model (wider and deeper than the proxies).')
_UNSEEN_SPACE_SOURCES = flags.DEFINE_string('unseen_space_sources', 'code/python,prose/plays,'
                                            'prose/poems', 'Sources of the unseen domain space.')
_UNSEEN_SPACE_TARGETS = flags.DEFINE_string('unseen_space_targets', 'math/easy,math/medium,math/hard',
                                            'Targets of the unseen domain space.')
_METHODS = flags.DEFINE_list('methods', list(agent_study.METHODS),
                             'Rows to run; the rows of the others already in W/scores.json are kept.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace the runs of a workdir that holds another '
                               'config\'s (all of them are recomputed).')


def plot_raise_vs_lower(trajectories: str, out: str):
  """For each score, the mean action of the steps that raised it vs those that lowered it."""
  data = dataset_lib.load(os.path.join(trajectories, 'dataset'))
  names = [n for n in data.domain_names(0)]
  mask = data.mask_NxD.sum(1) == len(names)
  action = data.action_NxD[mask][:, :len(names)]
  changes = {'source': data.next_global_NxG[mask, 3], 'target': data.next_global_NxG[mask, 4],
             'balanced': data.reward_N[mask]}
  fig, axes = figures.plt().subplots(1, 3, figsize=(12, 3.5), sharey=True)
  x = np.arange(len(names))
  for ax, (score, change) in zip(axes, changes.items()):
    up, down = action[change > 0], action[change < 0]
    if len(up):
      ax.bar(x - 0.2, up.mean(0), 0.4, label=f'raised ({len(up)})')
    if len(down):
      ax.bar(x + 0.2, down.mean(0), 0.4, label=f'lowered ({len(down)})')
    ax.set_xticks(x, names, rotation=30, ha='right', fontsize=8)
    ax.set_title(f'{score} score')
    ax.legend(fontsize=8)
  axes[0].set_ylabel('mean weight')
  fig.tight_layout()
  figures.save(fig, out)


def main(argv):
  del argv
  distributed.initialize()
  config = cli.config_with(_CONFIG.value, 'continual', 'configs/continual_math.py')
  with mirror.mirrored(_AGENT_DIR.value, field='agent_dir', upload=False) as agent_dir, \
      mirror.mirrored(_TRAJECTORIES.value, field='trajectories', upload=False) as trajectories, \
      mirror.mirrored(_WORKDIR.value, _OVERWRITE.value) as workdir:  # gs://: local mirrors
    _run(config, agent_dir, trajectories, workdir)


def _run(config, agent_dir, trajectories, workdir):
  rows = agent_study.compare(
      config, agent_dir, workdir, _METHODS.value, _GRID.value,
      _UNSEEN_SOURCES.value, _UNSEEN_MODEL.value, _UNSEEN_SPACE_SOURCES.value,
      _UNSEEN_SPACE_TARGETS.value, overwrite=_OVERWRITE.value)
  if jax.process_index() != 0:  # every process ran every row's training; one draws and prints
    return
  if os.path.exists(os.path.join(workdir, 'agent', 'mixer.jsonl')):
    plots.weights_figure({'agent': os.path.join(workdir, 'agent')},
                         os.path.join(workdir, 'agent_weights'))
  if trajectories:
    plot_raise_vs_lower(trajectories, os.path.join(workdir, 'raise_vs_lower'))
  print('# Continual pre-training: scores on the same budget\n\n' + continual.scores_table(rows))


def console():
  """The `mixlab-continual-compare` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
