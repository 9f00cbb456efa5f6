"""TaskPGM pairwise potentials: Jensen-Shannon divergence and PMI between single-task models.

Every task i has a fine-tuned model whose teacher-forced next-token distributions on shared probes
are probs_NxPxV[i] (P = probe x target-position pairs, V = vocabulary). Averages over P are the
weights_P-weighted mean (weights normalized to sum 1; uniform by default).

  JSD_ij = E_p[H((p_i + p_j) / 2) - (H(p_i) + H(p_j)) / 2]             natural log, in [0, ln 2]
  PMI_ij = log(E_p[sum_v p_i p_j] / sum_v pbar_i pbar_j),  pbar_i = E_p[p_i(.|x_p)]

Only H((p_i + p_j) / 2) is pairwise: N^2 / 2 * P * V logarithms, the whole cost. They are computed
in float32 for blocks of `chunk` x `chunk` models (upper-triangle blocks only), one fused
add-log-multiply-reduce per block pair inside a lax.scan, so memory is O(chunk^2 * P) beyond the
input. The block pairs are sharded over every local device with shard_map; on a CPU host, start
JAX with jax.config.update('jax_num_cpu_devices', os.cpu_count()) to use all cores.
PMI's numerator is a Gram matrix of the probe-centred predictions (one matmul over P * V).
"""

import math

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

LN2 = math.log(2.0)
_TINY = float(np.finfo(np.float32).tiny)  # s * log(max(s, tiny)) is 0 at s = 0: xlogx without NaN


def check_probs(probs_NxPxV, weights_P=None) -> tuple[np.ndarray, np.ndarray]:
  """Validates the inputs; returns (probs as float32, weights_P as float64 summing to 1)."""
  probs = np.asarray(probs_NxPxV)
  if probs.ndim != 3 or 0 in probs.shape:
    raise ValueError(f'taskpgm.probs_NxPxV: expected a non-empty (N, P, V) array, got shape '
                     f'{probs.shape}')
  probs = probs.astype(np.float32, copy=False)
  if not np.isfinite(probs).all() or (probs < 0).any():
    raise ValueError('taskpgm.probs_NxPxV: must be finite and >= 0, got min '
                     f'{np.nanmin(probs)} (finite: {bool(np.isfinite(probs).all())})')
  p = probs.shape[1]
  if weights_P is None:
    return probs, np.full(p, 1.0 / p)
  w = np.asarray(weights_P, np.float64)
  if w.shape != (p,):
    raise ValueError(f'taskpgm.weights_P: expected shape ({p},) to match probs_NxPxV, got '
                     f'{w.shape}')
  if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
    raise ValueError(f'taskpgm.weights_P: must be finite, >= 0 and not all 0, got min {w.min()}, '
                     f'sum {w.sum()}')
  return probs, w / w.sum()


def _xlogx_sum_V(x):
  return jnp.sum(x * jnp.log(jnp.maximum(x, _TINY)), axis=-1)


@jax.jit
def _self_terms_NxP(x_NxPxV):
  """c_ip = sum_v p log p + ln2 * sum_v p, so that JSD_p = (c_i + c_j - sum_v s log s) / 2, s=p_i+p_j."""
  return _xlogx_sum_V(x_NxPxV) + LN2 * jnp.sum(x_NxPxV, axis=-1)


def _block_pairs_KxBxB(x_MxPxV, c_MxP, w_P, pairs_Kx2, block: int):
  """The B x B JSD blocks for each (row block, column block) pair, one block pair per scan step."""

  def step(_, pair_2):
    a_BxPxV = lax.dynamic_slice_in_dim(x_MxPxV, pair_2[0] * block, block)
    b_BxPxV = lax.dynamic_slice_in_dim(x_MxPxV, pair_2[1] * block, block)
    ca_BxP = lax.dynamic_slice_in_dim(c_MxP, pair_2[0] * block, block)
    cb_BxP = lax.dynamic_slice_in_dim(c_MxP, pair_2[1] * block, block)
    # One fused loop: s = a + b, s log s, summed over V; the B x B x P x V block is never stored.
    sls_BxBxP = _xlogx_sum_V(a_BxPxV[:, None] + b_BxPxV[None])
    jsd_BxBxP = 0.5 * (ca_BxP[:, None] + cb_BxP[None] - sls_BxBxP)
    return None, jnp.sum(jsd_BxBxP * w_P, axis=-1)

  return lax.scan(step, None, pairs_Kx2)[1]


def _sharded_kernel(devices: tuple, block: int):
  mesh = jax.sharding.Mesh(np.array(devices), ('d',))
  rep, shard = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec('d')
  fn = lambda x, c, w, pairs: _block_pairs_KxBxB(x, c, w, pairs, block)
  return mesh, jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(rep, rep, rep, shard),
                                     out_specs=shard))


_KERNELS = {}


