"""TaskPGM energy on the simplex and its continuous minimizers.

  E(w) = -sum_i u_i w_i + lam * sum_{i, j} R_ij w_i w_j + tau * sum_i w_i log w_i

R is symmetric, lam >= 0 and tau >= 0. The gradient is g = -u + 2 lam R w + tau (log w + 1).
R's diagonal is each task's redundancy with itself. redundancy(..., self_term=False) zeroes it,
which is the pairwise-only energy (sum over i != j); self_term=True keeps R_ii (1 for JSD, the
self-PMI for PMI), so putting w_i on one task costs lam R_ii w_i^2 like a duplicate of it would.

Stopping rule (every solver): the Frank-Wolfe gap  res(w) = sum_j w_j g_j - min_i g_i >= 0.
It is 0 exactly at KKT points of the simplex-constrained problem, and it dominates both
max_i w_i |g_i - gbar| and max_i (gbar - g_i)_+ (gbar = w.g), so zero-weight coordinates whose
gradient says "come back in" are caught too; when E is convex, E(w) - min E <= res(w).

Caveat (zero diagonal): with tau = 0 and R >= 0 the minimizer is the vertex at argmax u: every
mixture pays a nonnegative redundancy and -u.w >= -max u, so with all-positive potentials (tasks
sharing an answer format) the pairwise-only energy concentrates on one task unless tau is large.
Zero diagonal also means the quadratic is never convex along edges e_i - e_j with R_ij > 0, so for
small tau the energy can have several local minima. With the self term the quadratic is convex
whenever R is positive semidefinite (nearly so for 1 - JSD / ln 2, a similarity with unit
diagonal), and redundancy then spreads weight across unrelated tasks. All solvers here except
exact_qp's enumeration return a KKT point, not a certified global minimum.
"""

import itertools
import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from mixing.taskpgm import potentials


