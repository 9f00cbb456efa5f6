"""TaskPGM end to end: base model, single-task population, probes, potentials, mixtures, fine-tunes.

Run by `python -m experiments.taskpgm --config=configs/taskpgm.py --workdir=W`.
Stages, each cached in W so a re-run resumes: the base model (shared cache, see experiments/recipes/continual.py);
W/single_task (one fine-tune per task, as a population); W/potentials.npz (unary, jsd, pmi, task
names); W/mixtures.json (every method's mixture) and W/mixture.json (TaskPGM's, task -> weight);
W/finetune (the base fine-tuned on each mixture, same budget, as a population); W/results.json
(method -> evaluation task -> test accuracy), W/results.md, and W/potentials.png|svg (heatmaps and the
task graph).
"""

import functools
import json
import math
import os
import time

from flax import nnx
import jax
import ml_collections
import numpy as np

from experiments.training import atomic
from experiments.training import choice_eval
from experiments.recipes import continual
from experiments.training import evaluate as evaluate_lib
from experiments.training import population as population_lib
from experiments.training import runtime
from experiments.training import state as state_lib
from experiments.training import validate
from experiments.training import workdir as workdir_lib
from mixing.mixers import static
from mixing.agent import features
from mixing.data import choices
from mixing.data import domains as domains_lib
from mixing.data import eval_suites
from mixing.data import load as load_lib
from mixing.data import tokenizer
from mixing.taskpgm import energy
from mixing.taskpgm import greedy
from mixing.taskpgm import potentials


UNARY = ('val_choice', 'val_acc', 'val_loss', 'size')  # see configs/taskpgm.py
POTENTIAL_KEYS = ('tasks', 'sizes', 'val_choice_gain', 'val_acc_gain', 'val_loss_gain', 'jsd',
                  'pmi')
EXHAUSTIVE_MAX_SUBSETS = 2_000_000  # greedy is compared with exhaustive search up to this many
# domain_mixture's code version: bumped when its outputs change, so older caches are refused.
DOMAIN_MIXTURE_VERSION = 1
METHODS = ('uniform', 'size-proportional', 'temperature', 'unary-only', 'pairwise-only',
           'taskpgm-jsd', 'taskpgm-pmi', 'greedy')


def check_potentials(t):
  """The fields of a `taskpgm` section that both pipelines read (`run`, `domain_mixture`)."""
  for field in ('single_task_steps', 'probes', 'probe_positions'):
    if field in t:  # probe_positions: domain_mixture's only
      validate.check_number(f'taskpgm.{field}', t[field], int, 0, open_low=True)
  if t.redundancy not in ('jsd', 'pmi'):
    raise ValueError(f"taskpgm.redundancy: 'jsd' or 'pmi', got {t.redundancy!r}")
  validate.check_type('taskpgm.self_redundancy', t.self_redundancy, bool)
  energy.check_problem(np.zeros(1), np.zeros((1, 1)), t.lam, t.tau)


def check(config):
  """Every field `run` reads, before anything is trained; returns (tasks, evals, file suites)."""
  validate.check_run(config)
  t = config.taskpgm
  check_potentials(t)
  for field in ('base_steps', 'finetune_steps'):
    validate.check_number(f'taskpgm.{field}', t[field], int, 0, open_low=True)
  validate.check_number('taskpgm.temperature', t.temperature, float, 0, open_low=True)
  sources, _ = load_lib.parse_mixture(t.sources, 'taskpgm.sources')
  tasks, _ = load_lib.parse_mixture(t.tasks, 'taskpgm.tasks')
  for name in sources + tasks:
    if name not in config.domain_files:
      domains_lib.check_builtin_name(name)
  evals, _ = load_lib.parse_mixture(t.eval_tasks, 'taskpgm.eval_tasks') if t.eval_tasks else ([], [])
  for name in evals:
    if name not in tasks:
      raise ValueError(f'taskpgm.eval_tasks: {name!r} is not in taskpgm.tasks')
  if not 0 < t.val_fraction < 1:
    raise ValueError(f'taskpgm.val_fraction: must be in (0, 1), got {t.val_fraction}')
  if t.unary not in UNARY:
    raise ValueError(f'taskpgm.unary: one of {", ".join(UNARY)}, got {t.unary!r}')
  greedy._check_budget(t.budget, None, len(tasks))  # pylint: disable=protected-access
  files = [f for f in t.eval_files.split(',') if f]
  return tasks, evals, [(eval_suites.suite_name(f), eval_suites.load_eval_file(f)) for f in files]