def jsd_matrix(probs_NxPxV, weights_P=None, chunk: int = 16, devices=None) -> np.ndarray:
  """Jensen-Shannon divergences (nats) between the N models, averaged over P: N x N float64.

  Args:
    probs_NxPxV: each model's predictive distributions at the P probe positions (float32 used).
    weights_P: nonnegative position weights (default uniform); normalized to sum 1.
    chunk: models per block; each scan step evaluates chunk^2 * P * V logarithms.
    devices: devices to shard block pairs over (default: all local devices).

  Returns:
    Symmetric, zero diagonal, clipped to [0, ln 2].
  """
  probs, w = check_probs(probs_NxPxV, weights_P)
  if not isinstance(chunk, (int, np.integer)) or chunk < 1:
    raise ValueError(f'taskpgm.chunk: must be an integer >= 1, got {chunk!r}')
  n, p, v = probs.shape
  block = int(min(chunk, n))
  num_blocks = -(-n // block)
  devices = tuple(devices or jax.local_devices())
  bi, bj = np.triu_indices(num_blocks)
  num_pairs = len(bi)
  padded = -(-num_pairs // len(devices)) * len(devices)
  pairs_Kx2 = np.zeros((padded, 2), np.int32)  # padding repeats block pair (0, 0): discarded
  pairs_Kx2[:num_pairs, 0], pairs_Kx2[:num_pairs, 1] = bi, bj
  key = (devices, block)
  if key not in _KERNELS:
    _KERNELS[key] = _sharded_kernel(devices, block)
  mesh, kernel = _KERNELS[key]
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  x = probs if n == num_blocks * block else np.concatenate(
      [probs, np.zeros((num_blocks * block - n, p, v), np.float32)])
  x_MxPxV = jax.device_put(x, rep)
  del x
  c_MxP = _self_terms_NxP(x_MxPxV)
  pairs = jax.device_put(pairs_Kx2, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('d')))
  out_KxBxB = np.asarray(kernel(x_MxPxV, c_MxP, jax.device_put(w.astype(np.float32), rep), pairs),
                         np.float64)[:num_pairs]
  m = num_blocks * block
  full_MxM = np.zeros((m, m))
  full_MxM.reshape(num_blocks, block, num_blocks, block)[bi, :, bj, :] = out_KxBxB
  upper = np.triu(full_MxM[:n, :n], 1)
  return np.clip(upper + upper.T, 0.0, LN2)


@jax.jit
def _centred_gram(x_NxPxV, w_P):
  """pbar_NxV and C_NxN = sum_p w_p sum_v (p_i - pbar_i)(p_j - pbar_j)."""
  pbar_NxV = jnp.einsum('npv,p->nv', x_NxPxV, w_P, precision=lax.Precision.HIGHEST)
  xc_NxF = ((x_NxPxV - pbar_NxV[:, None]) * jnp.sqrt(w_P)[:, None]).reshape(x_NxPxV.shape[0], -1)
  return pbar_NxV, jnp.dot(xc_NxF, xc_NxF.T, precision=lax.Precision.HIGHEST)


def pmi_matrix(probs_NxPxV, weights_P=None, eps: float = 1e-12) -> np.ndarray:
  """PMI_ij = log(E_p[sum_v p_i p_j] / sum_v pbar_i pbar_j): N x N float64 (diagonal: self-PMI).

  The numerator is written D + C with D_ij = sum_v pbar_i pbar_j (float64) and C the Gram matrix of
  the probe-centred predictions, so PMI = log1p(C / D) is exactly 0 for predictions that do not
  depend on the probe and keeps its precision near 0. Both terms are floored at eps before the log.
  """
  probs, w = check_probs(probs_NxPxV, weights_P)
  if not eps > 0:
    raise ValueError(f'taskpgm.eps: must be > 0, got {eps}')
  pbar_NxV, c_NxN = _centred_gram(jnp.asarray(probs), jnp.asarray(w, jnp.float32))
  pbar_NxV = np.asarray(pbar_NxV, np.float64)
  d_NxN = pbar_NxV @ pbar_NxV.T
  c_NxN = np.asarray(c_NxN, np.float64)
  c_NxN = (c_NxN + c_NxN.T) / 2
  num_NxN = d_NxN + c_NxN
  exact = (d_NxN >= eps) & (num_NxN >= eps)
  with np.errstate(divide='ignore', invalid='ignore'):
    floored = np.log(np.maximum(num_NxN, eps)) - np.log(np.maximum(d_NxN, eps))
    return np.where(exact, np.log1p(c_NxN / np.where(exact, d_NxN, 1.0)), floored)


def pairwise_numpy_loop(probs_NxPxV, weights_P=None, eps: float = 1e-12
                        ) -> tuple[np.ndarray, np.ndarray]:
  """Reference (jsd_NxN, pmi_NxN) in float64 NumPy, one pair (i <= j) at a time."""
  probs, w = check_probs(probs_NxPxV, weights_P)
  probs = probs.astype(np.float64)
  n = probs.shape[0]

  def xlogx_PxV(x):
    return x * np.log(np.where(x > 0, x, 1.0))

  entropy_NxP = -xlogx_PxV(probs).sum(-1)
  pbar_NxV = np.einsum('npv,p->nv', probs, w)
  jsd, pmi = np.zeros((n, n)), np.zeros((n, n))
  for i in range(n):
    for j in range(i, n):
      if i < j:
        h_mix_P = -xlogx_PxV((probs[i] + probs[j]) / 2).sum(-1)
        jsd[i, j] = jsd[j, i] = w @ (h_mix_P - (entropy_NxP[i] + entropy_NxP[j]) / 2)
      num = w @ (probs[i] * probs[j]).sum(-1)
      pmi[i, j] = pmi[j, i] = (np.log(max(num, eps))
                               - np.log(max(pbar_NxV[i] @ pbar_NxV[j], eps)))
  return jsd, pmi
