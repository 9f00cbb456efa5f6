"""The Data Mixing Agent's offline stages: collecting mixing trajectories, and training the agent.

Collection: every round trains `trajectories.population` proxies as one population
(closed_loop.drive), all continuing from the same base model (trained and cached first), each
following its own behaviour for `continual.reweights` re-weighting steps of
`continual.steps_per_reweight` optimizer steps. At each re-weighting step a proxy records
(observation, action, reward, next observation, done), the reward being the change of the balanced
score over the step. Behaviours (`round_mixers`): random walks on the simplex from Dirichlet starts,
perturbed ramps of the target share, 2-3 phase switches of the target share, neighbourhoods of given
anchor schedules (e.g. the oracle's best) and ODM with noise. Finished rounds are kept in T/rounds/;
a re-run skips them (a round interrupted midway is redone), but only for the config that
T/config.json records (`collection_config`; another is refused). T/dataset holds them all, with
the collection config. Other settings (`trajectories.settings`: other domains or roles) are
collected the same way into T/settings/<key>, and the agent trains on all of them
(`training_data`). The proxies' feedback is their held-out loss and, with a `choices` section, their
multiple-choice accuracy on the feedback items (closed_loop.py); nothing is decoded.

Training: behaviour cloning on the best trajectories, then conservative Q-learning
(mixing/agent/cql), into A: A/checkpoints (a re-run resumes bit-identically), A/metrics.jsonl, the
saved agent, and A/config.json (`agent_config`: a trained agent is reused only for the same config
and trajectories).
"""


import json
import os
import shutil

import jax
import ml_collections
import numpy as np

from experiments.recipes import closed_loop
from experiments.recipes import continual
from experiments.training import metrics as metrics_lib
from experiments.training import runtime
from experiments.training import validate
from experiments.training import workdir as workdir_lib
from mixing.agent import cql
from mixing.agent import dataset as dataset_lib
from mixing.agent import deploy
from mixing.agent import features
from mixing.agent import policy as policy_lib
from mixing import mixer as mixer_lib
from mixing import registry
from mixing.data import load as load_lib


# Code versions of the two stages, part of what workdir.claim compares: bump one when its outputs
# change, so that a re-run refuses (or, with --overwrite, redoes) what an older version left.
COLLECT_VERSION = 2
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
  for field in ('ramp_share', 'phase_share', 'anchor_share', 'baseline_share'):
    validate.check_number(f'trajectories.{field}', t.get(field, 0.0), float, 0, 1)
  if t.get('anchor_share', 0.0) + t.get('baseline_share', 0.0) > 1:
    raise ValueError(f'trajectories.baseline_share: anchor_share + baseline_share must be <= 1, '
                     f'got {t.anchor_share} + {t.baseline_share}')
  if t.get('phase_share', 0.0) + t.ramp_share > 1:
    raise ValueError(f'trajectories.phase_share: phase_share + ramp_share must be <= 1, got '
                     f'{t.phase_share} + {t.ramp_share}')
  validate.check_number('continual.balance', c.balance, float, 0, 1)
  validate.check_number('trajectories.settings_num', t.get('settings_num', 128), int, 0,
                        open_low=True)
  other_settings(config)  # each parses, and its own fields pass these checks
  policy_config(config)  # agent.drop_features names known features
  closed_loop.choice_metric(config)
  validate.check_number('agent.best_fraction', a.best_fraction, float, 0, 1, open_low=True)
  validate.check_number('agent.gamma', a.get('gamma', 0.9), float, 0, 1, open_high=True)


