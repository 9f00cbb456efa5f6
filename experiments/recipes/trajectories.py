"""The Data Mixing Agent's offline stages: collecting mixing trajectories, and training the agent.

Collection: every round trains `trajectories.population` proxies as one population, all continuing
from the same base model (trained and cached first), each following its own random mixing trajectory
for `continual.reweights` re-weighting steps of `continual.steps_per_reweight` optimizer steps. At each
re-weighting step a proxy records (observation, action, reward, next observation, done), the reward
being the change of the balanced score over the step. Trajectories are random walks on the simplex from
Dirichlet starts, or perturbations of a ramp of the target share. Finished rounds are kept in
T/rounds/; a re-run skips them (a round interrupted midway is redone), but only for the config that
T/config.json records (`collection_config`; another is refused). T/dataset holds them all, with
the collection config. Proxies are scored on held-out loss (decoding every proxy is too slow here);
the agent observes losses only, and accuracy enters the scores reported for deployed runs.

Training: behaviour cloning on the best trajectories, then conservative Q-learning
(mixing/agent/cql), into A: A/checkpoints (a re-run resumes bit-identically), A/metrics.jsonl, the
saved agent, and A/config.json (`agent_config`: a trained agent is reused only for the same config
and trajectories).
"""


import json
import os
import shutil

import jax
import numpy as np

from experiments.recipes import continual
from experiments.training import metrics as metrics_lib
from experiments.training import population as population_lib
from experiments.training import runtime
from experiments.training import validate
from experiments.training import workdir as workdir_lib
from mixing.agent import cql
from mixing.agent import dataset as dataset_lib
from mixing.agent import deploy
from mixing.agent import features
from mixing.data import load as load_lib


# Code versions of the two stages, part of what workdir.claim compares: bump one when its outputs
# change, so that a re-run refuses (or, with --overwrite, redoes) what an older version left.
COLLECT_VERSION = 1
AGENT_VERSION = 1


def check(config):
  """The fields collection and agent training read, before anything is claimed or trained."""
  validate.check_run(config)
  continual.roles(config)
  c, t, a = config.continual, config.trajectories, config.agent
  for field, value in (('continual.reweights', c.reweights), ('continual.base_steps', c.base_steps),
                       ('continual.steps_per_reweight', c.steps_per_reweight),
                       ('trajectories.num', t.num), ('trajectories.population', t.population)):
    validate.check_number(field, value, int, 0, open_low=True)
  for field, value in (('agent.bc_steps', a.bc_steps), ('agent.cql_steps', a.cql_steps)):
    validate.check_number(field, value, int, 0)
  validate.check_number('trajectories.walk_scale', t.walk_scale, float, 0)
  validate.check_number('trajectories.ramp_share', t.ramp_share, float, 0, 1)
  validate.check_number('continual.balance', c.balance, float, 0, 1)
  validate.check_number('agent.best_fraction', a.best_fraction, float, 0, 1, open_low=True)


def loss_only(metrics: dict) -> dict:
  """The agent's view of an evaluation: held-out losses only (see the module docstring)."""
  return {k: v for k, v in metrics.items() if k.endswith('/loss')}


def random_schedules(config, names, roles, rng) -> np.ndarray:
  """P x K x D weights: random walks from Dirichlet starts, or perturbed target-share ramps."""
  c, t = config.continual, config.trajectories
  k, d, p = c.reweights, len(names), t.population
  is_target = np.array([roles[n] == 'target' for n in names])
  out = np.zeros((p, k, d))
  for m in range(p):
    if rng.random() < t.ramp_share:
      start, end = rng.uniform(0.0, 1.0, 2)
      split = rng.dirichlet(np.full(d, 2.0))
      for step in range(k):
        share = start + (end - start) * step / max(k - 1, 1)
        w = split * np.exp(rng.normal(0, t.walk_scale / 2, d))
        w = np.where(is_target, share * w / w[is_target].sum(), (1 - share) * w / w[~is_target].sum())
        out[m, step] = w
    else:
      w = rng.dirichlet(np.ones(d))
      for step in range(k):
        out[m, step] = w
        w = w * np.exp(rng.normal(0, t.walk_scale, d))
        w = w / w.sum()
  out = np.maximum(out, 0.01 / d)
  return out / out.sum(-1, keepdims=True)


def _mean_train_loss(history, k):
  loss = sum(np.asarray(m['domain_loss_D'][k], np.float64) * m['domain_tokens_D'][k]
             for m in history)
  tokens = sum(np.asarray(m['domain_tokens_D'][k], np.float64) for m in history)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(tokens > 0, loss / tokens, np.nan)


