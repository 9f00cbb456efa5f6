"""TaskPGM over model families and seeds: the whole pipeline per (family, seed), hyperparameters
chosen on the validation parts, the test parts read once.

Run by `python -m experiments.taskpgm --config=configs/taskpgm.py --workdir=W`. For each family f of
taskpgm.families (a model section in taskpgm.family_models) and each seed s of taskpgm.seeds, in
W/f/seed_<s> (every stage cached there, so a re-run resumes):
  the base model (shared cache by config: experiments/recipes/continual.py), potentials.npz
  (task_mixtures.potentials_stage: single-task fine-tunes, probes, unary gains, JSD, PMI);
  select/ and select.json: the heuristics (uniform, size-proportional, temperature) and every
    candidate of the grid taskpgm.select (unary x redundancy x lam x tau) fine-tuned on the same
    budget as one population, each scored on the validation parts; the candidate with the highest
    mean validation choice accuracy (first on ties) is `taskpgm`;
  ablate/: the chosen hyperparameters' ablations (unary-only, pairwise-only, the other redundancy,
    greedy at the budget) as a second population;
  scores.json: test choice accuracy (log-likelihood of the options, length-normalized) and exact
    match of every reported method, per suite, with the discrete variant's report.
W/f/results.json: {"seeds": [...], "methods": {method: {suite: [one per seed], "average": [...]}},
"exact_match": {...the same...}, "chosen": [hyperparameters per seed], "discrete": [per seed]};
W/results.json: {"seeds", "families": {f: that}}. The seed sets config.seed and config.data.seed.
"""

import itertools
import os
import time
import zlib

import ml_collections
import numpy as np

from experiments.recipes import continual
from experiments.recipes import task_mixtures
from experiments.training import atomic
from experiments.training import population as population_lib
from experiments.training import runtime
from experiments.training import state as state_lib
from experiments.training import validate
from mixing.data import choices
from models import presets

HEURISTICS = ('uniform', 'size-proportional', 'temperature')
ABLATIONS = ('unary-only', 'pairwise-only', 'taskpgm-jsd', 'taskpgm-pmi', 'greedy')
REPORTED = ('base',) + HEURISTICS + ('taskpgm',) + ABLATIONS
SELECT_VERSION = 1  # bumped when select.json / scores.json change meaning


def seeds(t) -> list[int]:
  return validate.csv(t.seeds, int)


def families(t) -> list[str]:
  return validate.csv(t.families)


def candidates(t) -> list[dict]:
  """The selection grid, in a fixed order (ties go to the first)."""
  s, csv = t.select, validate.csv
  return [{'unary': u, 'redundancy': r, 'lam': lam, 'tau': tau}
          for u, r, lam, tau in itertools.product(csv(s.unary), csv(s.redundancy),
                                                  csv(s.lam, float), csv(s.tau, float))]


def check(config) -> None:
  """Every field of the seeds/families/selection layer, before anything trains."""
  t = config.taskpgm
  for field, parse in (('seeds', seeds), ('families', families)):
    try:
      values = parse(t)
    except ValueError:
      raise ValueError(f'taskpgm.{field}: a comma-separated list, got {t[field]!r}') from None
    if not values or len(set(values)) != len(values):
      raise ValueError(f'taskpgm.{field}: distinct values needed, got {t[field]!r}')
  for f in families(t):
    if f not in t.family_models:
      raise ValueError(f'taskpgm.families: {f!r} has no model in taskpgm.family_models '
                       f'(known: {", ".join(t.family_models)})')
    try:
      presets.resolve(t.family_models[f])
    except ValueError as e:
      raise ValueError(f'taskpgm.family_models.{f}.{str(e).removeprefix("model.")}') from None
  try:
    grid = candidates(t)
  except ValueError:
    raise ValueError(f'taskpgm.select: lam and tau must be numbers, got {t.select.lam!r}, '
                     f'{t.select.tau!r}') from None
  if not grid:
    raise ValueError('taskpgm.select: the grid is empty')
  for hp in grid:
    if hp['unary'] not in task_mixtures.UNARY:
      raise ValueError(f'taskpgm.select.unary: one of {", ".join(task_mixtures.UNARY)}, '
                       f'got {hp["unary"]!r}')
    if hp['redundancy'] not in ('jsd', 'pmi'):
      raise ValueError(f"taskpgm.select.redundancy: 'jsd' or 'pmi', got {hp['redundancy']!r}")
    if not (np.isfinite(hp['lam']) and hp['lam'] >= 0 and np.isfinite(hp['tau'])
            and hp['tau'] >= 0):
      raise ValueError(f'taskpgm.select: lam and tau must be finite and >= 0, got {hp}')
  validate.check_number('taskpgm.num_options', t.num_options, int, 2)
  validate.check_number('taskpgm.em_items', t.em_items, int, 0)
  validate.check_number('taskpgm.unary_items', t.unary_items, int, 0)
  validate.check_number('taskpgm.size_spread', t.size_spread, float, 1)