def other_settings(config) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(key, config) of each setting `trajectories.settings` names (';' between settings, '|' between a
  setting's overrides of this config, e.g. other sources and targets): its trajectories
  (`trajectories.settings_num`, from its own base model, without anchors) join this setting's in
  what the agent trains on. The key (its folder under T/settings) fingerprints the overrides."""
  text = str(config.trajectories.get('settings', ''))
  out = []
  for i, entry in enumerate(continual.entries(text) if text.strip() else []):
    field = f'trajectories.settings[{i}]'
    cfg = continual.overrides(config, entry, field)
    cfg.trajectories.settings = ''
    cfg.trajectories.num = config.trajectories.get('settings_num', 128)
    try:
      check(cfg)
    except ValueError as e:
      raise ValueError(f'{field}: {e}') from None
    key = continual.fingerprint(entry)
    if key in dict(out):
      raise ValueError(f'{field}: repeats an earlier setting ({entry!r})')
    out.append((key, cfg))
  return out


def random_schedules(config, names, roles, rng) -> np.ndarray:
  """P x K x D weights: phase switches of the target share, perturbed target-share ramps, or random
  walks from Dirichlet starts."""
  c, t = config.continual, config.trajectories
  k, d, p = c.reweights, len(names), t.population
  is_target = np.array([roles[n] == 'target' for n in names])
  out = np.zeros((p, k, d))
  for m in range(p):
    u = rng.random()
    if u < t.get('phase_share', 0.0):  # 2 or 3 phases of target shares, uniform within groups
      cuts = np.sort(rng.choice(np.arange(1, k), size=min(rng.integers(1, 3), k - 1), replace=False))
      shares = rng.uniform(0.05, 0.95, len(cuts) + 1)
      split = np.where(is_target, 1.0 / max(is_target.sum(), 1), 1.0 / max((~is_target).sum(), 1))
      for step in range(k):
        share = shares[np.searchsorted(cuts, step, side='right')]
        out[m, step] = np.where(is_target, share, 1 - share) * split
    elif u < t.get('phase_share', 0.0) + t.ramp_share:
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


class Noisy:
  """A Mixer whose weights are another's, perturbed in log space (behaviour near a baseline's)."""

  def __init__(self, mixer, scale: float, seed):
    self.mixer, self.scale, self.rng = mixer, scale, np.random.default_rng(seed)

  def init(self, domains):
    return self.mixer.init(domains)

  def update(self, state, observation):
    state, w = self.mixer.update(state, observation)
    w = np.asarray(w, np.float64) * np.exp(self.rng.normal(0, self.scale, len(w)))
    return state, w / w.sum()


def round_mixers(config, names, rng, anchors=None) -> list:
  """The population's behaviours for one round: schedules (random walks, ramps, phase switches,
  neighbourhoods of `anchors`, K x D schedules e.g. the oracle's best) and noisy ODM."""
  t, c = config.trajectories, config.continual
  schedules = random_schedules(config, names, continual.roles(config), rng)
  out = []
  for m in range(t.population):
    u = rng.random()
    if anchors is not None and len(anchors) and u < t.get('anchor_share', 0.0):
      anchor = np.asarray(anchors[rng.integers(len(anchors))], np.float64)
      sched = anchor * np.exp(rng.normal(0, t.walk_scale / 2, anchor.shape))
      schedules[m] = sched / sched.sum(-1, keepdims=True)
    elif u > 1 - t.get('baseline_share', 0.0):
      odm = registry.build(continual.with_overrides(config, {'mixer.name': 'odm'}),
                           registry.Context(names, np.full(len(names), 1.0 / len(names))))
      out.append(Noisy(odm, t.walk_scale / 2, rng.integers(2**31)))
      continue
    out.append(mixer_lib.Static(schedules[m, 0], [(k * c.steps_per_reweight, schedules[m, k])
                                                  for k in range(1, c.reweights)]))
  return out


def collect_round(config, workdir, round_index, env, log=print, anchors=None):
  """One population of proxies, each following its own behaviour; returns a TrajectoryWriter."""
  t = config.trajectories
  rng = np.random.default_rng([config.seed, round_index])
  mixers = round_mixers(config, env.names, rng, anchors)
  seeds = [config.seed + 1000 * (round_index + 1) + m for m in range(t.population)]
  work = os.path.join(workdir, 'rounds', f'round_{round_index:03d}.work')
  rows = closed_loop.drive(env, work, mixers, seeds, label=f'round {round_index + 1}',
                           log=None, record=True, split='')
  writer = dataset_lib.TrajectoryWriter()
  for row in rows:
    writer.add(env.names, env.roles, **row['trajectory'])
  return writer