def suites(config, domains, evals, file_suites):
  """name -> (validation items, test items), each domain's eval items split by a seeded split."""
  t = config.taskpgm
  by_name = {d.name: d.domain for d in domains}
  out = {}
  for name, items in [(n, list(by_name[n].items)) for n in evals] + file_suites:
    out[name] = eval_suites.split_items(items, t.val_fraction, config.data.seed, name)
  return out


@functools.partial(jax.jit, static_argnums=0)
def _next_token_probs(graphdef, params, tokens_BxL):
  return jax.nn.softmax(nnx.merge(graphdef, params)(tokens_BxL), axis=-1)


def _teacher_forced(graphdef, params, items, max_len: int, tok: tokenizer.Tokenizer,
                    batch: int = 32):
  """For each item: target-token NLLs and the next-token distributions at the target positions.

  Each row holds prompt + target cut from the left to max_len tokens (the training length: the
  model never saw later positions), so every batch has one shape.
  """
  nll, probs = [], []
  for start in range(0, len(items), batch):
    chunk = items[start:start + batch]
    seqs = [(tok.encode(it.prompt, bos=True), tok.encode(' ' + it.target.strip(), eos=True))
            for it in chunk]
    tokens = np.full((batch, max_len), tok.pad_id, np.int32)
    starts = []
    for i, (a, b) in enumerate(seqs):
      ids = np.concatenate([a, b])[:-1][-max_len:]
      tokens[i, :len(ids)] = ids
      starts.append(len(ids) - len(b))  # the first target position
    probs_BxLxV = np.asarray(_next_token_probs(graphdef, params, tokens))
    for i, (_, b) in enumerate(seqs):
      p_TxV = probs_BxLxV[i, starts[i]:starts[i] + len(b)]
      probs.append(p_TxV)
      nll.append(float(-np.log(np.maximum(p_TxV[np.arange(len(b)), b], 1e-30)).mean()))
  return np.array(nll), probs


def _write_json(path: str, obj) -> None:
  runtime.on_process_0(f'write {path}', atomic.write_json, path, obj)


def _write_npz(path: str, arrays: dict) -> None:
  runtime.on_process_0(f'write {path}', atomic.replace, path, lambda tmp: np.savez(tmp, **arrays))


def accuracy(graphdef, params, items, tok: tokenizer.Tokenizer) -> float:
  """Exact match of greedy decoding after stripping whitespace."""
  max_new = max(len(tok.encode(it.target)) for it in items) + 4
  return evaluate_lib.exact_match(graphdef, params, items, max_new, tok=tok)


def choice_sets(config, suite_items) -> tuple:
  """(validation, test) choice sets: each suite's items as multiple choice over its answers."""
  pool = {name: [it.target for it in v + t] for name, (v, t) in suite_items.items()}
  build = lambda part: choices.build_items(
      [(name, [(it.prompt, it.target) for it in parts[part]], pool[name])
       for name, parts in suite_items.items()], config.seq_len, config.data.seed,
      config.taskpgm.num_options, state_lib.run_tokenizer(config))
  return build(0), build(1)


def choice_scores_K(graphdef, params, choice_set, members: bool) -> list[dict]:
  """Per model: suite -> choice_acc_norm (log-likelihood of the options, length-normalized)."""
  logprob = choice_eval.make_scorer(graphdef, choice_set, members=members)(params)
  rows = choices.metrics_K(logprob if members else logprob[None], choice_set)
  return [{name: m[f'eval/{name}/choice_acc_norm'] for name in choice_set.names} for m in rows]


def _needs_em(t) -> bool:
  return 'val_acc' in (t.unary, *str(t.get('select', {}).get('unary', '')).split(','))


