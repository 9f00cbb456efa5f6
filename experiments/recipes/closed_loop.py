"""Continual runs as population members, each re-weighted by its own Mixer: the evaluation environment.

An `Environment` is one continual setting: the base model (trained on `continual.sources`, cached),
the domain space, and what a run is scored on. A member's feedback at every re-weighting step is its
held-out loss per domain and, when `config.choices.feedback_items` > 0, its multiple-choice score
per domain on a small feedback set of items (`choices.metric`: options ranked by log-likelihood,
length-normalized as lm-eval-harness's `acc_norm`, or the probability of the correct option among
them, 'prob'; mixing/data/choices.py); that score is what the agent sees as 'eval/<d>/accuracy'. A finished run is scored on `choices.test_items` other items per domain and held-out loss on
`choices.test_eval_batches` other batches per domain: the 'test' split for reported runs, a 'val'
split of as many further items and rows for runs that choose something (the oracle, tuning, RegMix's
proxies), so nothing reported is chosen on its own items: per side, the mean relative loss improvement over the base model,
averaged 50/50 with the mean accuracy gain (features.score_arrays).

`drive` trains P members from the base model for `continual.reweights` re-weighting steps of
`continual.steps_per_reweight` optimizer steps in one vmapped population. Before each step, member m's
Mixer gets an Observation (its train losses since the last step, its latest feedback, the weights in
force) and returns its weights: static mixtures, schedules, ODM and a deployed agent all run the same
way, so a comparison of methods is one population per chunk of (method, seed) members. A member's
seed is its data stream (every member starts from the same base model). With `record=True` it also
returns each member's trajectory as the agent's dataset stores it (features, actions, rewards).
"""

import dataclasses
import os
import shutil
import tempfile

import jax
import numpy as np

from experiments.recipes import continual
from experiments.training import choice_eval
from experiments.training import evaluate as evaluate_lib
from experiments.training import population as population_lib
from experiments.training import runtime
from mixing import mixer as mixer_lib
from mixing.agent import features
from mixing.data import choices as choices_lib
from mixing.data import sampler as sampler_lib


@dataclasses.dataclass
class Environment:
  config: object
  names: list
  roles: dict
  domains: list  # packed domains (mixing/data/packing.PackedDomain)
  base_params: object
  space: features.DomainSpace  # built from base_feedback: what the agent compares against
  base_feedback: dict  # the base model's held-out loss and feedback accuracy per domain
  base_final: dict  # split ('val', 'test') -> the base model's final-evaluation metrics
  feedback_set: choices_lib.ChoiceSet | None
  final_sets: dict  # split -> ChoiceSet (None: loss only)

  @property
  def infos(self):
    return [mixer_lib.DomainInfo(n, d.train.num_tokens) for n, d in zip(self.names, self.domains)]


SPLITS = ('val', 'test')  # final evaluations: 'val' scores tuning-seed runs, 'test' reported ones


def _choice_sets(config, domains):
  """(feedback set, {split: set}): disjoint items, in held-out order feedback, test, val."""
  c = config.get('choices')
  if c is None or not c.test_items:
    return None, {split: None for split in SPLITS}
  raw = [d.domain for d in domains]
  build = lambda n, skip: choices_lib.build(raw, n, config.seq_len, config.data.seed,
                                            c.num_options, c.option_bytes, skip=skip,
                                            cuts_per_doc=c.cuts_per_doc,
                                            tok=domains[0].tokenizer)
  feedback = build(c.feedback_items, 0) if c.feedback_items else None
  return feedback, {'test': build(c.test_items, c.feedback_items),
                    'val': build(c.test_items, c.feedback_items + c.test_items)}


def final_rows(config, split: str) -> tuple[int, int]:
  """(first row, batches) of a split's held-out rows per domain: after the feedback's (and, for
  'val', the test's) rows, so no run is scored on rows it was given as feedback."""
  c = config.get('choices')
  batches = c.test_eval_batches if c is not None and c.test_eval_batches else config.eval_batches
  first = config.eval_batches + (batches if split == 'val' else 0)
  return first * config.batch_size, batches