def seed_config(config, family: str, seed: int) -> ml_collections.ConfigDict:
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.model = ml_collections.ConfigDict(config.taskpgm.family_models[family].to_dict())
  cfg.seed = cfg.data.seed = seed
  return cfg


def train_docs(config, tasks) -> dict:
  """Task -> training documents: num_train / size_spread**x, x in [0, 1] fixed by the task's name,
  so the pool has tasks of very different sizes (the same ones for every seed and family)."""
  spread = float(config.taskpgm.size_spread)
  x = lambda name: zlib.crc32(name.encode()) / 2**32
  return {name: int(round(config.data.num_train * spread ** -x(name))) for name in tasks}


def _population(config, workdir, weights, domains, base_params, label):
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.steps = cfg.checkpoint_every = config.taskpgm.finetune_steps
  pop = population_lib.Population(cfg, workdir, weights, [config.seed] * len(weights),
                                  domains=domains, init_params=base_params, quiet=False,
                                  label=label)
  pop.run()
  return pop


def _mean(scores: dict) -> float:
  return float(np.mean(list(scores.values())))


def _write(path: str, obj) -> None:
  runtime.on_process_0(f'write {path}', atomic.write_json, path, obj)


def _read(path):
  return atomic.read_json(path) if os.path.exists(path) else None


