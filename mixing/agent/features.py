"""What the Data Mixing Agent sees: evaluation scores and per-domain / global features.

Continual pre-training runs over a domain space of *source* domains (what the base model was
trained on) and *target* domains (what the run should add). Scores compare an evaluation to the base
model's:

  improvement_d  = (base_loss_d - loss_d) / base_loss_d          (held-out loss, 'eval/<d>/loss')
  source score   = mean over source domains of improvement_d     (negative: forgetting)
  target score   = mean over target domains of improvement_d
  Either side is averaged 50/50 with the mean absolute accuracy gain (accuracy_d - base_accuracy_d,
  from 'eval/<d>/accuracy': exact match, or multiple-choice acc_norm in mixbench) over that side's
  domains that have an accuracy in both the base and the evaluation metrics; just the loss part
  when none has one
  balanced score = balance * source + (1 - balance) * target     (balance 0.5: the mean of the two)

A side with no domains scores 0. The agent's reward for a re-weighting step is the change of the
balanced score over it (`reward`), so a trajectory's return is the final minus the initial score.

Features (`observation_features`), with symlog(x) = sign(x) * log(1 + |x|) compressing heavy tails
and all losses taken relative to the base model's held-out loss of the same domain, so that they
compare across domain spaces, model sizes and source fields. F = 11 per domain:
  0 weight          D * w_d, the weight in force until now (uniform = 1)
  1 train_loss      symlog(10 * log(train_loss_d / base_loss_d)), last value kept while not drawn
  2 eval_loss       symlog(10 * log(eval_loss_d / base_loss_d))
  3 train_change    symlog(100 * change of log(train_loss_d) since the last re-weighting step)
  4 eval_change     symlog(100 * change of log(eval_loss_d) since the last re-weighting step)
  5 is_source       1 for a source domain
  6 is_target       1 for a target domain
  7 log_size_rel    log10(tokens_d) minus its mean over the domain space
  8 log_size        log10(tokens_d) / 10
  9 accuracy_gain   symlog(10 * (accuracy_d - base_accuracy_d)); 0 without an accuracy
 10 has_accuracy    1 if the domain is scored by accuracy
G = 5 global features:
  0 progress        k / K, the re-weighting steps done over their total
  1 source_score    symlog(10 * source score)
  2 target_score    symlog(10 * target score)
  3 source_change   symlog(100 * change of the source score since the last re-weighting step)
  4 target_change   symlog(100 * change of the target score since the last re-weighting step)

A missing or non-finite measurement (no evaluation yet, a domain not drawn) keeps the last value,
which starts at the base model's (its held-out loss stands in for the train loss too). What is
remembered between re-weighting steps is an `AgentState`, kept as a dict of finite numpy arrays
(`to_tree`), so it checkpoints inside the trainer's mixer state.
"""

import dataclasses
from typing import Mapping, Sequence

import numpy as np

FEATURE_VERSION = 2  # 2: accuracy counts in the source score too
DOMAIN_FEATURES = ('weight', 'train_loss', 'eval_loss', 'train_change', 'eval_change', 'is_source',
                   'is_target', 'log_size_rel', 'log_size', 'accuracy_gain', 'has_accuracy')
GLOBAL_FEATURES = ('progress', 'source_score', 'target_score', 'source_change', 'target_change')
F = len(DOMAIN_FEATURES)
G = len(GLOBAL_FEATURES)
ROLES = ('source', 'target')
LEVEL_SCALE = 10.0  # log loss ratios, accuracy gains and scores: 0.1 -> symlog(1)
CHANGE_SCALE = 100.0  # changes over one re-weighting step: 0.01 -> symlog(1)


def symlog(x):
  return np.sign(x) * np.log1p(np.abs(x))


def loss_key(name: str) -> str:
  return f'eval/{name}/loss'


def accuracy_key(name: str) -> str:
  return f'eval/{name}/accuracy'


def check_balance(balance: float) -> float:
  if not 0.0 <= balance <= 1.0:
    raise ValueError(f'balance: must be in [0, 1], got {balance}')
  return float(balance)


def role_masks(names: Sequence[str], roles: Mapping[str, str]) -> tuple[np.ndarray, np.ndarray]:
  """(is_source_D, is_target_D) as floats; ValueError for a domain without a known role."""
  for name in names:
    if roles.get(name) not in ROLES:
      raise ValueError(f'roles: domain {name!r} needs a role in {ROLES}, got {roles.get(name)!r}')
  is_source_D = np.array([roles[n] == 'source' for n in names], np.float64)
  return is_source_D, 1.0 - is_source_D


