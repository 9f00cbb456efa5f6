"""TaskPGM's budgeted discrete variant: pick a task subset S by greedy maximization of

  F(S) = sum_{i in S} u_i - lam * sum_{i != j in S} R_ij        (F(empty) = 0; R's diagonal unused)

under a cardinality budget (at most k tasks) or a token budget (costs c_i, sum_{i in S} c_i <= B).
The marginal gain of k given L is u_k - 2 lam sum_{j in L} R_kj.

* Cardinality: add the largest marginal gain; stop at k tasks or when no gain is positive.
* Knapsack: cost-benefit greedy (largest gain / cost among tasks that still fit, positive gains
  only), then the best single task that fits if it is better (Khuller, Moss and Naor 1999).

Guarantees, for F monotone on the sets involved: cardinality, F(greedy) >= (1 - exp(-gamma)) OPT
(Das and Kempe 2011), gamma being the submodularity ratio below; knapsack, F(greedy) >=
(1 - 1/e) / 2 * OPT when F is also submodular (Krause and Guestrin 2005), i.e. R >= 0 off the
diagonal. For R >= 0 (every redundancy() output) F is submodular and gamma = 1; only negative R_ij
(complementary tasks) make gamma < 1, and then no knapsack bound is claimed here.
"""

import itertools
import math

import numpy as np

from mixing.taskpgm import energy


def _check_budget(budget, costs_N, n: int):
  """Returns (max_tasks, costs or None, token budget or None) after validation."""
  if costs_N is None:
    if (isinstance(budget, bool) or not isinstance(budget, (int, np.integer, float))
        or budget != int(budget) or budget < 1):
      raise ValueError(f'taskpgm.budget: must be an integer >= 1 (tasks), got {budget!r}')
    return min(int(budget), n), None, None
  costs = np.asarray(costs_N, np.float64)
  if costs.shape != (n,) or not np.isfinite(costs).all() or (costs <= 0).any():
    raise ValueError(f'taskpgm.costs_N: expected {n} finite costs > 0, got shape {costs.shape}')
  if not isinstance(budget, (int, float, np.number)) or not budget >= costs.min():
    raise ValueError(f'taskpgm.budget: must be >= the cheapest task cost {costs.min():g}, '
                     f'got {budget!r}')
  max_tasks = int(np.searchsorted(np.cumsum(np.sort(costs)), budget, side='right'))
  return max_tasks, costs, float(budget)


def value(S, u_N, R_NxN, lam: float) -> float:
  """F(S)."""
  u, r = energy.check_problem(u_N, R_NxN, lam, zero_diagonal=True)
  idx = np.asarray(list(S), int)
  return float(u[idx].sum() - lam * r[np.ix_(idx, idx)].sum())


def greedy_select(u_N, R_NxN, lam: float, budget, costs_N=None) -> tuple[list, float]:
  """Greedy maximization of F; returns (selected task indices in selection order, F(S))."""
  u, r = energy.check_problem(u_N, R_NxN, lam, zero_diagonal=True)
  max_tasks, costs, tokens = _check_budget(budget, costs_N, u.size)
  chosen, penalty_N, spent = [], np.zeros(u.size), 0.0
  free_N = np.ones(u.size, bool)
  while len(chosen) < max_tasks:
    gain_N = u - 2 * lam * penalty_N
    if costs is not None:
      free_N &= costs <= tokens - spent + 1e-12 * tokens
    score_N = np.where(free_N & (gain_N > 0), gain_N if costs is None else gain_N / costs, -np.inf)
    best = int(np.argmax(score_N))
    if not np.isfinite(score_N[best]):
      break
    chosen.append(best)
    free_N[best] = False
    penalty_N += r[best]
    spent += 0.0 if costs is None else costs[best]
  total = value(chosen, u, r, lam)
  if costs is not None:
    fits = np.flatnonzero(costs <= tokens)
    single = int(fits[np.argmax(u[fits])])
    if u[single] > total:
      chosen, total = [single], float(u[single])
  return chosen, total


