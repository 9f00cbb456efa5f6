"""The continual-pre-training benchmark: every method on every seed, the oracle, the agent, the rows.

Stages, each kept in W and reused by a re-run of the same config (W/config.json; another is refused):
  oracle/       every static and dynamic candidate (oracle.py) on the tuning seeds -> best.json
  trajectories/ the agent's experience (trajectories.collect): random walks, ramps, phase switches,
                neighbourhoods of the oracle's best schedules and noisy ODM
  offline/<i>/  RegMix's proxies (continual runs of Dirichlet mixtures on the tuning seeds, regressing
                the balanced score) and DoReMi's reference and proxy, for tuning entry i
  tuning/       a method with a `mixbench.tune.<method>` grid (ODM, DoReMi, the agent, ...) runs each
                entry on the tuning seeds; the best entry (tuning/<method>.json) is what is reported
  agents/<i>+<key>/  the agent of grid entry i (BC + CQL on the trajectories, and on the other
                settings' with trajectories.settings; agent_plain has neither them nor
                agent.group_shares: PLAIN); the key
                fingerprints the agent section and those settings, so W may take other values of
                them (AGENT_FIELDS) and only the agents' stages run again
  methods/<m>/  method m on the reported seeds (seeds.json)
  rows/<r>/     generalization rows: another setting (its own base model), uniform and the agent
                deployed without retraining, on the reported seeds
Every stage trains its members as populations (closed_loop.drive), a chunk of at most
`trajectories.population` members at a time; a chunk's results are written when it ends, so an
interrupted stage resumes at its first unfinished chunk.
"""

import glob
import os
import time

import numpy as np

from experiments.recipes import closed_loop
from experiments.recipes import continual
from experiments.recipes import oracle as oracle_lib
from experiments.recipes import runs
from experiments.recipes import trajectories as trajectories_lib
from experiments.training import atomic
from experiments.training import validate
from experiments.training import workdir as workdir_lib
from mixing import mixer as mixer_lib
from mixing import registry
from mixing.agent import deploy
from mixing.data import choices as choices_lib
from mixing.mixers import regmix as regmix_lib

METHODS = ('uniform', 'best_static', 'best_dynamic', 'odm', 'doremi', 'regmix', 'agent',
           'agent_plain')
# 'agent' is the agent as configured: with `trajectories.settings`' trajectories and
# `agent.group_shares` when they are set; 'agent_plain' is BC + CQL as published, without these
# additions (PLAIN), so that results.md compares the two.
AGENTS = ('agent', 'agent_plain')
PLAIN = {'trajectories.settings': '', 'agent.group_shares': False}
VERSION = 1
# What only the agents depend on: W may take other values of these, since each agent's folder, tuning
# and runs are keyed by them (`_agent_key`); every other stage is reused.
AGENT_FIELDS = ('agent', 'trajectories.settings', 'trajectories.settings_num')


PYDOC = 'docs/pydoc'


def write_pydoc(config) -> None:
  """The `docs/pydoc` file domain's text, from the standard library's pydoc_data, if absent."""
  spec = config.domain_files.get(PYDOC)
  if spec is None or os.path.exists(spec.path):
    return
  from pydoc_data import topics  # pylint: disable=g-import-not-at-top
  text = '\n\n'.join(f'{name}\n{body}' for name, body in sorted(topics.topics.items()))
  os.makedirs(os.path.dirname(os.path.abspath(spec.path)), exist_ok=True)
  atomic.write_text(spec.path, text)


def seeds(text: str, field: str) -> list[int]:
  try:
    out = validate.csv(text, int)
  except ValueError:
    raise ValueError(f'{field}: not a comma-separated list of integers: {text!r}') from None
  if not out or len(set(out)) != len(out):
    raise ValueError(f'{field}: needs distinct seeds, got {text!r}')
  return out


