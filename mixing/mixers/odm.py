"""Online Data Mixing (Albalak et al. 2023): an EXP3 bandit over domains, updated during the run.

Each domain is an arm; its reward is its current training loss, importance-weighted by the probability
it was sampled with (R_d = loss_d / pi_d), so rarely sampled domains are not under-credited. With K
domains and exploration rate eps_t = min(1/K, sqrt(ln K / (K t))), decaying with the training step t:
  R_hat_d <- alpha * R_hat_d + (1 - alpha) * R_d     for domains seen since the last update
  pi = (1 - K eps_t) softmax(c * eps_t * R_hat) + eps_t
c (`step_scale`, 1 in the paper) scales the exponential-weights step, and t counts steps times
`time_scale` (1 in the paper): with few updates per run (a continual run here re-weights 20 times
over 100 steps, where eps_t stays near 1/K and pi near uniform) these let ODM leave uniform at all.
alpha (`smoothing`) is ODM's moving average of the rewards. ODM updates at every step; here it updates
every `mixer.update_every` steps with the mean loss since the last update (1 gives the original).
"""

import math
from typing import Sequence

import numpy as np

from mixing import registry
from mixing.mixer import DomainInfo, Observation


class ODM:

  def __init__(self, smoothing: float = 0.9, step_scale: float = 1.0, time_scale: float = 1.0):
    if not 0 <= smoothing < 1:
      raise ValueError(f'mixer.odm.smoothing: must be in [0, 1), got {smoothing}')
    if not step_scale > 0:
      raise ValueError(f'mixer.odm.step_scale: must be > 0, got {step_scale}')
    if not time_scale > 0:
      raise ValueError(f'mixer.odm.time_scale: must be > 0, got {time_scale}')
    self.smoothing, self.step_scale, self.time_scale = smoothing, step_scale, time_scale

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
    eps = self.exploration(int(observation.step * self.time_scale), k)
    logits_D = self.step_scale * eps * rewards_D
    soft_D = np.exp(logits_D - logits_D.max())
    pi_D = (1 - k * eps) * soft_D / soft_D.sum() + eps
    return {'rewards_D': rewards_D}, pi_D / pi_D.sum()


def _check(config, num_domains):
  del num_domains
  if not 0 <= config.odm.smoothing < 1:
    raise ValueError(f'mixer.odm.smoothing: must be in [0, 1), got {config.odm.smoothing}')
  for field in ('step_scale', 'time_scale'):
    if not config.odm.get(field, 1.0) > 0:
      raise ValueError(f'mixer.odm.{field}: must be > 0, got {config.odm[field]}')


@registry.register('odm', check=_check)
def _build(config, context):
  del context
  o = config.mixer.odm
  return ODM(o.smoothing, o.get('step_scale', 1.0), o.get('time_scale', 1.0))
