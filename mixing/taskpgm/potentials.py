"""TaskPGM pairwise potentials: Jensen-Shannon divergence and PMI between single-task models.

Every task i has a fine-tuned model whose teacher-forced next-token distributions on shared probes
are probs_NxPxV[i] (P = probe x target-position pairs, V = vocabulary). Averages over P are the
weights_P-weighted mean (weights normalized to sum 1; uniform by default).

  JSD_ij = E_p[H((p_i + p_j) / 2) - (H(p_i) + H(p_j)) / 2]             natural log, in [0, ln 2]
  PMI_ij = log(E_p[sum_v p_i p_j] / sum_v pbar_i pbar_j),  pbar_i = E_p[p_i(.|x_p)]

Only H((p_i + p_j) / 2) is pairwise: N^2 / 2 * P * V logarithms, the whole cost. With s = p_i + p_j,
  JSD_ij = (C_i + C_j - S_ij) / 2,  S_ij = E_p[sum_v s log s],  C_i = E_p[sum_v p_i log p_i] + ln 2
(for normalized rows; in general C_i carries ln 2 * E_p[sum_v p_i]). S is computed in float32 for
blocks of `chunk` x `chunk` models (upper-triangle blocks only), one fused add-log-multiply-reduce
per block pair inside a lax.scan, so the working set beyond the input is O(chunk * P * V); the
combination is float64 on the host. Float32 accumulation over P * V terms leaves an absolute
error of a few 1e-6 at P = 256, V = 259. The block pairs are sharded over the local devices with
shard_map; on a CPU host, start JAX with jax.config.update('jax_num_cpu_devices', os.cpu_count())
to use every core (each device holds a copy of the input).
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
  low, high = probs.min(), probs.max()  # one pass each; NaN propagates
  if not (np.isfinite(low) and np.isfinite(high) and low >= 0):
    raise ValueError(
        f'taskpgm.probs_NxPxV: must be finite and >= 0, got values in [{low}, {high}]')
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


def _mesh(devices) -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.array(tuple(devices or jax.local_devices())), ('d',))


def _xlogx_sum_V(x):
  return jnp.sum(x * jnp.log(jnp.maximum(x, _TINY)), axis=-1)


@jax.jit
def _self_terms_M(x_PxMxV, w_P):
  """C_i = sum_p w_p (sum_v p log p + ln2 sum_v p), so that JSD_ij = (C_i + C_j - S_ij) / 2."""
  c_PxM = _xlogx_sum_V(x_PxMxV) + LN2 * jnp.sum(x_PxMxV, axis=-1)
  return jnp.einsum('pm,p->m', c_PxM, w_P, precision=lax.Precision.HIGHEST)


def _block_pairs_KxBxB(x_PxMxV, w_P, pairs_Kx2, block: int, uniform: bool):
  """S_ij = sum_p w_p sum_v s log s (s = p_i + p_j) for the B x B pairs of each pair of blocks.

  One block pair per scan step, one fused loop per step: the P x B x B x V block is never stored.
  Position-major layout keeps the two B x V slices of a position in L1 while all B^2 pairs use
  them, and reducing over P and V in the same loop (weights inside) is what keeps XLA's CPU
  fusion vectorized: reducing over V alone, or model-major blocks, ran 3-4x slower on this CPU.
  Uniform weights skip the multiply (about 10% faster).
  """

  def step(_, pair_2):
    a_PxBxV = lax.dynamic_slice_in_dim(x_PxMxV, pair_2[0] * block, block, axis=1)
    b_PxBxV = lax.dynamic_slice_in_dim(x_PxMxV, pair_2[1] * block, block, axis=1)
    s_PxBxBxV = a_PxBxV[:, :, None] + b_PxBxV[:, None]
    sls_PxBxBxV = s_PxBxBxV * jnp.log(s_PxBxBxV)  # inputs >= tiny: no clamp here (20% faster)
    if uniform:
      return None, jnp.sum(sls_PxBxBxV, axis=(0, 3)) * w_P[0]
    return None, jnp.sum(sls_PxBxBxV * w_P[:, None, None, None], axis=(0, 3))

  return lax.scan(step, None, pairs_Kx2)[1]


def _sharded_kernel(devices: tuple, block: int, uniform: bool):
  mesh = _mesh(devices)
  rep, shard = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec('d')
  fn = lambda x, w, pairs: _block_pairs_KxBxB(x, w, pairs, block, uniform)
  return mesh, jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=(rep, rep, shard),
                                     out_specs=shard))


_KERNELS = {}


def jsd_matrix(probs_NxPxV, weights_P=None, chunk: int = 40, devices=None) -> np.ndarray:
  """Jensen-Shannon divergences (nats) between the N models, averaged over P: N x N float64.

  Args:
    probs_NxPxV: each model's predictive distributions at the P probe positions (float32 used).
    weights_P: nonnegative position weights (default uniform); normalized to sum 1.
    chunk: at most this many models per block (blocks are evened out to ceil(N / ceil(N / chunk))
      models); each scan step evaluates block^2 * P * V logarithms. Blocks of 32-64 ran ~10%
      faster per logarithm than 16 on this CPU; the diagonal blocks waste about block / N.
    devices: devices to shard block pairs over (default: all local devices).

  Returns:
    Symmetric, zero diagonal, clipped to [0, ln 2].
  """
  probs, w = check_probs(probs_NxPxV, weights_P)
  if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
    raise ValueError(f'taskpgm.chunk: must be an integer >= 1, got {chunk!r}')
  n, p, v = probs.shape
  num_blocks = -(-n // chunk)
  block = -(-n // num_blocks)  # <= chunk, with as little padding as possible
  devices = tuple(devices or jax.local_devices())
  bi, bj = np.triu_indices(num_blocks)
  num_pairs = len(bi)
  pairs_Kx2 = np.zeros((-(-num_pairs // len(devices)) * len(devices), 2), np.int32)
  pairs_Kx2[:num_pairs, 0], pairs_Kx2[:num_pairs, 1] = bi, bj  # padding: pair (0, 0), dropped
  key = (devices, block, bool((w == w[0]).all()))
  if key not in _KERNELS:
    _KERNELS[key] = _sharded_kernel(*key)
  mesh, kernel = _KERNELS[key]
  rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  # Entries are floored at the smallest normal float32 (padding models too; dropped below), so s > 0
  # and s log s needs no clamp; the change to any S_ij is below 1e-35.
  x_PxMxV = np.full((p, num_blocks * block, v), _TINY, np.float32)
  x_PxMxV[:, :n] = probs.transpose(1, 0, 2)
  np.maximum(x_PxMxV, _TINY, out=x_PxMxV)
  x_PxMxV = jax.device_put(x_PxMxV, rep)
  w_P = jax.device_put(w.astype(np.float32), rep)
  c_M = np.asarray(_self_terms_M(x_PxMxV, w_P), np.float64)
  pairs = jax.device_put(pairs_Kx2,
                         jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('d')))
  s_KxBxB = np.asarray(kernel(x_PxMxV, w_P, pairs), np.float64)[:num_pairs]
  m = num_blocks * block
  s_MxM = np.zeros((m, m))
  s_MxM.reshape(num_blocks, block, num_blocks, block)[bi, :, bj, :] = s_KxBxB
  upper = np.triu((c_M[:, None] + c_M[None] - s_MxM)[:n, :n] / 2, 1)
  return np.clip(upper + upper.T, 0.0, LN2)


@jax.jit
def _centred_gram(x_NxPxV, w_P):
  """pbar_NxV and C_NxN = sum_p w_p sum_v (p_i - pbar_i)(p_j - pbar_j) (one matmul over P * V)."""
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


def top_k_support(reference_PxV, k: int) -> np.ndarray:
  """idx_PxK: per probe position, the k most probable tokens of a reference distribution (e.g. the
  base model's, which every single-task model starts from)."""
  reference_PxV = np.asarray(reference_PxV)
  k = min(k, reference_PxV.shape[1])
  return np.argpartition(-reference_PxV, k - 1, axis=1)[:, :k]


def reduce_to_support(probs_PxV, idx_PxK) -> np.ndarray:
  """probs_Px(K+1): each position's probabilities on its support, then the rest's mass in one last
  column (rows keep their sums). JSD on the result is a lower bound of the full-vocabulary JSD
  (merging outcomes never increases a divergence) and equal to it when the rest carries no mass;
  this is how TaskPGM runs with a large vocabulary (`taskpgm.probe_top_k`)."""
  probs_PxV = np.asarray(probs_PxV, np.float32)
  kept_PxK = np.take_along_axis(probs_PxV, idx_PxK, axis=1)
  rest_P = np.maximum(probs_PxV.sum(1) - kept_PxK.sum(1), 0.0)
  return np.concatenate([kept_PxK, rest_P[:, None]], axis=1)