def potentials_stage(config, workdir, tasks, domains, suite_items, base_params, log):
  path = os.path.join(workdir, 'potentials.npz')
  t = config.taskpgm
  if os.path.exists(path):
    with np.load(path) as z:
      if set(POTENTIAL_KEYS) <= set(z.files) and not (
          _needs_em(t) and np.isnan(z['val_acc_gain']).any()):
        return {k: z[k] for k in z.files}
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.steps = cfg.checkpoint_every = t.single_task_steps
  pop = population_lib.Population(cfg, os.path.join(workdir, 'single_task'), np.eye(len(tasks)),
                                  domains=domains, init_params=base_params, quiet=False,
                                  label=f'{len(tasks)} single-task fine-tunes')
  pop.run()
  if t.get('unary_items', 0):  # the gains and probes read the first unary_items of each val part
    suite_items = {n: (v[:t.unary_items], test) for n, (v, test) in suite_items.items()}
  val = [(name, it) for name, (v, _) in suite_items.items() for it in v]
  rng = np.random.default_rng(config.data.seed)
  probe_ids = sorted(rng.choice(len(val), min(t.probes, len(val)), replace=False).tolist())
  gain_per_suite = lambda nll_base, nll: np.mean([
      np.mean([b - m for (name, _), b, m in zip(val, nll_base, nll) if name == s])
      for s in suite_items])
  tok = state_lib.run_tokenizer(config)
  val_acc = lambda params: np.array([accuracy(pop.graphdef, params, v, tok)
                                     for v, _ in suite_items.values()])
  val_set, _ = choice_sets(config, suite_items)
  mean_choice = lambda rows: np.array([np.mean(list(r.values())) for r in rows])
  base_choice = mean_choice(choice_scores_K(pop.graphdef, base_params, val_set, False))[0]
  choice_gain = mean_choice(choice_scores_K(pop.graphdef, pop.state.params, val_set, True))
  base_nll, base_p = _teacher_forced(pop.graphdef, base_params, [it for _, it in val],
                                     config.seq_len, tok)
  # A large vocabulary: each probe position keeps the base model's top-k tokens plus the rest's mass.
  support = (potentials.top_k_support(np.concatenate([base_p[i] for i in probe_ids]),
                                      t.probe_top_k) if t.get('probe_top_k', 0) else None)
  base_acc = val_acc(base_params) if _needs_em(t) else None
  loss_gain, acc_gain, probs = [], [], []
  for k in range(len(tasks)):
    params = pop.params(k)
    nll, p = _teacher_forced(pop.graphdef, params, [it for _, it in val], config.seq_len, tok)
    loss_gain.append(gain_per_suite(base_nll, nll))
    acc_gain.append(float(np.mean(val_acc(params) - base_acc)) if _needs_em(t) else np.nan)
    probs.append(np.concatenate([p[i] for i in probe_ids]))
    if support is not None:
      probs[-1] = potentials.reduce_to_support(probs[-1], support)
    log(f'single-task model {tasks[k]}: validation choice accuracy gain '
        f'{choice_gain[k] - base_choice:+.4f}, NLL gain {loss_gain[-1]:+.4f}')
  # Every probe counts the same, however many target positions it has.
  weights_P = np.concatenate([np.full(len(p[i]), 1.0 / len(p[i])) for i in probe_ids])
  probs_NxPxV = np.stack(probs).astype(np.float32)
  sizes = np.array([d.train.num_tokens for d in domains], np.float64)
  out = {'tasks': np.array(tasks), 'sizes': sizes, 'val_acc_gain': np.array(acc_gain),
         'val_choice_gain': choice_gain - base_choice, 'val_loss_gain': np.array(loss_gain),
         'jsd': potentials.jsd_matrix(probs_NxPxV, weights_P),
         'pmi': potentials.pmi_matrix(probs_NxPxV, weights_P)}
  out['unary'] = gains(out)[t.unary]
  _write_npz(path, out)
  return out


def gains(pots) -> dict:
  """unary kind -> each task's raw utility (see configs/taskpgm.py)."""
  return {'val_choice': pots['val_choice_gain'], 'val_acc': pots['val_acc_gain'],
          'val_loss': pots['val_loss_gain'], 'size': np.log10(pots['sizes'])}