def check_problem(u_N, R_NxN, lam: float, tau: float = 0.0,
                  zero_diagonal: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Validates (u, R, lam, tau); returns u and R as float64, R symmetrized (diagonal zeroed if asked)."""
  for name, value in (('lam', lam), ('tau', tau)):
    if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value >= 0):
      raise ValueError(f'taskpgm.{name}: must be >= 0, got {value!r}')
  u = np.asarray(u_N, np.float64)
  if u.ndim != 1 or u.size == 0 or not np.isfinite(u).all():
    raise ValueError(f'taskpgm.u_N: expected a finite non-empty 1-D array, got shape {u.shape}')
  r = np.asarray(R_NxN, np.float64)
  n = u.size
  if r.shape != (n, n):
    raise ValueError(f'taskpgm.R_NxN: expected shape ({n}, {n}) to match u_N, got {r.shape}')
  if not np.isfinite(r).all():
    raise ValueError('taskpgm.R_NxN: must be finite')
  asym = float(np.abs(r - r.T).max())
  if asym > 1e-8 * max(1.0, float(np.abs(r).max())):
    raise ValueError(f'taskpgm.R_NxN: must be symmetric, got max |R - R^T| = {asym:.3g}')
  r = (r + r.T) / 2
  if zero_diagonal:
    np.fill_diagonal(r, 0.0)
  return u, r


def redundancy(kind: str, jsd_NxN=None, pmi_NxN=None, self_term: bool = False) -> np.ndarray:
  """R from a potential: 'jsd' -> 1 - JSD / ln 2, in [0, 1]; 'pmi' -> max(PMI, 0).

  The diagonal is zero (the pairwise-only energy) unless self_term, which keeps R_ii: 1 for JSD
  (JSD_ii = 0) and max(PMI_ii, 0), a task's agreement with itself, for PMI.
  """
  if kind not in ('jsd', 'pmi'):
    raise ValueError(f"taskpgm.kind: must be 'jsd' or 'pmi', got {kind!r}")
  name, value = ('jsd_NxN', jsd_NxN) if kind == 'jsd' else ('pmi_NxN', pmi_NxN)
  if value is None:
    raise ValueError(f'taskpgm.{name}: required for kind={kind!r}, got None')
  m = np.asarray(value, np.float64)
  if m.ndim != 2 or m.shape[0] != m.shape[1] or not np.isfinite(m).all():
    raise ValueError(f'taskpgm.{name}: expected a finite square matrix, got shape {m.shape}')
  r = 1.0 - m / potentials.LN2 if kind == 'jsd' else np.maximum(m, 0.0)
  r = np.clip((r + r.T) / 2, 0.0, None)
  if kind == 'jsd':
    np.fill_diagonal(r, 1.0)
  if not self_term:
    np.fill_diagonal(r, 0.0)
  return r


def energy(w_N, u_N, R_NxN, lam: float, tau: float) -> float:
  """E(w) in float64 (0 log 0 = 0)."""
  u, r = check_problem(u_N, R_NxN, lam, tau)
  w = np.asarray(w_N, np.float64)
  if w.shape != u.shape:
    raise ValueError(f'taskpgm.w_N: expected shape {u.shape} to match u_N, got {w.shape}')
  entropy_term = float(np.sum(w * np.log(np.where(w > 0, w, 1.0))))
  return float(-u @ w + lam * w @ r @ w + tau * entropy_term)


def _check_loop(tol, max_iters) -> None:
  if not (isinstance(tol, (int, float, np.number)) and tol > 0):
    raise ValueError(f'taskpgm.tol: must be > 0, got {tol!r}')
  if isinstance(max_iters, bool) or not isinstance(max_iters, (int, np.integer)) or max_iters < 1:
    raise ValueError(f'taskpgm.max_iters: must be an integer >= 1, got {max_iters!r}')


def _parts(theta_N, u_N, R_NxN, lam, tau):
  """(w, E, g, residual) at the normalized log-weights theta (finite even where w underflows)."""
  w_N = jnp.exp(theta_N)
  rw_N = R_NxN @ w_N
  e = -u_N @ w_N + lam * (w_N @ rw_N) + tau * jnp.sum(w_N * theta_N)
  g_N = -u_N + 2 * lam * rw_N + tau * (theta_N + 1)
  return w_N, e, g_N, w_N @ g_N - jnp.min(g_N)


@jax.jit
def _mirror_descent_loop(u_N, R_NxN, lam, tau, theta_N, eta_min, tol, max_iters):
  """Entropic mirror descent with Bregman backtracking (see mirror_descent)."""

  def cond(state):
    it, _, _, _, _, res = state
    return (it < max_iters) & (res > tol)

  def body(state):
    it, theta, e, g, eta, res = state
    cand = theta - eta * g
    cand = cand - jax.nn.logsumexp(cand)
    w = jnp.exp(theta)
    w_c, e_c, g_c, res_c = _parts(cand, u_N, R_NxN, lam, tau)
    kl = jnp.sum(w_c * (cand - theta))
    bound = e + g @ (w_c - w) + kl / eta + 1e-13 * (1 + jnp.abs(e))
    ok = (e_c <= bound) | (eta <= eta_min)
    return (it + 1, jnp.where(ok, cand, theta), jnp.where(ok, e_c, e), jnp.where(ok, g_c, g),
            jnp.where(ok, jnp.minimum(eta * 1.25, eta_min * 1e6), jnp.maximum(eta / 2, eta_min)),
            jnp.where(ok, res_c, res))

  _, e, g, res = _parts(theta_N, u_N, R_NxN, lam, tau)
  return lax.while_loop(cond, body, (0, theta_N, e, g, eta_min, res))


def mirror_descent(u_N, R_NxN, lam: float, tau: float, tol: float = 1e-8,
                   max_iters: int = 100_000, w0_N=None) -> tuple[np.ndarray, dict]:
  """Minimizes E on the simplex by exponentiated gradient, in float64 under jit.

  The objective is (L + tau)-smooth relative to the negative entropy, L = 2 lam max_ij |R_ij|
  (Pinsker), so the step 1 / (L + tau) always decreases E. Each iteration tries a step eta and
  accepts it when E(w+) <= E(w) + g.(w+ - w) + KL(w+ || w) / eta; accepted steps grow eta by 1.25x
  (cap 1e6 / (L + tau)), rejected ones halve it (never below 1 / (L + tau)). Iterates stay in the
  relative interior; weights are carried as logs so they may underflow without NaNs.

  Returns:
    (w_N, info) with info = {iterations, residual (Frank-Wolfe gap), converged, energy}.
  """
  u, r = check_problem(u_N, R_NxN, lam, tau)
  _check_loop(tol, max_iters)
  w0 = np.full(u.size, 1.0 / u.size) if w0_N is None else np.asarray(w0_N, np.float64)
  if w0.shape != u.shape or (w0 <= 0).any():
    raise ValueError(f'taskpgm.w0_N: expected {u.size} positive weights, got shape {w0.shape}')
  smooth = 2 * lam * float(np.abs(r).max()) + tau
  eta_min = 1.0 / smooth if smooth > 0 else 1e12
  with jax.enable_x64(True):
    theta = jnp.log(jnp.asarray(w0 / w0.sum()))
    it, theta, e, _, _, res = _mirror_descent_loop(
        jnp.asarray(u), jnp.asarray(r), float(lam), float(tau), theta, eta_min, float(tol),
        int(max_iters))
    w, it, res, e = np.exp(np.asarray(theta)), int(it), float(res), float(e)
  return w / w.sum(), {'iterations': it, 'residual': res, 'converged': res <= tol, 'energy': e}


@jax.jit
def _fixed_point_loop(u_N, R_NxN, lam, tau, damping, theta_N, tol, max_iters):

  def cond(state):
    it, _, res = state
    return (it < max_iters) & (res > tol)

  def body(state):
    it, theta, _ = state
    target = jax.nn.log_softmax((u_N - 2 * lam * (R_NxN @ jnp.exp(theta))) / tau)
    theta = jnp.logaddexp(jnp.log1p(-damping) + theta, jnp.log(damping) + target)
    theta = theta - jax.nn.logsumexp(theta)
    return it + 1, theta, _parts(theta, u_N, R_NxN, lam, tau)[3]

  return lax.while_loop(cond, body, (0, theta_N, _parts(theta_N, u_N, R_NxN, lam, tau)[3]))


def fixed_point(u_N, R_NxN, lam: float, tau: float, tol: float = 1e-8,
                max_iters: int = 100_000, damping=None) -> tuple[np.ndarray, dict]:
  """tau > 0: iterates w <- (1 - a) w + a softmax((u - 2 lam R w) / tau) from uniform (float64).

  Its fixed points are exactly the interior KKT points of E. The undamped map is an l1 contraction
  with factor <= lam / (2 tau) * max_ik osc_j(R_ij - R_kj) <= kappa = lam / tau * max_i osc_j R_ij
  (softmax's Jacobian maps l_inf to l1 with norm <= 1/2 of the oscillation); when kappa < 1 it
  converges from anywhere and the default damping is a = 1. Otherwise the default
  a = 1 / (1 + 2 lam ||R||_2 / tau) makes every nondegenerate local minimizer locally attracting,
  but the iteration may then be slow, may stall (info['converged'] False) or may reach a different
  local minimizer than mirror_descent when E is nonconvex (small tau relative to lam ||R||).
  """
  u, r = check_problem(u_N, R_NxN, lam, tau)
  if tau <= 0:
    raise ValueError(f'taskpgm.tau: fixed_point needs tau > 0, got {tau!r}')
  _check_loop(tol, max_iters)
  kappa = lam / tau * float(np.ptp(r, axis=1).max())  # osc(R_i - R_k) <= osc(R_i) + osc(R_k)
  if damping is None:
    damping = 1.0 if kappa < 1 else 1.0 / (1.0 + 2 * lam * np.linalg.norm(r, 2) / tau)
  if not 0 < damping <= 1:
    raise ValueError(f'taskpgm.damping: must be in (0, 1], got {damping!r}')
  with jax.enable_x64(True):
    it, theta, res = _fixed_point_loop(
        jnp.asarray(u), jnp.asarray(r), float(lam), float(tau), float(min(damping, 1 - 1e-16)),
        jnp.full(u.size, -math.log(u.size)), float(tol), int(max_iters))
    w, it, res = np.exp(np.asarray(theta)), int(it), float(res)
  w = w / w.sum()
  return w, {'iterations': it, 'residual': res, 'converged': res <= tol,
             'energy': energy(w, u, r, lam, tau), 'damping': float(damping), 'kappa': kappa}


def _kkt_residual(w, u, r, lam) -> float:
  g = -u + 2 * lam * r @ w
  return float(w @ g - g.min())


def exact_qp(u_N, R_NxN, lam: float, max_enum_n: int = 14) -> tuple[np.ndarray, dict]:
  """tau = 0: minimizes -u.w + lam w^T R w on the simplex (R may be indefinite).

  * R >= 0 off the diagonal and zero on it: the vertex at argmax u, exactly (module docstring).
  * N <= max_enum_n: enumerates every support S; on each, solves the KKT system
    [2 lam R_SS, -1; 1^T, 0] [w_S; mu] = [u_S; 1] and keeps the best feasible (w_S >= 0) solution.
    Exact: a minimizer of least support lies in its face's relative interior, where the reduced
    Hessian is nonsingular, so it is one of these solutions.
  * Otherwise: mirror_descent, then the KKT system on its support (polish). A KKT point; global
    when lam R is positive semidefinite on the tangent space {sum d = 0} (info['global']).
  Ties go to the smaller support.

  Returns:
    (w_N, info) with info = {method, global, energy, residual, support}.
  """
  u, r = check_problem(u_N, R_NxN, lam, 0.0)
  n = u.size
  off = r[~np.eye(n, dtype=bool)]
  if n == 1 or lam == 0 or ((off >= 0).all() and not np.diag(r).any()):
    w = np.eye(n)[int(np.argmax(u))]
    method = 'vertex'
  elif n <= max_enum_n:
    vertex_E = -u + lam * np.diag(r)  # supports of size 1
    w, best = np.eye(n)[int(np.argmin(vertex_E))], float(np.min(vertex_E))
    for size in range(2, n + 1):
      s_CxS = np.array(list(itertools.combinations(range(n), size)))
      k_CxMxM = np.zeros((len(s_CxS), size + 1, size + 1))
      k_CxMxM[:, :size, :size] = 2 * lam * r[s_CxS[:, :, None], s_CxS[:, None, :]]
      k_CxMxM[:, :size, size], k_CxMxM[:, size, :size] = -1.0, 1.0
      ok = np.linalg.cond(k_CxMxM) < 1e12
      if not ok.any():
        continue
      rhs = np.concatenate([u[s_CxS[ok]], np.ones((ok.sum(), 1))], axis=1)
      ws_CxS = np.linalg.solve(k_CxMxM[ok], rhs[..., None])[:, :size, 0]
      feasible = (ws_CxS >= -1e-12).all(1)
      for support, ws in zip(s_CxS[ok][feasible], ws_CxS[feasible]):
        cand = np.zeros(n)
        cand[support] = np.clip(ws, 0, None) / np.clip(ws, 0, None).sum()
        e = float(-u @ cand + lam * cand @ r @ cand)
        if e < best - 1e-12:
          w, best = cand, e
    method = 'enumeration'
  else:
    w, _ = mirror_descent(u, r, lam, 0.0)
    support = np.flatnonzero(w > 1e-9)
    size = support.size
    kkt = np.zeros((size + 1, size + 1))
    kkt[:size, :size] = 2 * lam * r[np.ix_(support, support)]
    kkt[:size, size], kkt[size, :size] = -1.0, 1.0
    if np.linalg.cond(kkt) < 1e12:
      ws = np.linalg.solve(kkt, np.append(u[support], 1.0))[:size]
      if (ws >= 0).all():
        cand = np.zeros(n)
        cand[support] = ws
        if -u @ cand + lam * cand @ r @ cand <= -u @ w + lam * w @ r @ w:
          w = cand
    method = 'active_set'
  convex = method != 'active_set'
  if not convex:  # lam R positive semidefinite on the tangent space: every KKT point is global
    basis_NxM = np.linalg.qr(np.eye(n) - 1.0 / n)[0][:, :n - 1]
    convex = float(np.linalg.eigvalsh(lam * basis_NxM.T @ r @ basis_NxM).min()) >= -1e-12
  return w, {'method': method, 'global': convex,
             'energy': float(-u @ w + lam * w @ r @ w), 'residual': _kkt_residual(w, u, r, lam),
             'support': np.flatnonzero(w > 0).tolist()}