def run_seed(config, workdir: str, log=print) -> dict:
  """One family and seed (config already set by seed_config); returns scores.json's content."""
  path = os.path.join(workdir, 'scores.json')
  if (done := _read(path)) is not None and done.get('version') == SELECT_VERSION:
    return done
  tasks, evals, file_suites = task_mixtures.check(config)
  os.makedirs(workdir, exist_ok=True)
  clock = time.time()
  _, _, domains = runtime.load_run_domains(config, train_docs(config, tasks))
  suite_items = task_mixtures.suites(config, domains, evals, file_suites)
  val_set, test_set = task_mixtures.choice_sets(config, suite_items)
  if (warning := choices.cut_warning(val_set, 'validation items')) is not None:
    log(warning)
  base_params = continual.base_params(config, spec=config.taskpgm)
  timings = {'base': time.time() - clock}
  clock = time.time()
  pots = task_mixtures.potentials_stage(config, workdir, tasks, domains, suite_items, base_params,
                                        log)
  timings['potentials'] = time.time() - clock
  t = config.taskpgm
  grid = candidates(t)
  parts = {}
  mixes = [task_mixtures.mixtures(config, pots, hp, parts) for hp in grid]
  timings.update({k: v / len(grid) for k, v in parts.items()})  # per candidate
  weights = ([[mixes[0][0][m][n] for n in tasks] for m in HEURISTICS]
             + [[mix[f'taskpgm-{hp["redundancy"]}'][n] for n in tasks]
                for hp, (mix, _) in zip(grid, mixes)])
  clock = time.time()
  select = _population(config, os.path.join(workdir, 'select'), np.array(weights), domains,
                       base_params, f'{len(HEURISTICS)} heuristics + {len(grid)} candidates')
  select_path = os.path.join(workdir, 'select.json')
  if (record := _read(select_path)) is None or record['candidates'] != grid:
    val = task_mixtures.choice_scores_K(select.graphdef, select.state.params, val_set, True)
    pick = int(np.argmax([_mean(v) for v in val[len(HEURISTICS):]]))
    record = {'candidates': grid, 'validation': [_mean(v) for v in val[len(HEURISTICS):]],
              'heuristics_validation': dict(zip(HEURISTICS, map(_mean, val))),
              'chosen': grid[pick]}
    _write(select_path, record)
  chosen = record['chosen']
  best = len(HEURISTICS) + grid.index(chosen)
  mix, discrete = task_mixtures.mixtures(config, pots, chosen, parts, exhaustive=True)
  timings.update({k: v for k, v in parts.items() if k == 'exhaustive'})
  log(f'chosen on validation: {chosen} (mean choice accuracy '
      f'{record["validation"][best - len(HEURISTICS)]:.4f})')
  ablate = _population(config, os.path.join(workdir, 'ablate'),
                       np.array([[mix[m][n] for n in tasks] for m in ABLATIONS]), domains,
                       base_params, f'{len(ABLATIONS)} ablations')
  timings['finetune'] = time.time() - clock
  clock = time.time()
  members = ([(m, select, k) for k, m in enumerate(HEURISTICS)] + [('taskpgm', select, best)]
             + [(m, ablate, k) for k, m in enumerate(ABLATIONS)])
  choice = {pop: task_mixtures.choice_scores_K(pop.graphdef, pop.state.params, test_set, True)
            for pop in (select, ablate)}
  base_choice = task_mixtures.choice_scores_K(select.graphdef, base_params, test_set, False)[0]
  em_items = {name: test[:t.em_items] for name, (_, test) in suite_items.items()}
  tok = state_lib.run_tokenizer(config)
  em = lambda params: {name: (task_mixtures.accuracy(select.graphdef, params, items, tok)
                              if items else float('nan')) for name, items in em_items.items()}
  scores = {'base': {'choice': base_choice, 'exact_match': em(base_params)}}
  for method, pop, k in members:
    scores[method] = {'choice': choice[pop][k], 'exact_match': em(pop.params(k))}
    log(f'{method}: test choice accuracy {_mean(scores[method]["choice"]):.4f}')
  timings['test'] = time.time() - clock
  _write(os.path.join(workdir, 'timings.json'), timings)  # this call's stages (not on resume)
  out = {'version': SELECT_VERSION, 'tasks': tasks, 'chosen': chosen, 'discrete': discrete,
         'scores': scores,
         'weights': {m: mix[m] for m in ABLATIONS} | {
             'taskpgm': dict(zip(tasks, weights[best])),
             **{m: mixes[0][0][m] for m in HEURISTICS}}}
  _write(path, out)
  return out


def _collect(per_seed: list[dict], seeds_: list[int]) -> dict:
  """results.json of one family from its per-seed scores.json."""
  out = {'seeds': seeds_, 'methods': {}, 'exact_match': {},
         'chosen': [s['chosen'] for s in per_seed], 'discrete': [s['discrete'] for s in per_seed]}
  for key, metric in (('methods', 'choice'), ('exact_match', 'exact_match')):
    for method in REPORTED:
      rows = [s['scores'][method][metric] for s in per_seed]
      table = {suite: [r[suite] for r in rows] for suite in rows[0]}
      table['average'] = [_mean(r) for r in rows]
      out[key][method] = table
  return out


def run(config, workdir: str, log=print) -> dict:
  """Every family and seed; writes W/<family>/results.json and W/results.json; returns the latter."""
  task_mixtures.check(config)
  check(config)
  t = config.taskpgm
  out = {'seeds': seeds(t), 'families': {}}
  for family in families(t):
    per_seed = []
    for seed in seeds(t):
      cfg = seed_config(config, family, seed)
      prefix = f'[{family} seed {seed}] '
      per_seed.append(run_seed(cfg, os.path.join(workdir, family, f'seed_{seed}'),
                               lambda msg, p=prefix: log(p + msg)))
    out['families'][family] = _collect(per_seed, seeds(t))
    _write(os.path.join(workdir, family, 'results.json'), out['families'][family])
  _write(os.path.join(workdir, 'results.json'), out)
  return out
