"""TaskPGM end to end: base model, single-task population, probes, potentials, mixtures, fine-tunes.

Run by `python -m experiments.taskpgm --config=configs/taskpgm.py --workdir=W`.
Stages, each cached in W so a re-run resumes: the base model (shared cache, see experiments/continual);
W/single_task (one fine-tune per task, as a population); W/potentials.npz (unary, jsd, pmi, task
names); W/mixtures.json (every method's mixture) and W/mixture.json (TaskPGM's, task -> weight);
W/finetune (the base fine-tuned on each mixture, same budget, as a population); W/results.json
(method -> evaluation task -> test accuracy), W/results.md, and W/potentials.png|svg (heatmaps and the
task graph).
"""

import json
import math
import os

from flax import nnx
import jax
import ml_collections
import numpy as np

from experiments import continual
from experiments import evaluate as evaluate_lib
from experiments import population as population_lib
from experiments import runtime
from mixing import static
from mixing.data import domains as domains_lib
from mixing.data import eval_suites
from mixing.data import load as load_lib
from mixing.data import tokenizer
from mixing.taskpgm import energy
from mixing.taskpgm import greedy
from mixing.taskpgm import potentials


METHODS = ('uniform', 'size-proportional', 'temperature', 'unary-only', 'taskpgm-jsd',
           'taskpgm-pmi', 'greedy')


def check(config):
  t = config.taskpgm
  tasks, _ = load_lib.parse_mixture(t.tasks, 'taskpgm.tasks')
  for name in tasks:
    if name not in config.domain_files:
      domains_lib.check_builtin_name(name)
  evals, _ = load_lib.parse_mixture(t.eval_tasks, 'taskpgm.eval_tasks') if t.eval_tasks else ([], [])
  for name in evals:
    if name not in tasks:
      raise ValueError(f'taskpgm.eval_tasks: {name!r} is not in taskpgm.tasks')
  if not 0 < t.val_fraction < 1:
    raise ValueError(f'taskpgm.val_fraction: must be in (0, 1), got {t.val_fraction}')
  if t.unary not in ('val_loss', 'size'):
    raise ValueError(f"taskpgm.unary: 'val_loss' or 'size', got {t.unary!r}")
  energy.check_problem(np.zeros(1), np.zeros((1, 1)), t.lam, t.tau)
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


def _teacher_forced(graphdef, params, items, batch: int = 32):
  """For each item: target-token NLLs and the next-token distributions at the target positions."""
  forward = jax.jit(lambda p, x: jax.nn.softmax(nnx.merge(graphdef, p)(x), axis=-1))
  nll, probs = [], []
  for start in range(0, len(items), batch):
    chunk = items[start:start + batch]
    seqs = [(tokenizer.encode(it.prompt, bos=True), tokenizer.encode(' ' + it.target.strip(),
                                                                      eos=True)) for it in chunk]
    length = max(len(a) + len(b) for a, b in seqs) - 1
    tokens = np.full((len(chunk), length), tokenizer.PAD, np.int32)
    for i, (a, b) in enumerate(seqs):
      ids = np.concatenate([a, b])[:-1]
      tokens[i, :len(ids)] = ids
    probs_BxLxV = np.asarray(forward(params, tokens))
    for i, (a, b) in enumerate(seqs):
      positions = np.arange(len(a) - 1, len(a) + len(b) - 1)
      p_TxV = probs_BxLxV[i, positions]
      probs.append(p_TxV)
      nll.append(float(-np.log(np.maximum(p_TxV[np.arange(len(b)), b], 1e-30)).mean()))
  return np.array(nll), probs