def brute_force_best(u_N, R_NxN, lam: float, budget, costs_N=None, max_n: int = 20
                     ) -> tuple[list, float]:
  """The best feasible subset by enumeration (the empty set included), for tests; N <= max_n."""
  u, r = energy.check_problem(u_N, R_NxN, lam, zero_diagonal=True)
  max_tasks, costs, tokens = _check_budget(budget, costs_N, u.size)
  if u.size > max_n:
    raise ValueError(f'taskpgm.u_N: brute force needs N <= {max_n}, got {u.size}')
  best, best_value = [], 0.0
  for size in range(1, max_tasks + 1):
    for subset in itertools.combinations(range(u.size), size):
      if costs is not None and costs[list(subset)].sum() > tokens * (1 + 1e-12):
        continue
      f = value(subset, u, r, lam)
      if f > best_value:
        best, best_value = list(subset), f
  return best, best_value


def exhaustive_value(u_N, R_NxN, lam: float, budget: int, chunk: int = 200_000) -> float:
  """max F(S) over every |S| <= budget (F(empty) = 0), vectorized over chunks of subsets: for
  comparing greedy with the optimum where C(N, budget) is in the millions."""
  u, r = energy.check_problem(u_N, R_NxN, lam, zero_diagonal=True)
  k, _, _ = _check_budget(budget, None, u.size)
  best = 0.0
  for size in range(1, k + 1):
    combos = itertools.combinations(range(u.size), size)
    while True:
      s_MxK = np.fromiter(itertools.islice(combos, chunk), dtype=(np.int64, size)).reshape(-1, size)
      if not len(s_MxK):
        break
      f_M = u[s_MxK].sum(1) - lam * r[s_MxK[:, :, None], s_MxK[:, None, :]].sum((1, 2))
      best = max(best, float(f_M.max()))
  return best


def _all_subsets(u, r, lam):
  """bits_MxN of every subset (mask m has task i iff bit i), F_M and gains_MxN = F(L + x) - F(L)."""
  n = u.size
  bits_MxN = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1).astype(np.float64)
  f_M = bits_MxN @ u - lam * np.einsum('mi,ij,mj->m', bits_MxN, r, bits_MxN)
  gains_MxN = u[None] - 2 * lam * bits_MxN @ r
  return bits_MxN, f_M, np.where(bits_MxN > 0, np.nan, gains_MxN)