def check(config, methods) -> None:
  """ValueError naming the field of the first mistake; writes the docs/pydoc file domain first."""
  write_pydoc(config)
  trajectories_lib.check(config)
  b = config.mixbench
  reported, tune = seeds(b.seeds, 'mixbench.seeds'), seeds(b.tune_seeds, 'mixbench.tune_seeds')
  if set(reported) & set(tune):
    raise ValueError(f'mixbench.tune_seeds: {sorted(set(reported) & set(tune))[0]} is also a '
                     'reported seed (hyperparameters are chosen on seeds the report does not use)')
  for m in methods:
    if m not in METHODS:
      raise ValueError(f'methods: unknown {m!r} (known: {", ".join(METHODS)})')
  validate.check_number('mixbench.oracle.grid', b.oracle.grid, int, 1)
  validate.check_number('mixbench.oracle.dirichlet', b.oracle.dirichlet, int, 0)
  validate.check_number('mixbench.oracle.switch', b.oracle.switch, float, 0, 1, open_low=True)
  validate.check_number('mixbench.oracle.concentration', b.oracle.concentration, float, 0,
                        open_low=True)
  oracle_lib.levels(b.oracle.levels)
  for method, grid in b.tune.items():
    if method not in METHODS:
      raise ValueError(f'mixbench.tune: unknown method {method!r} (known: {", ".join(METHODS)})')
    for i, text in enumerate(continual.entries(grid)):
      continual.overrides(config, text, f'mixbench.tune.{method}[{i}]')
  for name, text in b.rows.items():
    row = continual.overrides(config, text, f'mixbench.rows.{name}')
    try:
      trajectories_lib.check(row)
    except ValueError as e:
      raise ValueError(f'mixbench.rows.{name}: {e}') from None


def setting_config(config):
  """What W holds results of: everything but the method list and the report's fields."""
  return continual.stage_config('mixbench', VERSION, continual.without(config, 'mixbench.methods'))


