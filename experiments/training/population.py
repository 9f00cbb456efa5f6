"""Proxy populations: K small models with K mixtures (and seeds) trained in one jitted, vmapped step.

Member k is exactly the model `experiments.train` would train with seed seeds[k] and static weights
weights[k] (same init, same sampler stream), to float tolerance. Each member draws its own batch by its
own weights; batches stack to K x B x L. The member axis of the state and the batch is sharded over the
mesh's data axis when K divides by it. Checkpoints hold the stacked state and every member's sampler;
metrics go to WORKDIR/member_KKK/metrics.jsonl. Members train on the one loop (loop.py) with a vmapped step. RegMix proxies, agent trajectories and TaskPGM's
single-task fine-tunes all train this way. Under several processes, every process draws every member's
batch (they are small), and what host code reads (metrics, losses, one member) comes back replicated.
"""

import functools
import os

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from experiments.training import evaluate as evaluate_lib
from experiments.training import loop as loop_lib
from experiments.training import runtime
from experiments.training import state as state_lib
from experiments.training import step as step_lib
from experiments.training import validate
from mixing.data import sampler as sampler_lib


MEMBER_GROUP = 4


def grouped_vmap(fn, k: int, group: int):
  """fn vmapped over a leading axis of k members, run as k / group sequential groups of `group`."""
  if group >= k:
    return jax.vmap(fn)
  split = lambda tree: jax.tree.map(lambda x: x.reshape((k // group, group) + x.shape[1:]), tree)
  merge = lambda tree: jax.tree.map(lambda x: x.reshape((k,) + x.shape[2:]), tree)
  return lambda *args: merge(jax.lax.map(lambda a: jax.vmap(fn)(*a), tuple(map(split, args))))


def host_copy(x) -> np.ndarray:
  """The whole value of a (possibly global) array as numpy, on every process."""
  if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
    return multihost_utils.process_allgather(x)
  return np.asarray(x)


def stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def member(tree, k: int):
  return jax.tree.map(lambda x: x[k], tree)


class Population(loop_lib.Loop):
  """Trains K members for config.steps; `weights_KxD[k]` and `seeds_K[k]` define member k."""

  stacked, check_finite = True, False

  def __init__(self, config, workdir: str, weights_KxD, seeds_K=None, domains=None,
               init_params=None, quiet: bool = False, label: str = ''):
    self.config, self.workdir, self.quiet = config, workdir, quiet
    self.label = f'[{label or f"population of {len(weights_KxD)}"}] '
    if domains is None:
      self.names, _, self.domains = runtime.load_run_domains(config)
    else:
      self.names, self.domains = [d.name for d in domains], domains
    weights_KxD = np.asarray(weights_KxD, np.float64)
    self.k = self.members = weights_KxD.shape[0]
    seeds_K = list(range(config.seed, config.seed + self.k)) if seeds_K is None else seeds_K
    self.samplers = [
        sampler_lib.MixtureSampler([d.train for d in self.domains], self.names, w,
                                   config.batch_size, int(s), draws=validate.data_draws(config))
        for w, s in zip(weights_KxD, seeds_K)]
    if init_params is not None and jax.process_count() > 1:
      # A jit cannot take arrays committed to devices (a restored base model) onto a mesh that spans
      # processes: every member starts from a host copy instead.
      init_params = jax.tree.map(host_copy, init_params)
    mesh = runtime.make_mesh(config)
    built = state_lib.build_train_state(config, mesh, [int(s) for s in seeds_K], init_params)
    self.graphdef, self.state, self.member_sharding = built.graphdef, built.state, built.sharding
    self.tx, self.schedule = built.tx, built.schedule
    # Metrics, losses and single members come back replicated: with several processes, a member-sharded
    # array has members on other hosts' devices, which this process can neither read nor feed to a jit.
    self.replicated = NamedSharding(mesh, PartitionSpec())
    d = len(self.names)
    train = functools.partial(step_lib.train_step, self.graphdef, tx=built.tx, num_domains=d)
    # On one device, members run in groups of MEMBER_GROUP (vmapped) one group after another (lax.map):
    # smaller tensors stay in cache, measured 1.3x faster than vmapping all 16 tiny members at once.
    sharded = self.member_sharding.spec != PartitionSpec(None)
    group = MEMBER_GROUP if not sharded and self.k % MEMBER_GROUP == 0 else self.k
    self.train_fn = jax.jit(grouped_vmap(train, self.k, group),
                            out_shardings=(self.member_sharding, self.replicated),
                            donate_argnums=(0,))
    evaluate = functools.partial(step_lib.eval_step, self.graphdef, num_domains=d)
    self._eval = jax.jit(jax.vmap(evaluate, in_axes=(0, None)), out_shardings=self.replicated)
    self.eval_set = evaluate_lib.heldout_batches(self.domains, config.eval_batches,
                                                 config.batch_size)
    self._init_loop([os.path.join(workdir, f'member_{k:03d}') for k in range(self.k)])

  def next_batch(self):
    return jax.device_put(stack([s.next_batch() for s in self.samplers]), self.member_sharding)

  def set_weights(self, k: int, weights):
    self.samplers[k].set_weights(weights)

  def train_steps(self, n: int) -> list[dict]:
    """n steps of every member (no checkpoints, no metrics files: the caller drives the members);
    returns per-step metrics (leading K axis)."""
    self.record_history = True
    self.train(self.step + n, checkpoints=False)
    return self.history

  def heldout_loss_KxD(self, eval_set=None) -> np.ndarray:
    """Every member's mean held-out loss per domain (on `eval_set`, default the config's)."""
    return evaluate_lib.heldout_loss(self._eval, self.state.params, eval_set or self.eval_set)

  def params(self, k: int):
    return self.member_state(k).params

  def member_state(self, k: int):
    """Member k's train state, replicated on every device of the mesh (of every process)."""
    return jax.jit(functools.partial(member, k=k), out_shardings=self.replicated)(self.state)

  def run(self) -> np.ndarray:
    """Trains every member to config.steps (resuming); returns the final held-out loss, K x D."""
    resumed = self.restore()
    self.open_writers(resumed)
    try:
      self.train(self.config.steps)
    finally:
      self.close()
    return self.heldout_loss_KxD()
