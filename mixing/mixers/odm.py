"""Online Data Mixing (Albalak et al. 2023): an EXP3 bandit over domains, updated during the run.

Each domain is an arm; its reward is its current training loss, importance-weighted by the probability
it was sampled with (R_d = loss_d / pi_d), so rarely sampled domains are not under-credited. With K
domains and exploration rate eps_t = min(1/K, sqrt(ln K / (K t))), decaying with the training step t:
  R_hat_d <- alpha * R_hat_d + (1 - alpha) * R_d     for domains seen since the last update
  pi = (1 - K eps_t) softmax(eps_t * R_hat) + eps_t
alpha (`smoothing`) is ODM's moving average of the rewards. ODM updates at every step; here it updates
every `mixer.update_every` steps with the mean loss since the last update (1 gives the original).
"""

import math
from typing import Sequence

import numpy as np

from mixing import registry
from mixing.mixer import DomainInfo, Observation


class ODM:

  def __init__(self, smoothing: float = 0.9):
    if not 0 <= smoothing < 1:
      raise ValueError(f'mixer.odm.smoothing: must be in [0, 1), got {smoothing}')
    self.smoothing = smoothing

  def init(self, domains: Sequence[DomainInfo]):
    k = len(domains)
    return {'rewards_D': np.zeros(k)}

  @staticmethod
  def exploration(t: int, k: int) -> float:
    return min(1.0 / k, math.sqrt(math.log(k) / (k * max(t, 1)))) if k > 1 else 0.0

  def update(self, state, observation: Observation):
    k = len(observation.weights_D)
    rewards_D = np.asarray(state['rewards_D'], np.float64).copy()
    seen_D = np.isfinite(observation.train_loss_D) & (observation.train_tokens_D > 0)
    reward_D = np.where(seen_D, np.nan_to_num(observation.train_loss_D) /
                        np.maximum(observation.weights_D, 1e-12), 0.0)
    a = self.smoothing
    rewards_D = np.where(seen_D, a * rewards_D + (1 - a) * reward_D, rewards_D)
    eps = self.exploration(observation.step, k)
    logits_D = eps * rewards_D
    soft_D = np.exp(logits_D - logits_D.max())
    pi_D = (1 - k * eps) * soft_D / soft_D.sum() + eps
    return {'rewards_D': rewards_D}, pi_D / pi_D.sum()


def _check(config, num_domains):
  del num_domains
  if not 0 <= config.odm.smoothing < 1:
    raise ValueError(f'mixer.odm.smoothing: must be in [0, 1), got {config.odm.smoothing}')


@registry.register('odm', check=_check)
def _build(config, context):
  del context
  return ODM(config.mixer.odm.smoothing)