class Bench:
  """One benchmark run in W (module docstring)."""

  def __init__(self, config, workdir: str, log=print, agent_dir: str = ''):
    self.config, self.workdir, self.log, self.agent_dir = config, workdir, log, agent_dir
    b = config.mixbench
    self.seeds, self.tune_seeds = seeds(b.seeds, 'mixbench.seeds'), seeds(b.tune_seeds,
                                                                          'mixbench.tune_seeds')
    self._env = None

  def record(self, stage: str, seconds: float, min_seconds: float = 0.0) -> None:
    """Adds work done to W/timings.json (stage -> seconds; cached work, under min_seconds, is not)."""
    if seconds < min_seconds:
      return
    path = os.path.join(self.workdir, 'timings.json')
    timings = atomic.read_json(path) or {}
    timings[stage] = timings.get(stage, 0.0) + seconds
    atomic.write_json(path, timings)

  @property
  def env(self) -> closed_loop.Environment:
    if self._env is None:
      self.log('stage base: the base model and its evaluation')
      self._env = closed_loop.environment(self.config, self.log)
    return self._env

  def members(self, folder: str, specs, label: str, env=None, split: str = 'val') -> list[dict]:
    """specs: (key, make_mixer, seed); runs them in chunks (cached in folder/chunk_NNN.json), scored
    on `split`: 'val' for runs that choose something (tuning seeds), 'test' for reported runs."""
    env = env or self.env
    size = self.config.trajectories.population
    rows = []
    for i in range(0, len(specs), size):
      chunk = specs[i:i + size]
      path = os.path.join(folder, f'chunk_{i // size:03d}.json')
      keys = [f'{key}:{split}' for key, _, _ in chunk]
      saved = atomic.read_json(path)
      if saved is None or saved.get('keys') != keys:
        n = -(-len(specs) // size)
        self.log(f'{label}: chunk {i // size + 1}/{n} ({len(chunk)} runs)')
        start = time.time()
        out = closed_loop.drive(env, path[:-5] + '.work', [make() for _, make, _ in chunk],
                                [seed for _, _, seed in chunk], label=label, log=None,
                                split=split)
        self.record(label, time.time() - start)
        saved = {'keys': keys, 'rows': out}
        atomic.write_json(path, saved)
      rows.extend(saved['rows'])
    return rows

  # --- stages -----------------------------------------------------------------------------------------
  def oracle(self) -> dict:
    path = os.path.join(self.workdir, 'oracle', 'best.json')
    if (saved := atomic.read_json(path)) is not None:
      return saved
    is_target = self.env.space.is_target_D > 0
    o, k = self.config.mixbench.oracle, self.config.continual.reweights
    static = oracle_lib.grid_candidates(is_target, k, o.grid)
    scores = self._search(static, 'grid')
    center = static[oracle_lib.best(scores, list(static))][0]
    refine = oracle_lib.refine_candidates(center, k, o.dirichlet, o.concentration, self.config.seed)
    scores.update(self._search(refine, 'refine'))
    static.update(refine)
    best_static = oracle_lib.best(scores, list(static))
    dynamic = oracle_lib.dynamic_candidates(is_target, k, o.switch, oracle_lib.levels(o.levels),
                                            static[best_static][0])
    scores.update(self._search(dynamic, 'dynamic'))
    best = {'tune_seeds': self.tune_seeds, 'scores': scores, 'best_static': best_static,
            'best_dynamic': oracle_lib.best(scores, list(dynamic))}
    every = {**static, **dynamic}
    best['schedules'] = {k: every[best[k]].tolist() for k in ('best_static', 'best_dynamic')}
    top = sorted(dynamic, key=lambda n: -np.mean(scores[n]))[:4]
    best['anchors'] = [every[n].tolist() for n in top]
    atomic.write_json(path, best)
    return best

  def metric_tables(self) -> dict:
    """oracle.metric_tables of the oracle's candidates (its chunk files, the 'val' split)."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(self.workdir, 'oracle', '*', 'chunk_*.json'))):
      saved = atomic.read_json(path)
      for key, row in zip(saved['keys'], saved['rows']):
        name, seed = key.rsplit(':', 1)[0].rsplit('@', 1)
        runs.setdefault(name, {})[int(seed)] = row['final']
    e = self.env
    return oracle_lib.metric_tables(runs, e.base_final['val'], e.names, e.space.is_source_D,
                                    e.space.is_target_D, e.space.balance, choices_lib.METRICS)

  def _search(self, candidates: dict, kind: str) -> dict[str, list[float]]:
    """Every candidate on every tuning seed -> {candidate: balanced scores}."""
    specs = [(f'{name}@{s}', _schedule_factory(self.config, w), s)
             for name, w in candidates.items() for s in self.tune_seeds]
    rows = self.members(os.path.join(self.workdir, 'oracle', kind), specs, f'oracle ({kind})')
    scores = {name: [] for name in candidates}
    for (key, _, _), row in zip(specs, rows):
      scores[key.rsplit('@', 1)[0]].append(row['scores']['balanced'])
    return scores

  def agent_base(self, method: str):
    """(config, name) of an agent method: 'agent_plain' drops the additions (PLAIN); the name
    ('agent+<key>', `_agent_key`) names its tuning and runs."""
    cfg = self.config if method == 'agent' else continual.with_overrides(self.config, PLAIN)
    return cfg, 'agent' + _agent_key(cfg)

  def tuned(self, method: str):
    """(config, tag) of `method`: its `mixbench.tune.<method>` grid entry (';' between entries, '|'
    between fields; both agents use `mixbench.tune.agent`'s) with the best mean balanced score on
    the tuning seeds, or the config itself."""
    base, name = self.agent_base(method) if method in AGENTS else (self.config, method)
    grid = continual.entries(self.config.mixbench.tune.get('agent' if method in AGENTS else method,
                                                           ''))
    if method == 'agent' and self.agent_dir:
      return self.config, 'given'
    if len(grid) == 1:
      return continual.overrides(base, grid[0], f'mixbench.tune.{method}'), '00'
    path = os.path.join(self.workdir, 'tuning', f'{name}.json')
    if (saved := atomic.read_json(path)) is None:
      scores = {}
      for i, text in enumerate(grid):
        cfg = continual.overrides(base, text, f'mixbench.tune.{method}[{i}]')
        make = self.factory(method, cfg, f'{i:02d}')
        specs = [(f'{name}@{s}', make, s) for s in self.tune_seeds]
        rows = self.members(os.path.join(self.workdir, 'tuning', name, f'{i:02d}'), specs,
                            f'tuning {method} [{text}]')
        scores[text] = float(np.mean([r['scores']['balanced'] for r in rows]))
        self.log(f'tuning {method} [{text}]: mean balanced score {scores[text]:+.4f}')
      chosen = max(scores, key=scores.get)
      saved = {'scores': scores, 'chosen': chosen, 'tag': f'{list(scores).index(chosen):02d}'}
      atomic.write_json(path, saved)
    return continual.overrides(base, saved['chosen'], f'mixbench.tune.{method}'), saved['tag']

  def agent_dir_for(self, cfg, tag: str) -> str:
    """The agent trained with cfg's `agent` section on the trajectories cfg names (collecting them
    first), in agents/<tag>+<key> (`_agent_key`)."""
    if tag == 'given':
      return self.agent_dir
    tdir = os.path.join(self.workdir, 'trajectories')
    if not os.path.exists(os.path.join(tdir, 'dataset')) or not hasattr(self, '_collected'):
      self.log('stage trajectories: collecting the agent\'s experience')
      start = time.time()
      trajectories_lib.collect(self.config, tdir, log=self.log, env=self.env,
                               anchors=self.oracle()['anchors'])
      self.record('trajectories', time.time() - start, min_seconds=5)
      self._collected = True
    tag += _agent_key(cfg)
    adir = os.path.join(self.workdir, 'agents', tag)
    self.log(f'stage agent {tag}: BC + CQL (a trained one is reused)')
    start = time.time()
    trajectories_lib.train_agent(cfg, tdir, adir, quiet=True)
    self.record(f'agent {tag} training', time.time() - start, min_seconds=5)
    return adir

  def _agent_factory(self, agent_dir, env=None):
    env_ref = lambda: env or self.env
    return lambda: deploy.load_mixer(agent_dir, env_ref().roles, env_ref().base_feedback,
                                     env_ref().config.continual.reweights)

  def factory(self, method: str, cfg=None, tag: str = ''):
    """A function making `method`'s Mixer for one member (cfg: a tuned config, tag: its folder)."""
    if cfg is None:
      cfg, tag = self.tuned(method)
    if method == 'uniform':
      return lambda: mixer_lib.Static(None)
    if method in ('best_static', 'best_dynamic'):
      return _schedule_factory(cfg, np.array(self.oracle()['schedules'][method]))
    if method == 'odm':
      c = continual.with_overrides(cfg, {'mixer.name': 'odm'})
      return lambda: registry.build(c, registry.Context(self.env.names, None))
    if method == 'regmix':
      return _static_factory(self.regmix(cfg, tag))
    if method == 'doremi':
      c = continual.with_overrides(cfg, {'mixer.name': method})
      folder = os.path.join(self.workdir, 'offline', tag)
      names, packed = self.env.names, self.env.domains
      mixer = runs.build_mixer(c, folder, (names, np.ones(len(names)), packed))
      return lambda: mixer
    if method in AGENTS:
      return self._agent_factory(self.agent_dir_for(cfg, tag))
    raise ValueError(f'methods: unknown {method!r} (known: {", ".join(METHODS)})')

  def regmix(self, cfg, tag: str) -> np.ndarray:
    """RegMix on this setting's objective: its proxies are continual runs of static Dirichlet
    mixtures from the base model, on the tuning seeds, and it regresses their balanced score."""
    path = os.path.join(self.workdir, 'offline', tag, 'regmix.json')
    if (saved := atomic.read_json(path)) is not None:
      return np.array(saved['weights'])
    c, names = cfg.mixer.regmix, self.env.names
    n = c.num_proxies or 4 * len(names)
    prior_D = np.array([d.train.num_tokens for d in self.env.domains], np.float64)
    mixtures_NxD = regmix_lib.sample_mixtures(prior_D, n, cfg.seed)
    specs = [(f'proxy {i}@{self.tune_seeds[i % len(self.tune_seeds)]}',
              _static_factory(w), self.tune_seeds[i % len(self.tune_seeds)])
             for i, w in enumerate(mixtures_NxD)]
    rows = self.members(os.path.join(self.workdir, 'offline', tag, 'regmix'), specs,
                        f'regmix: {n} proxies')
    y_N = np.array([r['scores']['balanced'] for r in rows])
    weights = regmix_lib.fit_and_search(c, mixtures_NxD, y_N, prior_D, cfg.seed, minimize=False)
    atomic.write_json(path, {'domains': names, 'weights': weights.tolist()})
    return weights

  def _key(self, method: str) -> str:
    """A method's name in chunk keys: a given --agent_dir, or the other settings an agent trained
    on, are part of it (another reruns)."""
    if method == 'agent' and self.agent_dir:
      return f'agent[{os.path.abspath(self.agent_dir)}]'
    return self.agent_base(method)[1] if method in AGENTS else method

  def method(self, method: str) -> list[dict]:
    self.log(f'stage {method}: {len(self.seeds)} seeds')
    make = self.factory(method)  # once: the stages it needs run (or are found) once
    specs = [(f'{self._key(method)}@{s}', make, s) for s in self.seeds]
    return self.members(os.path.join(self.workdir, 'methods', method), specs, method,
                        split='test')

  def row(self, name: str, agents=('agent',)) -> dict:
    """A generalization row: uniform and the agents (no retraining) in another setting."""
    cfg = continual.overrides(self.config, self.config.mixbench.rows[name], f'mixbench.rows.{name}')
    self.log(f'stage row {name}')
    env = closed_loop.environment(cfg, self.log)
    out = {}
    makers = [(a, self._agent_factory(self.agent_dir_for(*self.tuned(a)), env)) for a in agents]
    for method, make in [('uniform', lambda: mixer_lib.Static(None))] + makers:
      specs = [(f'{self._key(method)}@{s}', make, s) for s in self.seeds]
      out[method] = self.members(os.path.join(self.workdir, 'rows', name, method), specs,
                                 f'{name}: {method}', env, split='test')
    return out


def _agent_key(cfg) -> str:
  """'+<fingerprint>' of what shapes an agent beyond W's other stages (AGENT_FIELDS): its section
  and the other settings it trains on. Part of its folder's and its runs' names."""
  t = cfg.trajectories
  text = str(t.get('settings', '')).strip()
  other = {'settings': text, 'num': t.get('settings_num', 128)} if text else {}
  return '+' + continual.fingerprint({'agent': cfg.agent.to_dict(), **other})[:8]


def _static_factory(weights_D):
  w = np.asarray(weights_D, np.float64)
  return lambda: mixer_lib.Static(w)


def _schedule_factory(config, schedule_KxD):
  s = config.continual.steps_per_reweight
  w = np.asarray(schedule_KxD, np.float64)
  return lambda: mixer_lib.Static(w[0], [(k * s, w[k]) for k in range(1, len(w))])


def run(config, workdir: str, methods, rows: bool = True, log=print, agent_dir: str = '',
        overwrite: bool = False) -> dict:
  """Every stage (reusing finished ones); returns results.json's content (see experiments/mixbench)."""
  check(config, methods)
  workdir_lib.claim(workdir, setting_config(config), overwrite, resumable=AGENT_FIELDS)
  bench = Bench(config, workdir, log, agent_dir)
  bench.oracle()
  results = {'seeds': bench.seeds, 'methods': {}, 'rows': {}, 'weights': {}, 'domains':
             bench.env.names, 'roles': bench.env.roles}
  for method in methods:
    member_rows = bench.method(method)
    results['methods'][method] = _by_seed(member_rows)
    results['weights'][method] = [r['weights'] for r in member_rows]
  if rows:
    for name in config.mixbench.rows:
      agents = [m for m in AGENTS if m in methods] or ['agent']
      results['rows'][name] = {m: _by_seed(r) for m, r in bench.row(name, agents).items()}
  best = bench.oracle()
  results['oracle'] = {k: best[k] for k in ('best_static', 'best_dynamic', 'schedules', 'scores',
                                            'tune_seeds')}
  if bench.env.final_sets['val'] is not None:  # what chose choices.metric (the report's table)
    results['metric_snr'] = {'chosen': closed_loop.choice_metric(config),
                             'tables': bench.metric_tables()}
  results['timings'] = atomic.read_json(os.path.join(workdir, 'timings.json')) or {}
  results['trajectories'] = config.trajectories.num
  workdir_lib.release_replaced(workdir)
  return results


def _by_seed(member_rows) -> dict:
  return {k: [r['scores'][k] for r in member_rows] for k in ('balanced', 'source', 'target')}