def submodularity_ratio(u_N, R_NxN, lam: float, budget, costs_N=None,
                        exact_max_n: int = 12) -> dict:
  """gamma = min over disjoint L, S (|L| <= k, 1 <= |S| <= k, F(L u S) > F(L)) of
  sum_{x in S} [F(L + x) - F(L)] / [F(L u S) - F(L)], capped to [0, 1] (1 if no pair qualifies).

  k is the cardinality budget, or for a token budget the most tasks that fit (cheapest first).
  Denominators count as positive above 1e-12 * (1 + max |F|). N <= exact_max_n: exact, by
  enumerating every (L, S). Larger N: a certified lower bound. With R >= 0 off the diagonal every
  ratio is >= 1, so gamma = 1 exactly. Otherwise, with m = min_x [u_x - 2 lam (sum of the k largest
  positive R_xj)] (a lower bound on every marginal gain from an |L| <= k) and r- = max_ij (-R_ij)_+:
  gamma >= m / (m + lam (k - 1) r-) when m > 0, else 0 (no bound).

  'monotone' certifies F(L + x) >= F(L) for every |L| <= 2k - 1 (exactly, or by the same top-sum
  bound), which the greedy guarantee needs. 'guarantee' is 1 - exp(-gamma) for a cardinality
  budget; for a knapsack, (1 - exp(-gamma)) / 2 if R >= 0 off the diagonal (gamma = 1), else 0.
  'applies' is True when the premises hold (monotone, and submodular for a knapsack).
  """
  u, r = energy.check_problem(u_N, R_NxN, lam, zero_diagonal=True)
  n = u.size
  k, costs, _ = _check_budget(budget, costs_N, n)
  off_N = ~np.eye(n, dtype=bool)
  neg = float(np.max(np.where(off_N, -r, 0.0), initial=0.0))
  if n <= exact_max_n:
    bits_MxN, f_M, gains_MxN = _all_subsets(u, r, lam)
    size_M = bits_MxN.sum(1).astype(int)
    masks_M = np.arange(2 ** n)
    monotone = bool(np.nanmin(gains_MxN[size_M <= 2 * k - 1], initial=np.inf) >= -1e-12)
    floor = 1e-12 * (1 + np.abs(f_M).max())
    gamma, pairs = 1.0, 0
    for low in np.flatnonzero(size_M <= k):
      s_mask = ((masks_M & low) == 0) & (size_M >= 1) & (size_M <= k)
      s_idx = masks_M[s_mask]
      den = f_M[s_idx | low] - f_M[low]
      pos = den > floor
      if pos.any():
        num = bits_MxN[s_idx[pos]] @ np.nan_to_num(gains_MxN[low])
        gamma = min(gamma, float((num / den[pos]).min()))
        pairs += int(pos.sum())
    kind = 'exact'
  else:
    pos_r = np.sort(np.where(off_N, np.maximum(r, 0.0), 0.0), axis=1)[:, ::-1]
    top = np.cumsum(pos_r, axis=1)

    def low_gain(size):  # a lower bound on F(L + x) - F(L) over |L| <= size
      return float((u - 2 * lam * top[:, min(size, n) - 1]).min()) if size else float(u.min())

    monotone = low_gain(2 * k - 1) >= 0
    m = low_gain(k)
    if neg == 0 or lam == 0:
      gamma, kind = 1.0, 'exact'
    else:
      gamma, kind = (m / (m + lam * (k - 1) * neg) if m > 0 else 0.0), 'lower_bound'
    pairs = None
  gamma = min(max(gamma, 0.0), 1.0)
  guarantee = 1 - math.exp(-gamma)
  if costs is not None:
    guarantee = guarantee / 2 if neg == 0 else 0.0
  return {'gamma': gamma, 'guarantee': guarantee, 'kind': kind, 'monotone': monotone,
          'applies': monotone and (costs is None or neg == 0), 'k': k, 'pairs': pairs}


def restrict_mixture(w_N, S) -> np.ndarray:
  """The continuous mixture w restricted to S (zero elsewhere), renormalized (uniform on S if 0)."""
  w = np.asarray(w_N, np.float64)
  idx = np.asarray(sorted(set(S)), int)
  if idx.size == 0 or idx.min() < 0 or idx.max() >= w.size:
    raise ValueError(f'taskpgm.S: expected a non-empty subset of 0..{w.size - 1}, got {S!r}')
  out = np.zeros_like(w)
  out[idx] = w[idx] if w[idx].sum() > 0 else 1.0
  return out / out.sum()


def resolve_mixture(u_N, R_NxN, lam: float, tau: float, S, tol: float = 1e-8) -> np.ndarray:
  """The continuous problem re-solved on S (zero elsewhere): the preferred way to weight S.

  tau > 0: mirror_descent on (u_S, R_SS); tau = 0: exact_qp on it. Re-solving, unlike
  restrict_mixture, lets the tasks in S take up the mass of the dropped tasks they overlapped with.
  """
  u, r = energy.check_problem(u_N, R_NxN, lam, tau)
  idx = np.asarray(sorted(set(S)), int)
  restrict_mixture(u, idx)  # validates S
  sub_u, sub_r = u[idx], r[np.ix_(idx, idx)]
  if tau > 0:
    w_sub = energy.mirror_descent(sub_u, sub_r, lam, tau, tol=tol)[0]
  else:
    w_sub = energy.exact_qp(sub_u, sub_r, lam)[0]
  out = np.zeros(u.size)
  out[idx] = w_sub
  return out
