"""DoReMi (Xie et al. 2023): domain weights from Group DRO of a proxy model against a reference model.

With a reference model trained on reference weights, a proxy trains on batches drawn by the reference
weights; at each step, per domain d:
  lambda_d = mean over d's tokens in the batch of max(loss_proxy - loss_reference, 0)   (excess loss)
  alpha    <- normalize(alpha * exp(eta * lambda));  alpha <- (1 - s) * alpha + s * uniform
and the proxy descends the alpha-weighted per-domain loss. The result is alpha averaged over the proxy
run, used as a static mixture for the main model. The reference and proxy runs are trained by the
pipelines layer (experiments/recipes/proxies.py) on the one training loop, the proxy with `loop_step`.
"""

import functools
from typing import Any, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mixing import mixer as mixer_lib
from mixing import registry
from mixing.data import load as load_lib
from mixing.data import sampler as sampler_lib


def token_losses(model, batch) -> jax.Array:
  """Per-token cross-entropy, B x L (not masked)."""
  logits_BxLxV = model(batch['inputs_BxL'])
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV, batch['targets_BxL'])


def excess_loss_D(proxy_ce_BxL, reference_ce_BxL, batch, num_domains: int) -> jax.Array:
  """lambda_d: the mean over domain d's counted tokens of max(proxy - reference, 0); 0 if absent."""
  mask_BxL = batch['mask_BxL']
  excess_B = jnp.sum(jnp.maximum(proxy_ce_BxL - reference_ce_BxL, 0.0) * mask_BxL, axis=1)
  segment_sum = functools.partial(jax.ops.segment_sum, segment_ids=batch['domain_B'],
                                  num_segments=num_domains)
  tokens_D = segment_sum(jnp.sum(mask_BxL, axis=1))
  return jnp.where(tokens_D > 0, segment_sum(excess_B) / jnp.maximum(tokens_D, 1.0), 0.0)


def update_alpha(alpha_D, lambda_D, eta: float, smoothing: float) -> jax.Array:
  """The exponentiated-gradient step on the simplex, then smoothing towards uniform."""
  log_alpha_D = jnp.log(alpha_D) + eta * lambda_D
  alpha_D = jax.nn.softmax(log_alpha_D)
  return (1 - smoothing) * alpha_D + smoothing / alpha_D.shape[0]


def dro_step(graphdef, state, reference_params, alpha_D, batch, *, tx, num_domains: int,
             eta: float, smoothing: float):
  """One proxy step: excess losses -> new alpha -> AdamW on the alpha-weighted domain loss.

  One forward pass of the proxy: its per-domain losses are differentiated by a VJP whose cotangent is
  the updated alpha, which needs the forward's own per-token losses first.
  """
  reference_ce_BxL = token_losses(nnx.merge(graphdef, reference_params), batch)
  mask_BxL = batch['mask_BxL']
  segment_sum = functools.partial(jax.ops.segment_sum, segment_ids=batch['domain_B'],
                                  num_segments=num_domains)
  tokens_D = segment_sum(jnp.sum(mask_BxL, axis=1))

  def domain_losses(params):
    ce_BxL = token_losses(nnx.merge(graphdef, params), batch)
    loss_D = segment_sum(jnp.sum(ce_BxL * mask_BxL, axis=1)) / jnp.maximum(tokens_D, 1.0)
    return jnp.where(tokens_D > 0, loss_D, 0.0), ce_BxL

  domain_loss_D, vjp_fn, proxy_ce_BxL = jax.vjp(domain_losses, state.params, has_aux=True)
  lambda_D = excess_loss_D(proxy_ce_BxL, jax.lax.stop_gradient(reference_ce_BxL), batch,
                           num_domains)
  new_alpha_D = update_alpha(alpha_D, lambda_D, eta, smoothing)
  (grads,) = vjp_fn(new_alpha_D)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = state._replace(step=state.step + 1, params=params, opt_state=opt_state)
  return new_state, new_alpha_D, {'loss': jnp.sum(new_alpha_D * domain_loss_D),
                                  'excess_D': lambda_D, 'domain_loss_D': domain_loss_D}


class DroState(NamedTuple):
  """The proxy's train state with DoReMi's alpha and its running sum (checkpointed together)."""
  train: Any  # the proxy's TrainState
  alpha_D: jax.Array
  alpha_sum_D: jax.Array

  @property
  def params(self):
    return self.train.params


def loop_step(graphdef, state: DroState, batch, reference_params, *, tx, num_domains: int,
              eta: float, smoothing: float):
  """`dro_step` in the training loop's form: (state, batch) -> (state, metrics)."""
  train, alpha_D, metrics = dro_step(graphdef, state.train, reference_params, state.alpha_D, batch,
                                     tx=tx, num_domains=num_domains, eta=eta, smoothing=smoothing)
  tokens_D = jax.ops.segment_sum(jnp.sum(batch['mask_BxL'], axis=1), batch['domain_B'],
                                 num_segments=num_domains)
  token_loss = jnp.sum(metrics['domain_loss_D'] * tokens_D) / jnp.maximum(jnp.sum(tokens_D), 1.0)
  return DroState(train, alpha_D, state.alpha_sum_D + alpha_D), {
      'loss': metrics['loss'], 'token_loss': token_loss, 'domain_loss_D': metrics['domain_loss_D'],
      'domain_tokens_D': tokens_D, 'alpha_D': alpha_D}


def _check(config, num_domains):
  del num_domains
  if config.doremi.eta <= 0:
    raise ValueError(f'mixer.doremi.eta: must be > 0, got {config.doremi.eta}')
  if not 0 <= config.doremi.smoothing < 1:
    raise ValueError(f'mixer.doremi.smoothing: must be in [0, 1), got {config.doremi.smoothing}')


@registry.register('doremi', check=_check)
def _build(config, context):
  c = config.mixer.doremi
  names = list(context.names)
  ref_weights = (load_lib.parse_mixture(c.reference_weights, 'mixer.doremi.reference_weights')[1]
                 if c.reference_weights else np.ones(len(names)))
  ref_weights = sampler_lib.validate_weights(ref_weights, names, 'mixer.doremi.reference_weights')
  return mixer_lib.Static(registry.needs_stages(context, 'doremi').dro_weights(ref_weights))
