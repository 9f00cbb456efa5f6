"""The quickstart comparison: every mixing method on one continual pre-training budget, end to end.

Stages, each cached in W so a re-run resumes: the base model (shared cache, experiments/recipes/continual.py),
W/trajectories and W/agent_policy (the Data Mixing Agent, collected and trained small),
W/taskpgm_mixture (the TaskPGM mixture over the domains), then one continual run per method in
W/<method>/ (uniform, DoReMi, ODM, agent, TaskPGM), scored against the base model. Each stage's
folder records the config that made it (workdir.claim): what another config left is refused. Writes
W/scores.json and W/scores.md; the quickstart command then adds the report and figures.
"""

import os
import time

from experiments.training import atomic
from experiments.training import validate
from experiments.training import workdir as workdir_lib
from experiments.recipes import trajectories as agent_lib
from experiments.recipes import continual
from experiments.recipes import runs
from experiments.recipes import task_mixtures as taskpgm_pipeline

METHODS = ('uniform', 'doremi', 'odm', 'agent', 'taskpgm')


def check(config):
  for section in ('continual', 'trajectories', 'agent', 'taskpgm'):
    if section not in config:
      raise ValueError(f'config: no `{section}` section (configs/quickstart_compare.py has them)')
  validate.check_config(config)
  agent_lib.check(config)  # trajectories and agent sections, the mesh
  taskpgm_pipeline.check_potentials(config.taskpgm)
  continual.roles(config)


def run(config, workdir: str, log=print) -> dict:
  """Runs every stage (resuming) and returns {method: {source, target, balanced}}."""
  check(config)
  start = time.time()
  stage = lambda text: log(f'== [{time.time() - start:5.0f} s] {text}')
  stage('base model')
  continual.ensure_base(config)
  stage('Data Mixing Agent: collecting proxy trajectories')
  trajectories = os.path.join(workdir, 'trajectories')
  agent_lib.collect(config, trajectories, log)
  agent_dir = os.path.join(workdir, 'agent_policy')  # W/agent is the agent's continual run
  stage('Data Mixing Agent: offline RL (behaviour cloning, then CQL)')
  agent_lib.train_agent(config, trajectories, agent_dir)
  stage('TaskPGM: single-domain fine-tunes, potentials, mixture')
  taskpgm_dir = os.path.join(workdir, 'taskpgm_mixture')
  taskpgm_pipeline.domain_mixture(config, taskpgm_dir, log)
  overrides = {
      'uniform': {'mixer.name': 'uniform'},
      'doremi': {'mixer.name': 'doremi'},
      'odm': {'mixer.name': 'odm'},
      'agent': {'mixer.name': 'agent', 'mixer.agent_dir': agent_dir},
      'taskpgm': {'mixer.name': 'taskpgm', 'mixer.taskpgm.dir': taskpgm_dir},
  }
  rows = {}
  for k, method in enumerate(METHODS):
    stage(f'continual run {k + 1}/{len(METHODS)}: {method}')
    rows[method] = runs.run_and_score(config, os.path.join(workdir, method), log, quiet=False,
                                           **overrides[method])
    log(f'{method}: source {rows[method]["source"]:+.4f}  target {rows[method]["target"]:+.4f}  '
        f'balanced {rows[method]["balanced"]:+.4f}')
  stage('report')
  write_report(workdir, rows)
  workdir_lib.release_replaced(workdir)  # an --overwrite's previous run, once this one is whole
  return rows


def write_report(workdir: str, rows: dict) -> None:
  atomic.write_json(os.path.join(workdir, 'scores.json'), rows)
  text = ('# Quickstart: continual pre-training towards math, same budget\n\n'
          'Scores are normalized held-out loss improvements over the base model (target: averaged '
          '50/50 with the math accuracy gain); balanced = mean of source and target.\n\n'
          + continual.scores_table(rows) + '\n')
  atomic.write_text(os.path.join(workdir, 'scores.md'), text)