def _base_arrays(names, base_metrics) -> tuple[np.ndarray, np.ndarray]:
  """(base_loss_D, base_accuracy_D), accuracy NaN where the base model has none."""
  loss_D = np.array([base_metrics.get(loss_key(n), np.nan) for n in names], np.float64)
  for name, loss in zip(names, loss_D):
    if not (np.isfinite(loss) and loss > 0):
      raise ValueError(f'base_metrics: {loss_key(name)} must be a positive finite number, '
                       f'got {base_metrics.get(loss_key(name))}')
  acc_D = np.array([base_metrics.get(accuracy_key(n), np.nan) for n in names], np.float64)
  return loss_D, np.where(np.isfinite(acc_D), acc_D, np.nan)


def _mean(x_D, mask_D) -> float:
  return float(np.sum(x_D * mask_D) / mask_D.sum()) if mask_D.sum() > 0 else 0.0


def score_arrays(loss_D, base_loss_D, acc_D, base_acc_D, is_source_D, is_target_D,
                 balance: float = 0.5) -> dict:
  """`scores` on arrays; accuracies NaN where a domain has none."""
  improvement_D = (base_loss_D - loss_D) / base_loss_D
  has_acc_D = (np.isfinite(acc_D) & np.isfinite(base_acc_D)).astype(np.float64)
  gain_D = np.nan_to_num(acc_D - base_acc_D)
  side = []
  for mask_D in (is_source_D, is_target_D):
    score = _mean(improvement_D, mask_D)
    if (mask_D * has_acc_D).sum() > 0:
      score = 0.5 * (score + _mean(gain_D, mask_D * has_acc_D))
    side.append(score)
  source, target = side
  return {'source': source, 'target': target,
          'balanced': balance * source + (1.0 - balance) * target}


def scores(eval_metrics: Mapping[str, float], base_metrics: Mapping[str, float],
           roles: Mapping[str, str], balance: float = 0.5) -> dict:
  """{'source', 'target', 'balanced'}: an evaluation against the base model's (module docstring)."""
  names = list(roles)
  balance = check_balance(balance)
  is_source_D, is_target_D = role_masks(names, roles)
  base_loss_D, base_acc_D = _base_arrays(names, base_metrics)
  loss_D = np.array([eval_metrics.get(loss_key(n), np.nan) for n in names], np.float64)
  for name, loss in zip(names, loss_D):
    if not np.isfinite(loss):
      raise ValueError(f'eval_metrics: {loss_key(name)} must be a finite number, '
                       f'got {eval_metrics.get(loss_key(name))}')
  acc_D = np.array([eval_metrics.get(accuracy_key(n), np.nan) for n in names], np.float64)
  return score_arrays(loss_D, base_loss_D, acc_D, base_acc_D, is_source_D, is_target_D, balance)


def reward(prev_scores: Mapping[str, float], new_scores: Mapping[str, float],
           balance: float = 0.5) -> float:
  """The change of the balanced score over one re-weighting step."""
  def balanced(s):
    return balance * s['source'] + (1.0 - balance) * s['target']
  return float(balanced(new_scores) - balanced(prev_scores))


@dataclasses.dataclass(frozen=True)
class DomainSpace:
  """What does not change during a run: the domains, their roles, sizes and the base model."""
  names: tuple[str, ...]
  is_source_D: np.ndarray
  is_target_D: np.ndarray
  base_loss_D: np.ndarray
  base_acc_D: np.ndarray  # NaN: the domain has no accuracy
  num_tokens_D: np.ndarray
  balance: float = 0.5

  @classmethod
  def build(cls, names: Sequence[str], roles: Mapping[str, str],
            base_metrics: Mapping[str, float], num_tokens: Sequence[float],
            balance: float = 0.5) -> 'DomainSpace':
    names = tuple(names)
    if not names:
      raise ValueError('domains: the domain space is empty')
    num_tokens_D = np.asarray(num_tokens, np.float64)
    if num_tokens_D.shape != (len(names),):
      raise ValueError(f'num_tokens: expected {len(names)} sizes, got shape {num_tokens_D.shape}')
    is_source_D, is_target_D = role_masks(names, roles)
    base_loss_D, base_acc_D = _base_arrays(names, base_metrics)
    return cls(names, is_source_D, is_target_D, base_loss_D, base_acc_D, num_tokens_D,
               check_balance(balance))

  @property
  def has_acc_D(self) -> np.ndarray:
    return np.isfinite(self.base_acc_D).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class AgentState:
  """The last measurements, remembered between re-weighting steps (all finite)."""
  train_loss_D: np.ndarray
  eval_loss_D: np.ndarray
  eval_acc_D: np.ndarray  # 0 where the domain has no accuracy
  scores_2: np.ndarray  # (source, target)
  updates: np.ndarray  # int64 scalar: re-weighting steps done

  @classmethod
  def initial(cls, space: DomainSpace) -> 'AgentState':
    acc_D = np.nan_to_num(space.base_acc_D)
    return cls(space.base_loss_D.copy(), space.base_loss_D.copy(), acc_D, np.zeros(2),
               np.int64(0))

  def to_tree(self) -> dict:
    return {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}

  @classmethod
  def from_tree(cls, tree: Mapping) -> 'AgentState':
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in tree]
    if missing:
      raise ValueError(f'mixer state: missing {", ".join(missing)} (not an agent state)')
    return cls(*(np.asarray(tree[f.name], np.int64 if f.name == 'updates' else np.float64)
                 for f in dataclasses.fields(cls)))

  @property
  def scores(self) -> dict:
    return {'source': float(self.scores_2[0]), 'target': float(self.scores_2[1])}


