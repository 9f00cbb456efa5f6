"""The continual comparison: every baseline and the Data Mixing Agent on the same budget, scored.

Each row is a continual run from the cached base model, in W/<row>/ (finished runs are reused):
source-only, target-only, uniform, the best static two-group ratio of a grid over the target share (an
oracle for static mixing), DoReMi, ODM, RegMix and the agent; then, without retraining the agent, three
generalization settings, each with uniform beside the agent: an unseen source field, an unseen target
model (wider and deeper than the proxies) and an unseen domain space.
"""

import os

import ml_collections

from experiments.recipes import continual
from experiments.recipes import runs


def _group_weights(config, target_share: float) -> str:
  roles = continual.roles(config)
  sources = [n for n, r in roles.items() if r == 'source']
  targets = [n for n, r in roles.items() if r == 'target']
  parts = [f'{n}:{(1 - target_share) / len(sources)}' for n in sources]
  parts += [f'{n}:{target_share / len(targets)}' for n in targets]
  return ','.join(parts)


def _variant(config, **changes) -> ml_collections.ConfigDict:
  cfg = continual.with_overrides(config, changes)
  cfg.domains = cfg.continual.sources + ',' + cfg.continual.targets
  return cfg


def compare(config, agent_dir: str, workdir: str, methods, grid=('0.1', '0.3', '0.5', '0.7', '0.9'),
            unseen_sources='prose/poems,bbh/word_sorting',
            unseen_model='d_model=192,num_layers=3,num_heads=6,d_ff=512',
            unseen_space_sources='code/python,prose/plays,prose/poems',
            unseen_space_targets='math/easy,math/medium,math/hard', log=print) -> dict:
  """Every row of the continual comparison (module docstring); {row: {source, target, balanced}}."""
  rows = {}
  run = lambda name, cfg=config, **o: runs.run_and_score(cfg, os.path.join(workdir, name), log, **o)
  if 'source-only' in methods:
    rows['source-only'] = run('source-only', **{'mixer.name': 'static',
                                                'domains': _group_weights(config, 0.0)})
  if 'target-only' in methods:
    rows['target-only'] = run('target-only', **{'mixer.name': 'static',
                                                'domains': _group_weights(config, 1.0)})
  for name in ('uniform', 'doremi', 'odm', 'regmix'):
    if name in methods:
      rows[name] = run(name, **{'mixer.name': name})
  if 'oracle' in methods:
    grid = {s: run(f'oracle/share_{s}', **{'mixer.name': 'static',
                                            'domains': _group_weights(config, float(s))})
            for s in grid}
    best = max(grid, key=lambda s: grid[s]['balanced'])
    rows[f'best static ratio (target share {best})'] = grid[best]
  agent = {'mixer.name': 'agent', 'mixer.agent_dir': agent_dir}
  if 'agent' in methods:
    rows['agent'] = run('agent', **agent)
  if 'generalization' in methods:
    model = dict(kv.split('=') for kv in unseen_model.split(','))
    settings = {
        'unseen source field': _variant(config, **{'continual.sources': unseen_sources}),
        'unseen target model': _variant(config, **{f'model.{k}': int(v) for k, v in model.items()}),
        'unseen domain space': _variant(
            config, **{'continual.sources': unseen_space_sources,
                       'continual.targets': unseen_space_targets}),
    }
    for label, cfg in settings.items():
      slug = label.replace(' ', '_')
      rows[f'{label}: uniform'] = run(f'{slug}/uniform', cfg, **{'mixer.name': 'uniform'})
      rows[f'{label}: agent'] = run(f'{slug}/agent', cfg, **agent)
  return rows
