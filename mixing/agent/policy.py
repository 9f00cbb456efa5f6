"""The agent's networks: a policy and a Q network, transformers over domain tokens.

Both read D domain tokens (each domain's features, embedded to d_model) and one global token (the
global features), through pre-norm self-attention blocks with no positional encoding, so they are
equivariant to permuting the domains and take any D. A padding mask (1: real domain, 0: padding)
lets a batch mix domain spaces of different sizes: padded tokens are masked out of every attention
key, every softmax and every pooling, so a padded batch computes what the unpadded one does.

Policy: per-domain logits; its action is the mixture
  w_d = floor + (1 - D * floor) * softmax(logits)_d,   floor = floor_frac / D   (real domains)
so no domain gets less than floor_frac / D (default floor_frac 0.1: a tenth of the uniform weight);
padded domains get 0. The logit head starts at zero, so an untrained policy is uniform.
With `group_shares`, the softmax reads logits_d - log n_g(d), n_g(d) the number of real domains in
d's group (source, target, or neither: the is_source / is_target features). Per-domain logits then
set each group's *mean* preference, so a policy carries its group shares, not its per-domain
weights, to a domain space with other group sizes (without it, equal logits give the target field
5/12 among 7 sources and 5 targets, 2/6 among 4 and 2). Equal logits give each group the same share,
so an untrained policy is uniform over the groups rather than the domains.

QNetwork: Q(s, a), the domain tokens reading [features, D * w_d]; the scalar comes from an MLP on
the mean of the real domains' outputs concatenated with the global token's, so it is invariant to
permuting the domains (with their weights).

`drop_features` names features (features.DOMAIN_FEATURES or GLOBAL_FEATURES) that both networks
read as 0, as if absent: e.g. the domain sizes, which name a domain in a fixed domain space and so
let a policy learn "this domain" rather than "a domain that behaves like this".

Inputs may be batched (B x D x F, B x G, B x D) or one state (D x F, G, D).
"""

import dataclasses

from flax import nnx
import jax
import jax.numpy as jnp

from mixing.agent import features

NEG_INF = -1e9  # masked logits: exp underflows to exactly 0


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
  """Architecture of both networks (small by default: trains in minutes on a CPU)."""
  num_features: int = features.F  # per-domain features
  num_global: int = features.G  # global features
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_ratio: int = 2  # MLP hidden width = mlp_ratio * d_model
  floor_frac: float = 0.1  # D * floor: the weight mass spread uniformly, whatever the logits
  drop_features: tuple[str, ...] = ()  # features read as 0 (module docstring)
  group_shares: bool = False  # logits relative to their group's size (module docstring)

  def __post_init__(self):
    object.__setattr__(self, 'drop_features', tuple(self.drop_features))
    known = features.DOMAIN_FEATURES + features.GLOBAL_FEATURES
    for name in self.drop_features:
      if name not in known:
        raise ValueError(f'policy.drop_features: unknown feature {name!r} (known: '
                         f'{", ".join(known)})')
    for name in ('num_features', 'num_global', 'd_model', 'num_layers', 'num_heads', 'mlp_ratio'):
      if int(getattr(self, name)) < 1:
        raise ValueError(f'policy.{name}: must be >= 1, got {getattr(self, name)}')
    if self.d_model % self.num_heads:
      raise ValueError(f'policy.d_model: {self.d_model} is not divisible by num_heads '
                       f'{self.num_heads}')
    if not 0.0 <= self.floor_frac < 1.0:
      raise ValueError(f'policy.floor_frac: must be in [0, 1), got {self.floor_frac}')
    if self.group_shares and self.num_features != features.F:
      raise ValueError(f'policy.group_shares: needs the {features.F} features that name the roles, '
                       f'got num_features {self.num_features}')

  def to_dict(self) -> dict:
    out = dataclasses.asdict(self)
    out['drop_features'] = list(self.drop_features)
    return out

  def keep_masks(self) -> tuple[list[float], list[float]]:
    """(domain features' mask F, global features' mask G): 0 for a dropped feature, else 1; all 1
    when the sizes are not features.F and G (other features than the named ones)."""
    if (self.num_features, self.num_global) != (features.F, features.G):
      return [1.0] * self.num_features, [1.0] * self.num_global
    return ([0.0 if n in self.drop_features else 1.0 for n in features.DOMAIN_FEATURES],
            [0.0 if n in self.drop_features else 1.0 for n in features.GLOBAL_FEATURES])