def _measured(values_D, previous_D) -> np.ndarray:
  values_D = np.asarray(values_D, np.float64)
  return np.where(np.isfinite(values_D) & (values_D > 0), values_D, previous_D)


def observation_features(space: DomainSpace, state: AgentState, *, progress: float, weights_D,
                         train_loss_D, eval_metrics: Mapping[str, float]
                         ) -> tuple[np.ndarray, np.ndarray, AgentState]:
  """(feats_DxF, global_G, new_state) at a re-weighting step (module docstring lists the features).

  Args:
    space: the domain space and base model.
    state: what the previous re-weighting step remembered (`AgentState.initial` at the first).
    progress: k / K, re-weighting steps done over their total.
    weights_D: the weights in force until now (the initial mixture at the first step).
    train_loss_D: mean training loss per domain since the last step (NaN: not drawn).
    eval_metrics: the latest evaluation ('eval/<domain>/loss', 'eval/<domain>/accuracy'), may be {}.
  """
  d = len(space.names)
  weights_D = np.asarray(weights_D, np.float64)
  train_loss_D = np.asarray(train_loss_D, np.float64)
  for field, x in (('weights_D', weights_D), ('train_loss_D', train_loss_D)):
    if x.shape != (d,):
      raise ValueError(f'{field}: expected {d} values (one per domain), got shape {x.shape}')
  train_D = _measured(train_loss_D, state.train_loss_D)
  eval_D = _measured([eval_metrics.get(loss_key(n), np.nan) for n in space.names],
                     state.eval_loss_D)
  has_acc_D = space.has_acc_D
  acc_now_D = np.array([eval_metrics.get(accuracy_key(n), np.nan) for n in space.names], float)
  acc_D = np.where((has_acc_D > 0) & np.isfinite(acc_now_D), acc_now_D, state.eval_acc_D)
  base_D = space.base_loss_D
  log_tokens_D = np.log10(np.maximum(space.num_tokens_D, 1.0))
  acc_gain_D = np.where(has_acc_D > 0, acc_D - np.nan_to_num(space.base_acc_D), 0.0)
  feats_DxF = np.stack([
      weights_D * d,
      symlog(LEVEL_SCALE * np.log(train_D / base_D)),
      symlog(LEVEL_SCALE * np.log(eval_D / base_D)),
      symlog(CHANGE_SCALE * np.log(train_D / state.train_loss_D)),
      symlog(CHANGE_SCALE * np.log(eval_D / state.eval_loss_D)),
      space.is_source_D,
      space.is_target_D,
      log_tokens_D - log_tokens_D.mean(),
      log_tokens_D / 10.0,
      symlog(LEVEL_SCALE * acc_gain_D),
      has_acc_D,
  ], axis=1)
  s = score_arrays(eval_D, base_D, np.where(has_acc_D > 0, acc_D, np.nan), space.base_acc_D,
                   space.is_source_D, space.is_target_D, space.balance)
  scores_2 = np.array([s['source'], s['target']])
  change_2 = scores_2 - state.scores_2
  global_G = np.concatenate([[float(progress)], symlog(LEVEL_SCALE * scores_2),
                             symlog(CHANGE_SCALE * change_2)])
  new_state = AgentState(train_D, eval_D, acc_D, scores_2, np.int64(int(state.updates) + 1))
  return feats_DxF.astype(np.float32), global_G.astype(np.float32), new_state
