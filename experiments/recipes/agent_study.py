"""The continual comparison: every baseline and the Data Mixing Agent on the same budget, scored.

Each row is a continual run from the cached base model, in W/<row>/ (finished runs are reused):
source-only, target-only, uniform, the best static two-group ratio of a grid over the target share (an
oracle for static mixing), DoReMi, ODM, RegMix and the agent; then, without retraining the agent, three
generalization settings, each with uniform beside the agent: an unseen source field, an unseen target
model (wider and deeper than the proxies) and an unseen domain space.

W/config.json records the config (and `steps`, the budget every row shares) and every row's workdir
its run's: all are claimed (workdir.claim) before anything trains, so a changed config is refused
at once, naming the fields. W/scores.json gathers the rows of every call: the rows of the methods
run this time replace theirs, the others are kept.
"""

import json
import os

import ml_collections

from experiments.recipes import continual
from experiments.recipes import runs
from experiments.training import atomic
from experiments.training import runtime
from experiments.training import validate
from mixing.agent import deploy
from experiments.training import workdir as workdir_lib

# Code version of W's scores (part of W's claim): bumped when their meaning or format changes.
SCORES_VERSION = 1
# Every method, in the order of the table.
METHODS = ('source-only', 'target-only', 'uniform', 'doremi', 'odm', 'regmix', 'oracle', 'agent',
           'generalization')
ORACLE = 'best static ratio'


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


def plan(config, agent_dir: str, methods, grid, unseen_sources, unseen_model, unseen_space_sources,
         unseen_space_targets) -> list[tuple[str, object, dict]]:
  """(folder, config, overrides) of every run the methods need, in the order of METHODS."""
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise ValueError(f'methods: unknown method {unknown[0]!r} (one of {", ".join(METHODS)})')
  static = lambda share: {'mixer.name': 'static', 'domains': _group_weights(config, share)}
  agent = {'mixer.name': 'agent', 'mixer.agent_dir': agent_dir}
  out = []
  for method in (m for m in METHODS if m in methods):
    if method in ('source-only', 'target-only'):
      out.append((method, config, static(0.0 if method == 'source-only' else 1.0)))
    elif method == 'oracle':
      out += [(f'oracle/share_{s}', config, static(float(s))) for s in grid]
    elif method == 'agent':
      out.append(('agent', config, agent))
    elif method == 'generalization':
      model = dict(kv.split('=') for kv in unseen_model.split(','))
      for slug, cfg in (
          ('unseen_source_field', _variant(config, **{'continual.sources': unseen_sources})),
          ('unseen_target_model', _variant(config, **{f'model.{k}': int(v)
                                                      for k, v in model.items()})),
          ('unseen_domain_space', _variant(config, **{'continual.sources': unseen_space_sources,
                                                      'continual.targets': unseen_space_targets}))):
        out += [(f'{slug}/uniform', cfg, {'mixer.name': 'uniform'}), (f'{slug}/agent', cfg, agent)]
    else:
      out.append((method, config, {'mixer.name': method}))
  return out


def _rows(scores: dict) -> dict:
  """{folder: scores} of the runs -> the table's rows (the oracle: its best share)."""
  rows, grid = {}, {}
  for folder, s in scores.items():
    if folder.startswith('oracle/share_'):
      grid[folder[len('oracle/share_'):]] = s
    elif '/' in folder:
      slug, kind = folder.split('/')
      rows[f'{slug.replace("_", " ")}: {kind}'] = s
    else:
      rows[folder] = s
  if grid:
    best = max(grid, key=lambda share: grid[share]['balanced'])
    rows[f'{ORACLE} (target share {best})'] = grid[best]
  return rows


def row_method(row: str) -> str:
  """The method a row of the table belongs to."""
  return 'oracle' if row.startswith(ORACLE) else 'generalization' if ':' in row else row


def merge_scores(old: dict, new: dict, methods) -> dict:
  """old's rows of methods not run this time, and new's, in the order of METHODS."""
  rows = {**{k: v for k, v in old.items() if row_method(k) not in methods}, **new}
  order = lambda row: METHODS.index(row_method(row)) if row_method(row) in METHODS else len(METHODS)
  return dict(sorted(rows.items(), key=lambda kv: order(kv[0])))


def read_scores(workdir: str) -> dict:
  path = os.path.join(workdir, 'scores.json')
  if not os.path.exists(path):
    return {}
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError as e:
    raise ValueError(f'scores: cannot read {path} ({e}); move it away (its runs are kept, and a '
                     're-run with every --methods scores them again)') from None


def compare(config, agent_dir: str, workdir: str, methods, grid=('0.1', '0.3', '0.5', '0.7', '0.9'),
            unseen_sources='prose/poems,bbh/word_sorting',
            unseen_model='d_model=192,num_layers=3,num_heads=6,d_ff=512',
            unseen_space_sources='code/python,prose/plays,prose/poems',
            unseen_space_targets='math/easy,math/medium,math/hard', log=print,
            overwrite: bool = False) -> dict:
  """The rows of `methods` (module docstring), merged into W/scores.json; returns all its rows.

  ValueError (one line), before anything trains: W or a row's workdir holds another config's runs
  (`overwrite`: W's runs are moved aside and all recomputed).
  """
  validate.check_config(config)
  if {'agent', 'generalization'} & set(methods):
    deploy.load_agent(agent_dir)  # a missing or unreadable agent is one line before anything trains
  runs_ = plan(config, agent_dir, methods, grid, unseen_sources, unseen_model,
               unseen_space_sources, unseen_space_targets)
  workdir_lib.claim(workdir, continual.stage_config('continual_compare', SCORES_VERSION,
                                                    config.to_dict(), steps=config.steps),
                    overwrite)
  for folder, cfg, overrides in runs_:
    runs.claim_run(cfg, os.path.join(workdir, folder), **overrides)
  scores = {folder: runs.run_and_score(cfg, os.path.join(workdir, folder), log, **overrides)
            for folder, cfg, overrides in runs_}
  rows = merge_scores(read_scores(workdir), _rows(scores), methods)
  text = ('# Continual pre-training: scores on the same budget\n\n' + continual.scores_table(rows)
          + '\n')
  runtime.on_process_0('compare.scores', write_scores, workdir, rows, text)
  workdir_lib.release_replaced(workdir)
  return rows


def write_scores(workdir: str, rows: dict, text: str) -> None:
  atomic.write_json(os.path.join(workdir, 'scores.json'), rows)
  atomic.write_text(os.path.join(workdir, 'report.md'), text)