def collect_round(config, workdir, round_index, names, domains, space, base_params, base_eval,
                  log=print):
  """One population of proxies, each following a random schedule; returns a TrajectoryWriter."""
  c, t = config.continual, config.trajectories
  rng = np.random.default_rng([config.seed, round_index])
  schedules_PxKxD = random_schedules(config, names, continual.roles(config), rng)
  seeds = [config.seed + 1000 * (round_index + 1) + m for m in range(t.population)]
  work = os.path.join(workdir, 'rounds', f'round_{round_index:03d}.work')
  if jax.process_index() == 0:  # with several processes, one clears and writes what all of them read
    shutil.rmtree(work, ignore_errors=True)  # rounds are atomic: an interrupted one starts over
  runtime.barrier(f'collect.round_{round_index}.cleared')
  pop = population_lib.Population(config, work, schedules_PxKxD[:, 0], seeds, domains=domains,
                                  init_params=base_params, quiet=True)
  p = t.population
  states = [features.AgentState.initial(space)] * p
  weights_now = np.full((p, len(names)), 1.0 / len(names))
  feats, globals_, rewards = [[] for _ in range(p)], [[] for _ in range(p)], [[] for _ in range(p)]
  train_loss = np.full((p, len(names)), np.nan)
  eval_metrics = [loss_only(base_eval)] * p
  prev_scores = [None] * p
  for step in range(c.reweights + 1):
    for m in range(p):
      f, g, states[m] = features.observation_features(
          space, states[m], progress=step / c.reweights, weights_D=weights_now[m],
          train_loss_D=train_loss[m], eval_metrics=eval_metrics[m])
      feats[m].append(f)
      globals_[m].append(g)
      scores = features.scores(eval_metrics[m], space_metrics(space), continual.roles(config),
                               space.balance)
      if prev_scores[m] is not None:
        rewards[m].append(features.reward(prev_scores[m], scores, space.balance))
      prev_scores[m] = scores
    if step == c.reweights:
      break
    for m in range(p):
      pop.set_weights(m, schedules_PxKxD[m, step])
    history = pop.train_steps(c.steps_per_reweight)
    loss_PxD = pop.heldout_loss_KxD()
    log(f'round {round_index + 1}: re-weighting step {step + 1}/{c.reweights}, mean held-out loss '
        f'{np.nanmean(loss_PxD):.4f}')
    weights_now = schedules_PxKxD[:, step]
    train_loss = np.stack([_mean_train_loss(history, m) for m in range(p)])
    eval_metrics = [{f'eval/{n}/loss': float(v) for n, v in zip(names, loss_PxD[m])}
                    for m in range(p)]
  writer = dataset_lib.TrajectoryWriter()
  for m in range(p):
    writer.add(names, continual.roles(config), np.stack(feats[m]), np.stack(globals_[m]),
               schedules_PxKxD[m], np.array(rewards[m]))
  runtime.barrier(f'collect.round_{round_index}.trained')
  if jax.process_index() == 0:
    shutil.rmtree(work, ignore_errors=True)
  return writer


def space_metrics(space: features.DomainSpace) -> dict:
  return {f'eval/{n}/loss': float(v) for n, v in zip(space.names, space.base_loss_D)}


def collection_config(config):
  """What shapes the rounds (workdir.claim's record in T): not `trajectories.num`, which only says
  how many rounds to run, nor the sections of later stages."""
  return continual.stage_config(
      'trajectories', COLLECT_VERSION,
      continual.without(config, 'agent', 'mixer', 'taskpgm', 'init_from', 'trajectories.num'),
      steps=config.steps, feature_version=features.FEATURE_VERSION)


