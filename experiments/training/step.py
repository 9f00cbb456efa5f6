"""Loss, optimizer and the pure, jittable train/eval steps.

A batch is a dict of arrays:
  inputs_BxL  int32   token ids fed to the model
  targets_BxL int32   next-token ids
  mask_BxL    float32 1 where the target counts in the loss
  domain_B    int32   domain id of each example, in [0, num_domains)

The model is handled with nnx split/merge: `graphdef, params = nnx.split(
model)` once, then the steps take `(graphdef, state, ...)` and rebuild the
model with `nnx.merge` inside the trace. The train state is a `TrainState`
pytree holding the step counter, the params (an nnx.State) AND the plain optax
optimizer state, so checkpointing `TrainState` saves both (unlike
`nnx.state(nnx.Optimizer)`, which omits the model).
"""

import functools
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from models import sharding as sharding_lib

Batch = dict[str, jax.Array]


class TrainState(NamedTuple):
  step: jax.Array  # int32 scalar, number of updates applied so far.
  params: nnx.State  # Model parameters (nnx.Param Variables with metadata).
  opt_state: optax.OptState  # Optax state; moments mirror `params`.


def init_train_state(model: nnx.Module, tx: optax.GradientTransformation
                     ) -> tuple[nnx.GraphDef, TrainState]:
  """Splits `model` and builds the initial TrainState.

  The state's params share buffers with `model`: once a step that donates
  the state has run, use `nnx.merge(graphdef, state.params)`, not `model`.
  """
  graphdef, params = nnx.split(model)
  return graphdef, TrainState(jnp.zeros((), jnp.int32), params,
                              tx.init(params))


def loss_fn(model, batch: Batch, num_domains: int):
  """Token cross-entropy and per-domain sums from one forward pass.

  loss = sum(ce * mask) / sum(mask), the mean over all counted tokens.

  Returns:
    (loss, aux) with aux = {'token_loss' (the same mean), 'domain_loss_sum_D',
    'domain_tokens_D'} (segment sums over `domain_B`).
  """
  logits_BxLxV = model(batch['inputs_BxL'])
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(
      logits_BxLxV, batch['targets_BxL'])
  mask_BxL = batch['mask_BxL'].astype(jnp.float32)
  segment_sum = functools.partial(
      jax.ops.segment_sum, segment_ids=batch['domain_B'],
      num_segments=num_domains)
  domain_loss_sum_D = segment_sum(jnp.sum(ce_BxL * mask_BxL, axis=1))
  domain_tokens_D = segment_sum(jnp.sum(mask_BxL, axis=1))
  token_loss = jnp.sum(domain_loss_sum_D) / jnp.maximum(
      jnp.sum(domain_tokens_D), 1.0)
  loss = token_loss
  aux = {'token_loss': token_loss, 'domain_loss_sum_D': domain_loss_sum_D,
         'domain_tokens_D': domain_tokens_D}
  return loss, aux


def domain_mean(loss_sum_D: jax.Array, tokens_D: jax.Array) -> jax.Array:
  """Per-domain mean loss; 0 (not NaN) where a domain has no tokens."""
  return jnp.where(tokens_D > 0, loss_sum_D / jnp.maximum(tokens_D, 1.0), 0.0)


def _accumulated_grads(graphdef, params, batch: Batch, num_domains: int,
                       microbatches: int):
  """The whole batch's (loss, aux) and gradient, `microbatches` rows at a time.

  Microbatch m takes rows m, m + M, m + 2M, ... (so each device holds its share
  of every microbatch) and contributes sum(ce * mask) / (the whole batch's
  tokens): the gradients add up to the one-batch gradient exactly.
  """
  tokens = jnp.maximum(jnp.sum(batch['mask_BxL'].astype(jnp.float32)), 1.0)
  split = lambda x: jnp.swapaxes(
      x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:]), 0, 1)
  micro = jax.tree.map(split, batch)

  def objective(params, mb):
    _, aux = loss_fn(nnx.merge(graphdef, params), mb, num_domains)
    return jnp.sum(aux['domain_loss_sum_D']) / tokens, aux

  def body(carry, mb):
    grads, loss_sum_D, tokens_D = carry
    (_, aux), g = jax.value_and_grad(objective, has_aux=True)(params, mb)
    return (jax.tree.map(jnp.add, grads, g), loss_sum_D + aux['domain_loss_sum_D'],
            tokens_D + aux['domain_tokens_D']), None

  zeros_D = jnp.zeros((num_domains,), jnp.float32)
  init = (jax.tree.map(jnp.zeros_like, params), zeros_D, zeros_D)
  (grads, loss_sum_D, tokens_D), _ = jax.lax.scan(body, init, micro)
  loss = jnp.sum(loss_sum_D) / jnp.maximum(jnp.sum(tokens_D), 1.0)
  aux = {'token_loss': loss, 'domain_loss_sum_D': loss_sum_D, 'domain_tokens_D': tokens_D}
  return (loss, aux), grads


