"""`mixer.name=agent`: a trained Data Mixing Agent (mixing/agent/) re-weighting a continual run.

The agent reads the run's domain roles and the base model's evaluation (its features are measured
against them), both from the continual setting the pipelines layer provides.
"""

import os

from mixing import registry
from mixing.agent import deploy


def _check(config, num_domains):
  del num_domains
  if not os.path.isdir(config.agent_dir or ''):
    raise ValueError(f"mixer.agent_dir: no trained agent in {config.agent_dir!r} "
                     '(train one with experiments.train_agent)')


@registry.register('agent', check=_check)
def _build(config, context):
  if 'continual' not in config:
    raise ValueError('mixer.name: agent needs a config with a `continual` section '
                     '(configs/continual_math.py): the domain roles and the base model')
  stages = registry.needs_stages(context, 'agent')
  policy_metrics = {k: v for k, v in stages.base_metrics().items() if k.endswith('/loss')}
  return deploy.load_mixer(config.mixer.agent_dir, stages.roles(), policy_metrics,
                           config.continual.reweights)