def unary(config, pots) -> np.ndarray:
  """The configured utility, scaled to max |u| = 1 so lam and tau mean the same for any unary."""
  return _unit_scale(gains(pots)[config.taskpgm.unary])


def _unit_scale(u_N):
  return u_N / max(np.abs(u_N).max(), 1e-12)


def hyperparameters(t) -> dict:
  """The energy's hyperparameters a `taskpgm` section sets (what selection varies)."""
  return {'redundancy': t.redundancy, 'lam': float(t.lam), 'tau': float(t.tau), 'unary': t.unary}


def mixtures(config, pots, hp: dict | None = None, timings: dict | None = None,
             exhaustive: bool = False) -> tuple[dict, dict]:
  """Every method's mixture over the pool at hyperparameters `hp` (default: config.taskpgm's),
  and the discrete variant's report (with exhaustive search's optimum if asked, where C(N, budget)
  is at most EXHAUSTIVE_MAX_SUBSETS); `timings` (if given) gets each part's wall time in seconds."""
  t = config.taskpgm
  hp = dict(hyperparameters(t), **(hp or {}))
  tasks = [str(x) for x in pots['tasks']]
  timings = {} if timings is None else timings
  clock = [time.perf_counter()]

  def lap(name):
    now = time.perf_counter()
    timings[name] = timings.get(name, 0.0) + now - clock[0]
    clock[0] = now

  u = _unit_scale(gains(pots)[hp['unary']])
  r = {(kind, own): energy.redundancy(kind, jsd_NxN=pots['jsd'], pmi_NxN=pots['pmi'],
                                      self_term=own)
       for kind in ('jsd', 'pmi') for own in (True, False)}
  solve = lambda lam, kind, own=t.self_redundancy: energy.mirror_descent(
      u, r[kind, own], lam, hp['tau'])[0]
  out = {
      'uniform': np.full(len(tasks), 1.0 / len(tasks)),
      'size-proportional': static.temperature_weights(pots['sizes'], 1.0),
      'temperature': static.temperature_weights(pots['sizes'], t.temperature),
      'unary-only': solve(0.0, hp['redundancy']),
      'pairwise-only': solve(hp['lam'], hp['redundancy'], False),
      'taskpgm-jsd': solve(hp['lam'], 'jsd'),
      'taskpgm-pmi': solve(hp['lam'], 'pmi'),
  }
  lap('solve')
  # The set function's lam is lam / budget: for a uniform mixture over k tasks the energy weighs a
  # pair by lam / k^2 against u_i / k, which is F(S) scaled by 1 / k with lam / k per pair.
  set_lam = hp['lam'] / t.budget
  r_set = r[hp['redundancy'], False]  # F(S) reads R off its diagonal only
  subset, value = greedy.greedy_select(u, r_set, set_lam, t.budget)
  if not subset:  # no task has a positive gain; a mixture still needs one: the most useful
    subset = [int(np.argmax(u))]
    value = greedy.value(subset, u, r_set, set_lam)
  out['greedy'] = greedy.resolve_mixture(u, r[hp['redundancy'], t.self_redundancy], hp['lam'],
                                         hp['tau'], subset)
  lap('greedy')
  ratio = greedy.submodularity_ratio(u, r_set, set_lam, t.budget)
  lap('gamma')
  discrete = {'selected': [tasks[i] for i in subset], 'value': value, 'set_lam': set_lam, **ratio}
  if exhaustive and math.comb(len(tasks), t.budget) <= EXHAUSTIVE_MAX_SUBSETS:
    discrete['exhaustive_value'] = greedy.exhaustive_value(u, r_set, set_lam, t.budget)
    lap('exhaustive')
  return {m: dict(zip(tasks, map(float, w))) for m, w in out.items()}, discrete


def guarantee_text(discrete: dict) -> str:
  text = (f'submodularity ratio gamma = {discrete["gamma"]:.3f} ({discrete["kind"]}), '
          f'guarantee 1 - e^-gamma = {discrete["guarantee"]:.3f} of the optimum')
  if discrete['applies']:
    return text
  return (text + ', which does not apply here: F is not monotone within the budget, so greedy '
          'stopped at the last positive marginal gain')