def choice_metric(config) -> str:
  """`choices.metric` (default 'acc_norm'): the choices.metrics score the agent and scores read."""
  c = config.get('choices')
  metric = c.get('metric', 'acc_norm') if c is not None else 'acc_norm'
  if metric not in choices_lib.METRICS:
    raise ValueError(f'choices.metric: expected one of {", ".join(choices_lib.METRICS)}, '
                     f'got {metric!r}')
  return metric


def check_agent_metric(config, agent_meta: dict, agent_dir: str) -> None:
  """ValueError unless an agent (its saved meta) was trained on the choice metric config feeds back
  (agents saved before the field: 'acc_norm'); its accuracy features would mean something else."""
  trained, here = agent_meta.get('choice_metric', 'acc_norm'), choice_metric(config)
  if trained != here:
    raise ValueError(f"agent_dir: '{agent_dir}' was trained on choices.metric={trained!r} "
                     f'feedback, this config gives {here!r} (set --config.choices.metric={trained} '
                     'to deploy it)')


def accuracy_metrics(choice_metrics: dict, metric: str = 'acc_norm') -> dict:
  """choice_<metric> per domain as the 'eval/<d>/accuracy' the agent and the scores read."""
  suffix = f'/choice_{metric}'
  return {k[:-len(suffix)] + '/accuracy': v for k, v in choice_metrics.items()
          if k.endswith(suffix)}


def environment(config, log=print) -> Environment:
  """The setting's base model (trained first if needed), domains and base evaluations."""
  names, _, domains = runtime.load_run_domains(config)
  roles = continual.roles(config)
  continual.ensure_base(config, quiet=False)
  base_params = continual.base_params(config)
  feedback_set, final_sets = _choice_sets(config, domains)
  for split in SPLITS:
    first, batches = final_rows(config, split)
    for d in domains:
      if len(d.heldout) <= first:
        raise ValueError(f'choices.test_eval_batches: domain {d.name!r} has {len(d.heldout)} '
                         f'held-out rows, none left for the {split} split (it starts at row {first})')
  with tempfile.TemporaryDirectory() as folder:  # the base model as a population of one
    probe = population_lib.Population(config, folder, np.ones((1, len(names))), [config.seed],
                                      domains=domains, init_params=base_params, quiet=True)
    env = Environment(config, names, roles, domains, base_params, None, {}, {}, feedback_set,
                      final_sets)
    env.base_feedback = _evaluate(env, probe, None)[0]
    env.base_final = {split: _evaluate(env, probe, None, split)[0] for split in SPLITS}
  env.space = features.DomainSpace.build(names, roles, env.base_feedback,
                                         [d.train.num_tokens for d in domains],
                                         config.continual.balance)
  return env


def _mean_loss(sums_loss_D, sums_tokens_D) -> np.ndarray:
  """Mean training loss per domain since the last re-weighting step (NaN: not drawn)."""
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(sums_tokens_D > 0, sums_loss_D / sums_tokens_D, np.nan)


def _final_scores(env: Environment, final: dict, split: str) -> dict:
  """Source, target and balanced scores of a finished member against the base model (a split)."""
  names, base = env.names, env.base_final[split]
  get = lambda m, key: np.array([m.get(key(n), np.nan) for n in names], np.float64)
  return features.score_arrays(get(final, features.loss_key), get(base, features.loss_key),
                               get(final, features.accuracy_key),
                               get(base, features.accuracy_key), env.space.is_source_D,
                               env.space.is_target_D, env.space.balance)