def collection_config(config, anchors=None):
  """What shapes the rounds (workdir.claim's record in T): not `trajectories.num`, which only says
  how many rounds to run, nor the other settings (each claims its own folder, T/settings/<key>), nor
  the sections of later stages; the anchors' contents if any."""
  extra = {} if anchors is None else {'anchors': continual.fingerprint(np.asarray(anchors).tolist())}
  return continual.stage_config(
      'trajectories', COLLECT_VERSION,
      continual.without(config, 'agent', 'mixer', 'taskpgm', 'init_from', 'trajectories.num',
                        'trajectories.settings', 'trajectories.settings_num', 'mixbench'),
      steps=config.steps, feature_version=features.FEATURE_VERSION, **extra)


def collect(config, workdir: str, log=print, overwrite: bool = False, env=None,
            anchors=None) -> dataset_lib.Dataset:
  """Collects (or resumes: finished rounds are kept) T/rounds/ and T/dataset, then each of
  `trajectories.settings` in T/settings/<key> the same way; returns T/dataset (this setting's).

  ValueError if T holds rounds of another config (`collection_config`), unless `overwrite`.
  `env`: the setting's closed_loop.Environment (built here if None); `anchors`: K x D schedules
  whose neighbourhoods a share (`trajectories.anchor_share`) of the trajectories explore.
  """
  check(config)
  t = config.trajectories
  workdir_lib.claim(workdir, collection_config(config, anchors), overwrite)
  env = env or closed_loop.environment(config, log)
  names, roles = env.names, env.roles
  base_dir = continual.base_dir(config)
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
    writer = collect_round(config, workdir, r, env, log, anchors)
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
  others = other_settings(config)
  for i, (key, cfg) in enumerate(others):
    collect(cfg, os.path.join(workdir, 'settings', key), overwrite=overwrite,
            log=lambda line, i=i: log(f'setting {i + 1}/{len(others)}: {line}'))
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


def policy_config(config, dataset: dataset_lib.Dataset | None = None) -> policy_lib.PolicyConfig:
  """The agent's architecture: PolicyConfig's defaults, sized to the dataset's features, with the
  features `agent.drop_features` names read as 0 and `agent.group_shares`."""
  drop = tuple(validate.csv(config.agent.get('drop_features', '')))
  sizes = {} if dataset is None else {'num_features': dataset.feats_NxDxF.shape[2],
                                      'num_global': dataset.global_NxG.shape[1]}
  try:
    return policy_lib.PolicyConfig(drop_features=drop,
                                   group_shares=config.agent.get('group_shares', False), **sizes)
  except ValueError as e:
    raise ValueError(str(e).replace('policy.', 'agent.')) from None


def training_data(config, trajectories: str) -> dataset_lib.Dataset:
  """What the agent trains on: T/dataset (ValueError unless it ran on the config's domain space,
  e.g. to resume) and the trajectories of each of `trajectories.settings` (T/settings/<key>)."""
  dataset = dataset_lib.load(os.path.join(trajectories, 'dataset'))
  names, _ = load_lib.parse_mixture(config.domains)
  dataset_lib.check_domain_space(dataset, names)
  others = other_settings(config)
  if not others:
    return dataset
  merged = dataset_lib.TrajectoryWriter()
  merged.add_dataset(dataset)
  for i, (key, _) in enumerate(others):
    path = os.path.join(trajectories, 'settings', key, 'dataset')
    if not os.path.isdir(path):
      raise ValueError(f"trajectories.settings[{i}]: no trajectories in '{path}' (collect them "
                       'with the same config first)')
    merged.add_dataset(dataset_lib.load(path))
  return merged.dataset(dataset.meta)


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
  dataset = training_data(config, trajectories)
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
                                                  gamma=float(a.get('gamma', 0.9)),
                                                  checkpoint_every=checkpoint_every),
                             policy_config=policy_config(config, dataset))
  finally:
    if writer:
      writer.close()
  deploy.save_agent(workdir, policy, {'balance': config.continual.balance,
                                      'trajectories': os.path.abspath(trajectories),
                                      'domains': dataset.meta.get('domains'),
                                      'choice_metric': closed_loop.choice_metric(config)})
  workdir_lib.release_replaced(workdir)
  return policy