def potentials_stage(config, workdir, tasks, domains, suite_items, base_params, log):
  path = os.path.join(workdir, 'potentials.npz')
  if os.path.exists(path):
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  t = config.taskpgm
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.steps = cfg.checkpoint_every = t.single_task_steps
  pop = population_lib.Population(cfg, os.path.join(workdir, 'single_task'), np.eye(len(tasks)),
                                  domains=domains, init_params=base_params, quiet=False,
                                  label=f'{len(tasks)} single-task fine-tunes')
  pop.run()
  val = [(name, it) for name, (v, _) in suite_items.items() for it in v]
  rng = np.random.default_rng(config.data.seed)
  probe_ids = sorted(rng.choice(len(val), min(t.probes, len(val)), replace=False).tolist())
  gain_per_suite = lambda nll_base, nll: np.mean([
      np.mean([b - m for (name, _), b, m in zip(val, nll_base, nll) if name == s])
      for s in suite_items])
  base_nll, _ = _teacher_forced(pop.graphdef, base_params, [it for _, it in val])
  unary, probs = [], []
  for k in range(len(tasks)):
    nll, p = _teacher_forced(pop.graphdef, pop.params(k), [it for _, it in val])
    unary.append(gain_per_suite(base_nll, nll))
    probs.append(np.concatenate([p[i] for i in probe_ids]))
    log(f'single-task model {tasks[k]}: validation NLL gain {unary[-1]:+.4f}')
  # Every probe counts the same, however many target positions it has.
  weights_P = np.concatenate([np.full(len(p[i]), 1.0 / len(p[i])) for i in probe_ids])
  probs_NxPxV = np.stack(probs).astype(np.float32)
  sizes = np.array([d.train.num_tokens for d in domains], np.float64)
  out = {'tasks': np.array(tasks), 'unary': np.array(unary), 'sizes': sizes,
         'jsd': potentials.jsd_matrix(probs_NxPxV, weights_P),
         'pmi': potentials.pmi_matrix(probs_NxPxV, weights_P)}
  np.savez(path + '.tmp.npz', **out)
  os.replace(path + '.tmp.npz', path)
  return out


def mixtures(config, pots) -> tuple[dict, dict]:
  """Every method's mixture over the pool, and the discrete variant's report."""
  t = config.taskpgm
  tasks = [str(x) for x in pots['tasks']]
  u = pots['unary'] if t.unary == 'val_loss' else np.log10(pots['sizes'])
  u = u / max(np.abs(u).max(), 1e-12)  # scale-free: lam and tau mean the same for any unary
  r = {kind: energy.redundancy(kind, jsd_NxN=pots['jsd'], pmi_NxN=pots['pmi'])
       for kind in ('jsd', 'pmi')}
  solve = lambda lam, kind: energy.mirror_descent(u, r[kind], lam, t.tau)[0]
  subset, value = greedy.greedy_select(u, r[t.redundancy], t.lam, t.budget)
  ratio = greedy.submodularity_ratio(u, r[t.redundancy], t.lam, t.budget)
  out = {
      'uniform': np.full(len(tasks), 1.0 / len(tasks)),
      'size-proportional': static.temperature_weights(pots['sizes'], 1.0),
      'temperature': static.temperature_weights(pots['sizes'], t.temperature),
      'unary-only': solve(0.0, t.redundancy),
      'taskpgm-jsd': solve(t.lam, 'jsd'),
      'taskpgm-pmi': solve(t.lam, 'pmi'),
      'greedy': greedy.resolve_mixture(u, r[t.redundancy], t.lam, t.tau, subset),
  }
  discrete = {'selected': [tasks[i] for i in subset], 'value': value, **ratio}
  return {m: dict(zip(tasks, map(float, w))) for m, w in out.items()}, discrete


def finetune_stage(config, workdir, tasks, domains, mixes, suite_items, base_params, log):
  path = os.path.join(workdir, 'results.json')
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  t = config.taskpgm
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.steps = cfg.checkpoint_every = t.finetune_steps
  weights = np.array([[mixes[m][name] for name in tasks] for m in METHODS])
  pop = population_lib.Population(cfg, os.path.join(workdir, 'finetune'), weights,
                                  [config.seed] * len(METHODS), domains=domains,
                                  init_params=base_params, quiet=False,
                                  label=f'{len(METHODS)} mixtures, same budget')
  pop.run()
  results = {}
  for k, method in enumerate(('base',) + METHODS):
    params = base_params if method == 'base' else pop.params(k - 1)
    results[method] = {}
    for name, (_, test) in suite_items.items():
      max_new = max(len(it.target.encode()) for it in test) + 4
      outs = evaluate_lib.generate(pop.graphdef, params, [it.prompt for it in test], max_new)
      results[method][name] = float(np.mean([o.strip() == it.target.strip()
                                             for o, it in zip(outs, test)]))
    results[method]['average'] = float(np.mean(list(results[method].values())))
    log(f'{method}: average test accuracy {results[method]["average"]:.4f}')
  with open(path + '.tmp', 'w') as f:
    json.dump(results, f, indent=1)
  os.replace(path + '.tmp', path)
  return results