def train_step(graphdef: nnx.GraphDef, state: TrainState, batch: Batch, *,
               tx: optax.GradientTransformation, num_domains: int,
               microbatches: int = 1):
  """One AdamW update. Pure: returns (new_state, metrics).

  microbatches > 1 accumulates the gradient over that many slices of the
  batch (the same update, less activation memory).
  metrics: 'loss' (the optimized objective), 'token_loss', 'domain_loss_D'
  (per-domain mean, 0 where the domain is absent: check 'domain_tokens_D'),
  'domain_tokens_D', 'grad_norm' (global norm before clipping).
  """
  def objective(params):
    model = nnx.merge(graphdef, params)
    return loss_fn(model, batch, num_domains)

  if microbatches > 1:
    (loss, aux), grads = _accumulated_grads(graphdef, state.params, batch,
                                            num_domains, microbatches)
  else:
    (loss, aux), grads = jax.value_and_grad(objective, has_aux=True)(
        state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {'loss': loss, 'token_loss': aux['token_loss'],
             'domain_loss_D': domain_mean(aux['domain_loss_sum_D'],
                                          aux['domain_tokens_D']),
             'domain_tokens_D': aux['domain_tokens_D'],
             'grad_norm': optax.tree.norm(grads)}
  return TrainState(state.step + 1, params, opt_state), metrics


def eval_step(graphdef: nnx.GraphDef, params: nnx.State, batch: Batch,
              num_domains: int) -> dict[str, jax.Array]:
  """Per-domain loss sums and token counts (sum these across batches)."""
  _, aux = loss_fn(nnx.merge(graphdef, params), batch, num_domains)
  return {'domain_loss_sum_D': aux['domain_loss_sum_D'],
          'domain_tokens_D': aux['domain_tokens_D']}


def make_schedule(lr: float, warmup_steps: int, total_steps: int,
                  end_lr_ratio: float = 0.1) -> optax.Schedule:
  """The learning rate of update i (0-based): linear warmup, then cosine decay."""
  return optax.warmup_cosine_decay_schedule(
      0.0, lr, warmup_steps, max(total_steps, warmup_steps + 1),
      end_value=lr * end_lr_ratio)


def _is_matrix(x) -> bool:
  """A weight matrix (decayed), not a vector such as a norm scale: a scanned model's leading
  'layers' axis does not count."""
  names = (x.get_metadata().get('out_sharding') or ()) if isinstance(x, nnx.Variable) else ()
  return x.ndim - (1 if names and names[0] == 'layers' else 0) > 1


def make_optimizer(lr: float, warmup_steps: int, total_steps: int,
                   weight_decay: float = 0.1, clip_norm: float | None = 1.0,
                   b1: float = 0.9, b2: float = 0.95,
                   end_lr_ratio: float = 0.1) -> optax.GradientTransformation:
  """AdamW, linear warmup to `lr` then cosine decay to lr * end_lr_ratio.

  Gradients are clipped to global norm `clip_norm` first (None: no clipping).
  Weight decay applies to matrices only (not RMSNorm scales).
  """
  schedule = make_schedule(lr, warmup_steps, total_steps, end_lr_ratio)
  decay_mask = lambda params: jax.tree.map(
      _is_matrix, params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  adamw = optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay,
                      mask=decay_mask)
  if clip_norm is None:
    return adamw
  return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)


def _under_mesh(mesh, fn):
  """fn traced with `mesh` set, so the model can pin its activations' batch
  axis to 'data' (sharding.constrain_batch)."""
  def traced(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)
  # jit names the computation after it ('jit(train_step)' in logs and profiles).
  traced.__name__ = getattr(fn, '__name__', getattr(getattr(fn, 'func', None), '__name__', 'step'))
  return traced


def jit_train_step(mesh: jax.sharding.Mesh, graphdef: nnx.GraphDef,
                   state_sharding: Any, tx: optax.GradientTransformation,
                   num_domains: int, microbatches: int = 1):
  """`train_step` under jax.jit with explicit shardings; donates the state.

  Returns fn(state, batch) -> (state, metrics). The batch is split over
  'data'; metrics are replicated.
  """
  step = _under_mesh(mesh, functools.partial(
      train_step, graphdef, tx=tx, num_domains=num_domains,
      microbatches=microbatches))
  replicated = sharding_lib.replicated(mesh)
  return jax.jit(
      step,
      in_shardings=(state_sharding, sharding_lib.batch_sharding(mesh)),
      out_shardings=(state_sharding, replicated),
      donate_argnums=(0,))


def jit_eval_step(mesh: jax.sharding.Mesh, graphdef: nnx.GraphDef,
                  params_sharding: Any, num_domains: int):
  """`eval_step` under jax.jit: fn(params, batch) -> per-domain sums."""
  step = functools.partial(eval_step, graphdef, num_domains=num_domains)
  return jax.jit(
      step,
      in_shardings=(params_sharding, sharding_lib.batch_sharding(mesh)),
      out_shardings=sharding_lib.replicated(mesh))
