"""TaskPGM core: potentials vs NumPy loops, solvers vs SLSQP / each other, greedy vs brute force."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import optimize

from mixing.taskpgm import energy
from mixing.taskpgm import greedy
from mixing.taskpgm import potentials

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LN2 = math.log(2)


def _probs(rng, n=7, p=6, v=11, scale=2.0):
  logits = rng.normal(size=(n, p, v)) * scale
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  return (probs / probs.sum(-1, keepdims=True)).astype(np.float32)


def _symmetric(rng, n, low=0.0, high=1.0):
  a = rng.uniform(low, high, (n, n))
  r = (a + a.T) / 2
  np.fill_diagonal(r, 0.0)
  return r


def test_jsd_properties_and_loop():
  rng = np.random.default_rng(0)
  probs = _probs(rng)
  probs[1] = probs[0]  # identical models
  probs[2, :, :5], probs[3, :, 5:] = 0, 0  # disjoint supports
  probs[2:4] /= probs[2:4].sum(-1, keepdims=True)
  weights = rng.uniform(0.1, 1.0, probs.shape[1])
  jsd = potentials.jsd_matrix(probs, weights, chunk=3)
  np.testing.assert_array_equal(jsd, jsd.T)
  np.testing.assert_array_equal(np.diag(jsd), 0)
  assert jsd.min() >= 0 and jsd.max() <= LN2
  assert jsd[0, 1] < 1e-6 and abs(jsd[2, 3] - LN2) < 1e-6
  loop_jsd, _ = potentials.pairwise_numpy_loop(probs, weights)
  np.testing.assert_allclose(jsd, loop_jsd, atol=2e-6)
  for chunk in (1, 2, 5, 64):
    np.testing.assert_allclose(potentials.jsd_matrix(probs, weights, chunk=chunk), jsd, atol=1e-6)
  # Zero weight on a position = dropping it.
  weights[0] = 0.0
  np.testing.assert_allclose(potentials.jsd_matrix(probs, weights),
                             potentials.jsd_matrix(probs[:, 1:], weights[1:]), atol=1e-6)


def test_jsd_sharded_over_two_devices_matches():
  code = ('import numpy as np, jax; from mixing.taskpgm import potentials as p; '
          'assert len(jax.devices()) == 2; x = np.load(sys.argv[1]); '
          'np.save(sys.argv[1], p.jsd_matrix(x, chunk=2))')
  rng = np.random.default_rng(1)
  probs = _probs(rng, n=9)
  path = f'/tmp/taskpgm_test_{os.getpid()}.npy'
  np.save(path, probs)
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=2')
  subprocess.run([sys.executable, '-c', 'import sys; ' + code, path], env=env, check=True)
  np.testing.assert_allclose(np.load(path), potentials.jsd_matrix(probs, chunk=2), atol=1e-6)
  os.remove(path)


def test_pmi():
  rng = np.random.default_rng(2)
  n, p, v = 5, 8, 13
  # Predictions that do not depend on the probe: E_x[sum p_i p_j] = sum pbar_i pbar_j.
  constant = np.repeat(_probs(rng, n, 1, v), p, axis=1)
  np.testing.assert_allclose(potentials.pmi_matrix(constant), 0, atol=1e-8)
  # Models that agree on probe-dependent predictions: PMI > 0.
  shared = _probs(rng, 1, p, v, scale=3.0)
  agree = 0.8 * shared + 0.2 * _probs(rng, n, p, v)
  pmi = potentials.pmi_matrix(agree)
  assert pmi[~np.eye(n, dtype=bool)].min() > 0.1
  weights = rng.uniform(0, 1, p)
  probs = _probs(rng, n, p, v)
  np.testing.assert_allclose(potentials.pmi_matrix(probs, weights),
                             potentials.pairwise_numpy_loop(probs, weights)[1], atol=1e-5)


def test_self_term_spreads_over_distinct_tasks():
  # Tasks 0 and 1 behave identically; task 2 shares only a format with them (JSD 0.4).
  jsd = np.array([[0, 0, 0.4], [0, 0, 0.4], [0.4, 0.4, 0]])
  u = np.array([1.0, 1.0, 0.9])
  with_self = energy.redundancy('jsd', jsd_NxN=jsd, self_term=True)
  np.testing.assert_allclose(np.diag(with_self), 1.0)
  w, info = energy.mirror_descent(u, with_self, 1.0, 0.05)
  assert info['converged']
  np.testing.assert_allclose(w[0], w[1], atol=1e-8)
  assert 0.35 < w[2] < 0.55 and w[0] + w[1] > 0.45  # the duplicates count once, not twice
  pairwise_only, _ = energy.mirror_descent(u, energy.redundancy('jsd', jsd_NxN=jsd), 1.0, 0.05)
  assert pairwise_only.max() > 0.99  # i != j only: any two tasks together pay, one task is free


def test_redundancy():
  jsd = np.array([[0, LN2, 0.1], [LN2, 0, 0.2], [0.1, 0.2, 0]])
  r = energy.redundancy('jsd', jsd_NxN=jsd)
  np.testing.assert_allclose(r, 1 - jsd / LN2 - np.eye(3))
  pmi = np.array([[0.3, -1.0, 0.5], [-1.0, 0.2, 0.1], [0.5, 0.1, 0.4]])
  np.testing.assert_allclose(energy.redundancy('pmi', pmi_NxN=pmi),
                             [[0, 0, 0.5], [0, 0, 0.1], [0.5, 0.1, 0]])


def _slsqp(u, r, lam, tau):
  n = u.size

  def grad(w):
    return -u + 2 * lam * r @ w + tau * (np.log(np.clip(w, 1e-300, None)) + 1)

  res = optimize.minimize(lambda w: energy.energy(np.clip(w, 0, None), u, r, lam, tau),
                          np.full(n, 1 / n), jac=grad, method='SLSQP', bounds=[(0, 1)] * n,
                          constraints=[{'type': 'eq', 'fun': lambda w: w.sum() - 1,
                                        'jac': lambda w: np.ones(n)}],
                          options={'ftol': 1e-15, 'maxiter': 2000})
  return res.x


def _instances():
  """(u, R, lam, tau) with a unique minimizer, for every tau in {0, 0.05, 0.5}."""
  rng = np.random.default_rng(3)
  out = []
  for t, n in enumerate([5, 8, 12, 5, 8, 12]):
    tau, lam = (0.05, 0.5)[t % 2], rng.uniform(0.1, 2.0)
    # lam * max R < tau makes E strictly convex on the simplex (see energy.fixed_point).
    r = _symmetric(rng, n) * 0.9 * tau / lam
    out.append((rng.normal(size=n), r, lam, tau))
  for n in (5, 8, 12):  # tau = 0, complementary tasks: lam R positive definite on sum(d) = 0
    e = _symmetric(rng, n, -1, 1)
    r = np.eye(n) - np.ones((n, n)) + 0.5 * e / np.linalg.norm(e, 2)
    out.append((0.3 * rng.normal(size=n), r, rng.uniform(0.1, 2.0), 0.0))
  u = np.array([1.0, 0.6, 0.3, 0.2, 0.0])  # tau = 0, R >= 0: the vertex at argmax u
  out.append((u, 0.9 * _symmetric(rng, 5), 0.15, 0.0))
  for tau in (0.05, 0.0):  # the self term: a similarity with unit diagonal, positive definite
    x = rng.uniform(0, 1, (8, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out.append((rng.normal(size=8), 0.5 * x @ x.T + 0.5 * np.eye(8), 1.0, tau))
  return out


@pytest.mark.parametrize('case', range(12))
def test_mirror_descent_matches_slsqp(case):
  u, r, lam, tau = _instances()[case]
  w, info = energy.mirror_descent(u, r, lam, tau)
  assert info['converged'] and info['residual'] <= 1e-8
  reference = _slsqp(u, r, lam, tau)
  # SLSQP stops short of the minimizer by up to ~2e-4 in w on some instances (scipy 1.17's, case 2:
  # its E is 2.3e-7 above mirror descent's), so the points agree to 1e-3 and the energy decides.
  np.testing.assert_allclose(w, reference, atol=1e-3)
  # E(w) - min E <= the Frank-Wolfe gap on these convex instances.
  assert energy.energy(w, u, r, lam, tau) <= energy.energy(reference, u, r, lam, tau) + 1e-8
  if tau > 0:
    w_fp, info_fp = energy.fixed_point(u, r, lam, tau)
    assert info_fp['converged']
    np.testing.assert_allclose(w_fp, w, atol=1e-6)
  else:
    w_qp, info_qp = energy.exact_qp(u, r, lam)
    assert info_qp['global'] and info_qp['residual'] < 1e-9
    np.testing.assert_allclose(w_qp, w, atol=1e-6)


def test_nonconvex_solvers():
  rng = np.random.default_rng(4)
  n = 8
  u, r = rng.normal(size=n), _symmetric(rng, n)
  # tau = 0.05, lam = 1: not convex; every solver still ends at a KKT point.
  w, info = energy.mirror_descent(u, r, 1.0, 0.05)
  assert info['converged'] and info['energy'] <= energy.energy(np.full(n, 1 / n), u, r, 1.0, 0.05)
  w_fp, info_fp = energy.fixed_point(u, r, 1.0, 0.05)
  assert info_fp['kappa'] > 1 and info_fp['damping'] < 1
  if info_fp['converged']:
    g = -u + 2 * r @ w_fp + 0.05 * (np.log(w_fp) + 1)
    assert w_fp @ g - g.min() <= 1e-8
  # tau = 0 with an indefinite R: enumeration is exact, beats or ties mirror descent.
  r_mixed = _symmetric(rng, n, -1, 1)
  w_qp, info_qp = energy.exact_qp(u, r_mixed, 1.0)
  w_md, info_md = energy.mirror_descent(u, r_mixed, 1.0, 0.0)
  assert info_qp['method'] == 'enumeration' and info_qp['residual'] < 1e-9
  assert info_qp['energy'] <= info_md['energy'] + 1e-9
  brute = min(energy.energy(w, u, r_mixed, 1.0, 0.0) for w in rng.dirichlet(np.ones(n) / 4, 2000))
  assert info_qp['energy'] <= brute


def _greedy_instances():
  rng = np.random.default_rng(5)
  for t in range(8):
    n = int(rng.integers(5, 11))
    r = _symmetric(rng, n, -0.6 if t % 2 else 0.0, 1.0)
    # u >= 1 and 2 lam (n - 1) max R <= 1 keep F monotone (asserted below).
    yield rng.uniform(1, 2, n), r, rng.uniform(0.01, 0.5 / (n - 1)), int(rng.integers(1, n)), rng


def test_greedy_vs_brute_force():
  """F monotone on sets of size <= 2k: greedy >= (1 - exp(-gamma)) OPT; knapsack, R >= 0: /2."""
  for u, r, lam, k, rng in _greedy_instances():
    info = greedy.submodularity_ratio(u, r, lam, k)
    assert info['monotone'] and info['applies'] and info['kind'] == 'exact'
    _, best = greedy.brute_force_best(u, r, lam, k)
    chosen, value = greedy.greedy_select(u, r, lam, k)
    assert len(chosen) <= k and value == pytest.approx(greedy.value(chosen, u, r, lam))
    assert value >= info['guarantee'] * best - 1e-9
    if (r[~np.eye(u.size, dtype=bool)] >= 0).all():
      assert info['gamma'] == pytest.approx(1.0)
    bound = greedy.submodularity_ratio(u, r, lam, k, exact_max_n=0)
    assert bound['gamma'] <= info['gamma'] + 1e-12
    costs = rng.uniform(1, 3, u.size)
    tokens = float(rng.uniform(costs.min(), costs.sum() / 2))
    chosen, value = greedy.greedy_select(u, r, lam, tokens, costs)
    _, best = greedy.brute_force_best(u, r, lam, tokens, costs)
    assert costs[chosen].sum() <= tokens
    knapsack = greedy.submodularity_ratio(u, r, lam, tokens, costs)
    assert knapsack['applies'] == (r[~np.eye(u.size, dtype=bool)] >= 0).all()
    assert value >= knapsack['guarantee'] * best


def test_submodularity_ratio_complementary():
  u, lam = np.ones(4), 0.1
  r = -np.ones((4, 4))  # complementary tasks: supermodular, gamma < 1
  info = greedy.submodularity_ratio(u, r, lam, 2)
  # L = {}, S = {a, b}: (1 + 1) / (2 + 0.2).
  assert info['gamma'] == pytest.approx(2 / 2.2)
  assert info['guarantee'] == pytest.approx(1 - math.exp(-2 / 2.2))
  bound = greedy.submodularity_ratio(u, r, lam, 2, exact_max_n=0)
  assert bound['kind'] == 'lower_bound' and 0 < bound['gamma'] <= info['gamma']


def test_restrict_and_resolve():
  rng = np.random.default_rng(6)
  u, r = rng.normal(size=6), _symmetric(rng, 6)
  w, _ = energy.mirror_descent(u, r, 0.5, 0.3)
  restricted = greedy.restrict_mixture(w, [1, 3])
  np.testing.assert_allclose(restricted[[1, 3]], w[[1, 3]] / w[[1, 3]].sum())
  assert restricted.sum() == pytest.approx(1) and (restricted[[0, 2, 4, 5]] == 0).all()
  resolved = greedy.resolve_mixture(u, r, 0.5, 0.3, [1, 3, 4])
  sub, _ = energy.mirror_descent(u[[1, 3, 4]], r[np.ix_([1, 3, 4], [1, 3, 4])], 0.5, 0.3)
  np.testing.assert_allclose(resolved[[1, 3, 4]], sub, atol=1e-9)
  assert resolved[[0, 2, 5]].sum() == 0


def test_bad_inputs():
  u, r = np.ones(3), np.zeros((3, 3))
  with pytest.raises(ValueError, match=r'^taskpgm\.lam: must be >= 0, got -1\.0$'):
    energy.mirror_descent(u, r, -1.0, 0.1)
  with pytest.raises(ValueError, match=r'^taskpgm\.tau: must be >= 0, got -0\.5$'):
    energy.energy(u / 3, u, r, 1.0, -0.5)
  with pytest.raises(ValueError, match=r'^taskpgm\.R_NxN: expected shape \(3, 3\)'):
    energy.exact_qp(u, np.zeros((3, 4)), 1.0)
  with pytest.raises(ValueError, match=r'^taskpgm\.R_NxN: must be symmetric'):
    energy.mirror_descent(u, np.triu(np.ones((3, 3))), 1.0, 0.1)
  with pytest.raises(ValueError, match=r'^taskpgm\.tau: fixed_point needs tau > 0'):
    energy.fixed_point(u, r, 1.0, 0.0)
  with pytest.raises(ValueError, match=r'^taskpgm\.budget: must be an integer >= 1'):
    greedy.greedy_select(u, r, 1.0, 0)
  with pytest.raises(ValueError, match=r'^taskpgm\.budget: must be >= the cheapest task cost 2'):
    greedy.greedy_select(u, r, 1.0, 1.5, costs_N=[2.0, 3.0, 4.0])
  with pytest.raises(ValueError, match=r'^taskpgm\.costs_N: expected 3 finite costs'):
    greedy.greedy_select(u, r, 1.0, 1.5, costs_N=[2.0, 3.0])
  with pytest.raises(ValueError, match=r"^taskpgm\.kind: must be 'jsd' or 'pmi', got 'kl'$"):
    energy.redundancy('kl', jsd_NxN=r)
  with pytest.raises(ValueError, match=r'^taskpgm\.probs_NxPxV: expected a non-empty \(N, P, V\)'):
    potentials.jsd_matrix(np.ones((3, 4)))
  with pytest.raises(ValueError, match=r'^taskpgm\.probs_NxPxV: must be finite and >= 0'):
    potentials.pmi_matrix(-np.ones((2, 3, 4)))
  with pytest.raises(ValueError, match=r'^taskpgm\.weights_P: expected shape \(3,\)'):
    potentials.jsd_matrix(np.ones((2, 3, 4)) / 4, weights_P=np.ones(4))
  with pytest.raises(ValueError, match=r'^taskpgm\.chunk: must be an integer >= 1, got 0$'):
    potentials.jsd_matrix(np.ones((2, 3, 4)) / 4, chunk=0)


def test_exhaustive_value_matches_enumeration_and_bounds_greedy():
  rng = np.random.default_rng(3)
  for n, k in ((9, 3), (12, 5)):
    u = rng.normal(size=n)
    r = rng.uniform(-0.2, 1, size=(n, n))
    r = (r + r.T) / 2
    best = greedy.exhaustive_value(u, r, 0.4, k, chunk=17)  # chunks smaller than C(n, k)
    assert best == pytest.approx(greedy.brute_force_best(u, r, 0.4, k)[1], abs=1e-12)
    assert greedy.greedy_select(u, r, 0.4, k)[1] <= best + 1e-12


def test_top_k_support_keeps_mass_and_bounds_jsd_from_below():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((6, 8, 50)) * 2
  probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  support = potentials.top_k_support(probs.mean(0), 10)
  assert support.shape == (8, 10)
  reduced = np.stack([potentials.reduce_to_support(p, support) for p in probs])
  assert reduced.shape == (6, 8, 11)
  np.testing.assert_allclose(reduced.sum(-1), 1.0, rtol=1e-5)
  full, small = potentials.jsd_matrix(probs), potentials.jsd_matrix(reduced)
  assert (small <= full + 1e-5).all() and small[np.triu_indices(6, 1)].min() > 0
  everything = potentials.top_k_support(probs.mean(0), 50)  # the whole vocabulary: exact
  whole = np.stack([potentials.reduce_to_support(p, everything) for p in probs])
  np.testing.assert_allclose(potentials.jsd_matrix(whole), full, atol=1e-5)