def collect(config, workdir: str, log=print, overwrite: bool = False) -> dataset_lib.Dataset:
  """Collects (or resumes: finished rounds are kept) T/rounds/ and T/dataset; returns the dataset.

  ValueError if T holds rounds of another config (`collection_config`), unless `overwrite`.
  """
  check(config)
  c, t = config.continual, config.trajectories
  workdir_lib.claim(workdir, collection_config(config), overwrite)
  names, _, domains = runtime.load_run_domains(config)
  roles = continual.roles(config)
  base_dir = continual.ensure_base(config)
  base_eval = continual.base_metrics(config)
  space = features.DomainSpace.build(names, roles, loss_only(base_eval),
                                     [d.train.num_tokens for d in domains], c.balance)
  base_params = continual.base_params(config)
  rounds = -(-t.num // t.population)
  meta = {'domains': names, 'roles': roles, 'config': config.to_dict(),
          'base_dir': base_dir, 'feature_version': features.FEATURE_VERSION}
  merged_path, collected = os.path.join(workdir, 'dataset'), False
  for r in range(rounds):
    path = os.path.join(workdir, 'rounds', f'round_{r:03d}')
    if os.path.exists(path) and _readable_round(path, r, rounds, log):
      dataset_lib.check_domain_space(dataset_lib.load(path), names)
      log(f'round {r + 1}/{rounds}: done before, kept')
      continue
    collected = True
    writer = collect_round(config, workdir, r, names, domains, space, base_params, base_eval, log)
    if jax.process_index() == 0:
      writer.save(path, meta)
    runtime.barrier(f'collect.round_{r}.saved')
    returns = writer.dataset().returns_T
    log(f'round {r + 1}/{rounds}: {len(returns)} trajectories, return mean {returns.mean():+.4f} '
        f'best {returns.max():+.4f}')
  if collected or _merged_rounds(merged_path) != rounds:  # else T/dataset holds them already
    merged = dataset_lib.TrajectoryWriter()
    for r in range(rounds):
      merged.add_dataset(dataset_lib.load(os.path.join(workdir, 'rounds', f'round_{r:03d}')))
    if jax.process_index() == 0:
      merged.save(merged_path, {**meta, 'rounds': rounds})
    runtime.barrier('collect.dataset.saved')
  workdir_lib.release_replaced(workdir)
  return dataset_lib.load(merged_path)


def _readable_round(path: str, r: int, rounds: int, log) -> bool:
  """False (and the round moved aside to <path>.unreadable) for a round whose files do not parse,
  e.g. cut short by a full disk: it is collected again, to the same trajectories (seeded)."""
  try:
    dataset_lib.load(path)
    return True
  except dataset_lib.UnreadableError as e:
    log(f'round {r + 1}/{rounds}: {e}; collecting it again')
    runtime.barrier(f'collect.round_{r}.unreadable')
    if jax.process_index() == 0:
      shutil.rmtree(path + '.unreadable', ignore_errors=True)
      os.replace(path, path + '.unreadable')
    runtime.barrier(f'collect.round_{r}.moved')
    return False


def _merged_rounds(path: str) -> int | None:
  """How many rounds the dataset at `path` merged (None: no dataset there)."""
  try:
    with open(os.path.join(path, dataset_lib.CONFIG)) as f:
      return json.load(f).get('rounds')
  except (OSError, ValueError):
    return None


def agent_config(config, dataset: dataset_lib.Dataset):
  """What shapes the agent (workdir.claim's record in A): the `agent` section, the balance, and the
  trajectories' contents (not their folder)."""
  return continual.stage_config(
      'agent', AGENT_VERSION,
      {'agent': config.agent.to_dict(), 'balance': config.continual.balance},
      trajectories=dataset.fingerprint(), feature_version=features.FEATURE_VERSION)


def train_agent(config, trajectories: str, workdir: str, quiet: bool = False,
                overwrite: bool = False, checkpoint_every: int = cql.CQLConfig.checkpoint_every):
  """Trains the agent on T/dataset into A (resuming from A/checkpoints); returns the policy.

  An agent A already holds (trained on the same trajectories with the same `agent_config`) is
  returned as it is; one of another config is refused (ValueError) unless `overwrite`.
  """
  check(config)
  dataset = dataset_lib.load(os.path.join(trajectories, 'dataset'))
  names, _ = load_lib.parse_mixture(config.domains)
  dataset_lib.check_domain_space(dataset, names)  # the config must be the one that collected them
  workdir_lib.claim(workdir, agent_config(config, dataset), overwrite)
  try:
    return deploy.load_agent(workdir)[0]
  except ValueError:  # none saved yet
    pass
  a = config.agent
  total = a.bc_steps + a.cql_steps
  writer = None

  def start(step):  # the metrics rows up to a resumed checkpoint's step are kept
    nonlocal writer
    writer = metrics_lib.MetricsWriter(workdir, step, tensorboard=False)
    if step and not quiet:
      print(f'resumed from step {step}', flush=True)

  def log(step, record):
    writer.write(step, {f'agent/{k}': v for k, v in record.items() if k not in ('step', 'phase')})
    if not quiet and (step % 100 == 0 or step == total):
      shown = ', '.join(f'{k} {v:.4f}' for k, v in record.items() if k not in ('step', 'phase'))
      print(f'[{record["phase"]}] step {step}/{total}  {shown}', flush=True)

  try:
    policy, _, _ = cql.train(dataset, a.cql_steps, a.bc_steps, a.seed, log_fn=log, start_fn=start,
                             checkpoint_dir=os.path.join(workdir, 'checkpoints'),
                             config=cql.CQLConfig(bc_fraction=a.best_fraction,
                                                  checkpoint_every=checkpoint_every))
  finally:
    if writer:
      writer.close()
  deploy.save_agent(workdir, policy, {'balance': config.continual.balance,
                                      'trajectories': os.path.abspath(trajectories),
                                      'domains': dataset.meta.get('domains')})
  workdir_lib.release_replaced(workdir)
  return policy