def domain_mixture_config(config):
  """What shapes domain_mixture's outputs (workdir.claim's record in its folder): the config less
  the other stages' sections and the run's own mixer, and the base model it starts from."""
  return continual.stage_config(
      'taskpgm_domain_mixture', DOMAIN_MIXTURE_VERSION,
      continual.without(config, 'mixer', 'agent', 'trajectories', 'init_from'),
      base=continual.base_dir(config))


def domain_mixture(config, workdir: str, log=print) -> dict:
  """TaskPGM over the domains of a continual config (a `taskpgm` section beside `continual`).

  The tasks are the run's domains; each single-domain model continues from the continual base model
  for taskpgm.single_task_steps steps (one population). u_i is that model's balanced score over the
  base (held-out loss improvements of the source and target fields, experiments/recipes/continual.py), the
  probes are taskpgm.probes held-out rows spread over the domains, each read at up to
  taskpgm.probe_positions scored positions. Cached: W/potentials.npz and W/mixture.json, reused
  only for the config (and DOMAIN_MIXTURE_VERSION) W/config.json records (`workdir.claim`).
  """
  t = config.taskpgm
  workdir_lib.claim(workdir, domain_mixture_config(config))
  path = os.path.join(workdir, 'mixture.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  names, _, domains = runtime.load_run_domains(config)
  base_params = continual.base_params(config)
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.steps = cfg.checkpoint_every = t.single_task_steps
  cfg.mixer.name = 'static'
  pop = population_lib.Population(cfg, os.path.join(workdir, 'single_domain'), np.eye(len(names)),
                                  domains=domains, init_params=base_params, quiet=False,
                                  label=f'TaskPGM: {len(names)} single-domain fine-tunes')
  loss_KxD = pop.run()
  roles = continual.roles(config)
  base = {k: v for k, v in continual.base_metrics(config).items() if k.endswith('/loss')}
  u = np.array([features.scores({f'eval/{n}/loss': l for n, l in zip(names, loss_D)}, base, roles,
                                config.continual.balance)['balanced'] for loss_D in loss_KxD])
  rows = np.concatenate([b['inputs_BxL'] for b in pop.eval_set])
  mask = np.concatenate([b['mask_BxL'] for b in pop.eval_set])
  rng = np.random.default_rng(config.data.seed)
  probe_rows = rng.choice(np.flatnonzero(mask.sum(1) > 0), min(t.probes, len(rows)), replace=False)
  positions = [np.sort(rng.permutation(np.flatnonzero(mask[r]))[:t.probe_positions])
               for r in probe_rows]
  probs_NxPxV = []
  for k in range(len(names)):  # one forward pass over every probe row per model
    probs_RxLxV = np.asarray(_next_token_probs(pop.graphdef, pop.params(k), rows[probe_rows]))
    probs_NxPxV.append(np.concatenate([p_LxV[pos] for p_LxV, pos in zip(probs_RxLxV, positions)]))
  probs_NxPxV = np.stack(probs_NxPxV)
  weights_P = np.concatenate([np.full(len(pos), 1.0 / len(pos)) for pos in positions])
  pots = {'tasks': np.array(names), 'unary': u, 'sizes': np.array(
              [d.train.num_tokens for d in domains], np.float64),
          'jsd': potentials.jsd_matrix(probs_NxPxV, weights_P),
          'pmi': potentials.pmi_matrix(probs_NxPxV, weights_P)}
  _write_npz(os.path.join(workdir, 'potentials.npz'), pots)
  r = energy.redundancy(t.redundancy, jsd_NxN=pots['jsd'], pmi_NxN=pots['pmi'],
                        self_term=t.self_redundancy)
  w, _ = energy.mirror_descent(_unit_scale(u), r, t.lam, t.tau)
  mixture = dict(zip(names, map(float, w)))
  for name, ui in zip(names, u):
    log(f'TaskPGM: {name} utility {ui:+.4f} -> weight {mixture[name]:.3f}')
  _write_json(path, mixture)
  return mixture