def results_table(results: dict) -> str:
  suites_ = [k for k in next(iter(results.values())) if k != 'average']
  best = {s: max(r[s] for m, r in results.items() if m != 'base') for s in suites_ + ['average']}
  lines = ['| method | ' + ' | '.join(s.split('/')[-1] for s in suites_) + ' | average |',
           '|---|' + '---:|' * (len(suites_) + 1)]
  for method, r in results.items():
    cells = [f'**{r[s]:.3f}**' if method != 'base' and r[s] == best[s] else f'{r[s]:.3f}'
             for s in suites_ + ['average']]
    lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot_potentials(pots, out: str):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tasks = [str(x).replace('rephrase/bbh/', 'reph/').replace('bbh/', '') for x in pots['tasks']]
  n = len(tasks)
  fig, axes = plt.subplots(1, 3, figsize=(18, 6))
  for ax, key, title in ((axes[0], 'jsd', 'Jensen-Shannon divergence'), (axes[1], 'pmi', 'PMI')):
    im = ax.imshow(pots[key], cmap='viridis')
    ax.set_xticks(range(n), tasks, rotation=90, fontsize=7)
    ax.set_yticks(range(n), tasks, fontsize=7)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
  # The task graph: nodes sized by unary utility, edges for the most redundant pairs (low JSD).
  ax = axes[2]
  angle = 2 * np.pi * np.arange(n) / n
  xy = np.stack([np.cos(angle), np.sin(angle)], 1)
  redundancy = 1 - pots['jsd'] / math.log(2)
  np.fill_diagonal(redundancy, -np.inf)
  cut = np.sort(redundancy[np.triu_indices(n, 1)])[::-1][:max(n, 1)][-1]
  for i in range(n):
    for j in range(i + 1, n):
      if redundancy[i, j] >= cut:
        ax.plot(*xy[[i, j]].T, color='tab:red', alpha=float(np.clip(redundancy[i, j], 0.2, 1)))
  u = pots['unary']
  ax.scatter(*xy.T, s=200 + 800 * (u - u.min()) / max(np.ptp(u), 1e-9), c=u, cmap='coolwarm',
             zorder=3)
  for (x, y), name in zip(xy, tasks):
    ax.annotate(name, (x, y), fontsize=7, ha='center', va='bottom', xytext=(0, 9),
                textcoords='offset points')
  ax.set_title('task graph: node = utility, edge = most redundant pairs')
  ax.axis('off')
  fig.tight_layout()
  for ext in ('png', 'svg'):
    fig.savefig(f'{out}.{ext}')
  plt.close(fig)


def run(config, workdir: str, log=print) -> dict:
  tasks, evals, file_suites = check(config)
  os.makedirs(workdir, exist_ok=True)
  _, _, domains = runtime.load_run_domains(config)
  suite_items = suites(config, domains, evals, file_suites)
  base_params = continual.base_params(config, spec=config.taskpgm)
  pots = potentials_stage(config, workdir, tasks, domains, suite_items, base_params, log)
  mixes, discrete = mixtures(config, pots)
  main_method = f'taskpgm-{config.taskpgm.redundancy}'
  for name, obj in (('mixtures.json', {'mixtures': mixes, 'discrete': discrete}),
                    ('mixture.json', mixes[main_method])):
    with open(os.path.join(workdir, name), 'w') as f:
      json.dump(obj, f, indent=1)
  log(f'greedy picked {discrete["selected"]} (submodularity ratio {discrete["gamma"]:.3f}, '
      f'guarantee {discrete["guarantee"]:.3f} of the optimum)')
  results = finetune_stage(config, workdir, tasks, domains, mixes, suite_items, base_params, log)
  text = (f'# TaskPGM: test exact-match accuracy, same fine-tuning budget '
          f'({config.taskpgm.finetune_steps} steps)\n\n{results_table(results)}\n\n'
          f'Discrete variant: {discrete["selected"]}; submodularity ratio gamma = '
          f'{discrete["gamma"]:.3f}; guarantee 1 - e^-gamma = {discrete["guarantee"]:.3f}.\n')
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write(text)
  plot_potentials(pots, os.path.join(workdir, 'potentials'))
  return results