class Block(nnx.Module):
  """Pre-norm self-attention and MLP, both residual."""

  def __init__(self, config: PolicyConfig, *, rngs: nnx.Rngs):
    h = config.d_model
    self.norm1 = nnx.LayerNorm(h, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(config.num_heads, h, h, h, decode=False, keep_rngs=False,
                                       rngs=rngs)
    self.norm2 = nnx.LayerNorm(h, rngs=rngs)
    self.fc1 = nnx.Linear(h, config.mlp_ratio * h, rngs=rngs)
    self.fc2 = nnx.Linear(config.mlp_ratio * h, h, rngs=rngs)

  def __call__(self, x_BxLxH, mask_Bx1x1xL):
    x_BxLxH = x_BxLxH + self.attn(self.norm1(x_BxLxH), mask=mask_Bx1x1xL)
    return x_BxLxH + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x_BxLxH))))


class Encoder(nnx.Module):
  """Domain tokens + a global token -> (domain outputs B x D x H, global output B x H)."""

  def __init__(self, in_features: int, config: PolicyConfig, *, rngs: nnx.Rngs):
    keep_f, keep_g = config.keep_masks()
    extra = in_features - config.num_features  # QNetwork's action column, always read
    self.keep_domain = tuple(keep_f + [1.0] * extra)  # static (graphdef), never trained
    self.keep_global = tuple(keep_g)
    self.embed_domain = nnx.Linear(in_features, config.d_model, rngs=rngs)
    self.embed_global = nnx.Linear(config.num_global, config.d_model, rngs=rngs)
    self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
    self.norm = nnx.LayerNorm(config.d_model, rngs=rngs)

  def __call__(self, x_BxDxI, global_BxG, mask_BxD):
    x_BxDxI = x_BxDxI * jnp.asarray(self.keep_domain, x_BxDxI.dtype)
    global_BxG = global_BxG * jnp.asarray(self.keep_global, global_BxG.dtype)
    tokens_BxLxH = jnp.concatenate([self.embed_global(global_BxG)[:, None],
                                    self.embed_domain(x_BxDxI)], axis=1)
    valid_BxL = jnp.concatenate([jnp.ones_like(mask_BxD[:, :1]), mask_BxD], axis=1) > 0
    mask_Bx1x1xL = valid_BxL[:, None, None, :]  # every query attends to the real tokens only
    for block in self.blocks:
      tokens_BxLxH = block(tokens_BxLxH, mask_Bx1x1xL)
    tokens_BxLxH = self.norm(tokens_BxLxH)
    return tokens_BxLxH[:, 1:], tokens_BxLxH[:, 0]


def _batched(feats, global_, mask, *more):
  """Adds the batch axis to one state; a missing mask is all real domains."""
  single = feats.ndim == 2
  if single:
    feats, global_ = feats[None], global_[None]
    mask = None if mask is None else mask[None]
    more = tuple(m[None] for m in more)
  mask = jnp.ones(feats.shape[:2], feats.dtype) if mask is None else mask.astype(feats.dtype)
  return single, feats, global_, mask, more


def weights_from_logits(logits_BxD, mask_BxD, floor_frac: float):
  """floor + (1 - D * floor) * masked softmax, floor = floor_frac / D per row; 0 on padding."""
  soft_BxD = jax.nn.softmax(jnp.where(mask_BxD > 0, logits_BxD, NEG_INF), axis=-1) * mask_BxD
  d_Bx1 = jnp.maximum(mask_BxD.sum(-1, keepdims=True), 1.0)
  return mask_BxD * (floor_frac / d_Bx1) + (1.0 - floor_frac) * soft_BxD