def drive(env: Environment, workdir: str, mixers, seeds, label: str = '', log=print,
          record: bool = False, split: str = 'test') -> list[dict]:
  """Trains one member per (mixer, seed) through the continual run; returns per member:
  `weights` (K x D, the weights of each re-weighting step), `final` (held-out loss and accuracy per
  domain on `split`: 'val' for runs that choose something, 'test' for reported ones; none for
  split ''), `scores` (source, target, balanced, on that split) and, with `record`, `trajectory` (feats_TxDxF,
  global_TxG, actions_KxD, rewards_K for dataset.TrajectoryWriter.add)."""
  config, c = env.config, env.config.continual
  k_total, s = c.reweights, c.steps_per_reweight
  p, d = len(mixers), len(env.names)
  if jax.process_index() == 0:
    shutil.rmtree(workdir, ignore_errors=True)  # a chunk is atomic: an interrupted one starts over
  runtime.barrier(f'closed_loop.{workdir}.cleared')
  pop = population_lib.Population(config, workdir, np.full((p, d), 1.0 / d), list(seeds),
                                  domains=env.domains, init_params=env.base_params, quiet=True,
                                  label=label)
  feedback = (choice_eval.make_scorer(pop.graphdef, env.feedback_set, members=True)
              if env.feedback_set is not None else None)
  states = [m.init(env.infos) for m in mixers]
  weights_PxD = np.full((p, d), 1.0 / d)
  evals = [dict(env.base_feedback) for _ in range(p)]
  sums_loss, sums_tokens = np.zeros((p, d)), np.zeros((p, d))
  agent_states = [features.AgentState.initial(env.space)] * p
  actions = np.zeros((p, k_total, d))
  feats, globals_, scores_2 = [[] for _ in range(p)], [[] for _ in range(p)], [[] for _ in range(p)]
  for k in range(k_total + 1):
    if record:
      for m in range(p):
        f, g, agent_states[m] = features.observation_features(
            env.space, agent_states[m], progress=k / k_total, weights_D=weights_PxD[m],
            train_loss_D=_mean_loss(sums_loss[m], sums_tokens[m]), eval_metrics=evals[m])
        feats[m].append(f)
        globals_[m].append(g)
        scores_2[m].append(agent_states[m].scores_2)
    if k == k_total:
      break
    for m in range(p):
      obs = mixer_lib.Observation(
          step=k * s, total_steps=k_total * s, tokens_seen=int(pop.tokens_seen),
          train_loss_D=_mean_loss(sums_loss[m], sums_tokens[m]), train_tokens_D=sums_tokens[m],
          eval_metrics=evals[m], weights_D=weights_PxD[m])
      states[m], w = mixers[m].update(states[m], obs)
      actions[m, k] = sampler_lib.validate_weights(w, env.names, f'mixer of member {m}')
      pop.set_weights(m, actions[m, k])
    history = pop.train_steps(s)
    sums_loss = sum(np.asarray(h['domain_loss_D'], np.float64) * h['domain_tokens_D']
                    for h in history)
    sums_tokens = sum(np.asarray(h['domain_tokens_D'], np.float64) for h in history)
    weights_PxD = actions[:, k]
    evals = _evaluate(env, pop, feedback)
    if log:
      log(f'{label}: re-weighting step {k + 1}/{k_total}')
  final = _evaluate(env, pop, None, split) if split else None  # collection needs no final score
  out = []
  for m in range(p):
    row = {'weights': actions[m].tolist()}
    if final is not None:
      row.update(final=final[m], scores=_final_scores(env, final[m], split))
    if record:
      b = c.balance
      bal = [b * x[0] + (1 - b) * x[1] for x in scores_2[m]]
      row['trajectory'] = dict(feats_TxDxF=np.stack(feats[m]), global_TxG=np.stack(globals_[m]),
                               actions_KxD=actions[m], rewards_K=np.diff(bal))
    out.append(row)
  runtime.barrier(f'closed_loop.{workdir}.done')
  if jax.process_index() == 0:
    shutil.rmtree(workdir, ignore_errors=True)
  return out


def _evaluate(env: Environment, pop, feedback, split: str = '') -> list[dict]:
  """Feedback metrics (split ''), or a finished run's on a split's own held-out rows and items."""
  if split:
    first, batches = final_rows(env.config, split)
    loss_PxD = pop.heldout_loss_KxD(evaluate_lib.heldout_batches(
        env.domains, batches, env.config.batch_size, skip_rows=first))
  else:
    loss_PxD = pop.heldout_loss_KxD()
  rows = [{features.loss_key(n): float(v) for n, v in zip(env.names, loss_D)} for loss_D in loss_PxD]
  test = bool(split)
  choice_set = env.final_sets[split] if split else env.feedback_set
  if choice_set is not None:
    scorer = feedback if feedback is not None else choice_eval.make_scorer(
        pop.graphdef, choice_set, members=True)
    metric = choice_metric(env.config)
    for row, acc in zip(rows, choices_lib.metrics_K(scorer(pop.state.params), choice_set)):
      row.update(accuracy_metrics(acc, metric))
      if test:
        row.update(acc)
  return rows