def group_sizes(feats_BxDxF, mask_BxD):
  """B x D: how many real domains share each domain's group (source, target or neither); 1 on
  padding."""
  src_BxD = feats_BxDxF[..., features.DOMAIN_FEATURES.index('is_source')] * mask_BxD
  tgt_BxD = feats_BxDxF[..., features.DOMAIN_FEATURES.index('is_target')] * mask_BxD
  other_BxD = mask_BxD - src_BxD - tgt_BxD
  n_BxD = sum(g_BxD * g_BxD.sum(-1, keepdims=True) for g_BxD in (src_BxD, tgt_BxD, other_BxD))
  return jnp.maximum(n_BxD, 1.0)


class Policy(nnx.Module):
  """Features -> the next mixture (module docstring)."""

  def __init__(self, config: PolicyConfig = PolicyConfig(), *, rngs: nnx.Rngs):
    self.config = config
    self.encoder = Encoder(config.num_features, config, rngs=rngs)
    self.head = nnx.Linear(config.d_model, 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

  def logits(self, feats_BxDxF, global_BxG, mask_BxD=None):
    single, feats_BxDxF, global_BxG, mask_BxD, _ = _batched(feats_BxDxF, global_BxG, mask_BxD)
    h_BxDxH, _ = self.encoder(feats_BxDxF, global_BxG, mask_BxD)
    logits_BxD = jnp.where(mask_BxD > 0, self.head(h_BxDxH)[..., 0], NEG_INF)
    return (logits_BxD[0] if single else logits_BxD), mask_BxD

  def __call__(self, feats_BxDxF, global_BxG, mask_BxD=None):
    """Weights B x D (or D): each real domain >= floor_frac / D, summing to 1; 0 on padding."""
    single = feats_BxDxF.ndim == 2
    logits_BxD, mask_BxD = self.logits(feats_BxDxF, global_BxG, mask_BxD)
    logits_BxD = logits_BxD[None] if single else logits_BxD
    if self.config.group_shares:
      feats_BxDxF = feats_BxDxF[None] if single else feats_BxDxF
      logits_BxD = logits_BxD - jnp.log(group_sizes(feats_BxDxF, mask_BxD))
    weights_BxD = weights_from_logits(logits_BxD, mask_BxD, self.config.floor_frac)
    return weights_BxD[0] if single else weights_BxD


class QNetwork(nnx.Module):
  """Q(s, a): features and D * weight per domain -> a scalar per state (module docstring)."""

  def __init__(self, config: PolicyConfig = PolicyConfig(), *, rngs: nnx.Rngs):
    self.config = config
    self.encoder = Encoder(config.num_features + 1, config, rngs=rngs)
    self.hidden = nnx.Linear(2 * config.d_model, config.d_model, rngs=rngs)
    self.out = nnx.Linear(config.d_model, 1, rngs=rngs)

  def __call__(self, feats_BxDxF, global_BxG, action_BxD, mask_BxD=None):
    single, feats_BxDxF, global_BxG, mask_BxD, (action_BxD,) = _batched(
        feats_BxDxF, global_BxG, mask_BxD, action_BxD)
    d_Bx1 = jnp.maximum(mask_BxD.sum(-1, keepdims=True), 1.0)
    scaled_BxDx1 = (action_BxD * mask_BxD * d_Bx1)[..., None].astype(feats_BxDxF.dtype)
    h_BxDxH, g_BxH = self.encoder(jnp.concatenate([feats_BxDxF, scaled_BxDx1], axis=-1),
                                  global_BxG, mask_BxD)
    pooled_BxH = jnp.sum(h_BxDxH * mask_BxD[..., None], axis=1) / d_Bx1
    q_B = self.out(jax.nn.gelu(self.hidden(jnp.concatenate([pooled_BxH, g_BxH], -1))))[..., 0]
    return q_B[0] if single else q_B
