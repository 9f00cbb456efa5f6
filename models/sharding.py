"""Logical-axis sharding: one rule table, a mesh, and NamedSharding trees.

Parameters name their axes logically ('embed', 'vocab', ...; see
`models.transformer`). `RULES` maps each logical name to a mesh axis of a
('data', 'model') mesh, or to None (replicated). A dimension whose size is not
divisible by its mesh axis is replicated instead of raising, so the same rules
work for any mesh shape (e.g. 'heads' with 4 heads on a model axis of 8).
"""

from collections.abc import Mapping, Sequence
from typing import Any

from flax import nnx
import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
import numpy as np

MESH_AXES = ('data', 'model')

# Logical axis name -> mesh axis (None: replicated). Megatron-style tensor
# parallelism over 'model' (heads and MLP hidden units, plus the vocabulary),
# data parallelism over 'data'; the residual width 'embed' is replicated.
RULES: tuple[tuple[str, str | None], ...] = (
    ('batch', 'data'),
    ('length', None),
    ('embed', None),
    ('vocab', 'model'),
    ('heads', 'model'),
    ('kv', None),
    ('mlp', 'model'),
    ('layers', None),
)

# FSDP beside tensor parallelism: the residual width 'embed' also shards over 'data', so every
# parameter (and its optimizer moments) is split over the data axis too, and gathered per use.
FSDP_RULES = tuple((name, 'data' if name == 'embed' else axis) for name, axis in RULES)


def rules(fsdp: bool = False):
  return FSDP_RULES if fsdp else RULES


def make_mesh(data: int, model: int, devices: Sequence[Any] | None = None
              ) -> Mesh:
  """A (data, model) mesh with Auto axes over the first data*model devices."""
  devices = jax.devices() if devices is None else list(devices)
  if data * model > len(devices):
    raise ValueError(f'mesh: {data} x {model} needs {data * model} devices, '
                     f'have {len(devices)}')
  grid = np.array(devices[:data * model]).reshape(data, model)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 2)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int],
                    mesh: Mesh, rules=RULES) -> PartitionSpec:
  """PartitionSpec for an array of `shape` whose axes are called `names`."""
  table: Mapping[str, str | None] = dict(rules)
  axes = []
  for name, dim in zip(names, shape):
    axis = table.get(name) if name is not None else None
    if axis is not None and (axis not in mesh.shape or axis in axes
                             or dim % mesh.shape[axis]):
      axis = None
    axes.append(axis)
  while axes and axes[-1] is None:
    axes.pop()
  return PartitionSpec(*axes)


def _leaf_sharding(x, mesh: Mesh, rules) -> Any:
  if isinstance(x, nnx.Variable):
    names = x.get_metadata().get('out_sharding') or ()
    spec = logical_to_spec(names, x.shape, mesh, rules) if names else (
        PartitionSpec())
    return x.replace(NamedSharding(mesh, spec))
  return NamedSharding(mesh, PartitionSpec())


def state_shardings(state: Any, mesh: Mesh, rules=RULES) -> Any:
  """NamedSharding pytree for `state` (nnx.State, optax state, or a mix).

  Every nnx.Variable leaf is placed according to its `out_sharding` logical
  names; optax moments built by tree-mapping over an nnx.State keep those
  Variables (and their metadata), so they shard like their parameters. Any
  other array leaf (step counters, scalars) is replicated.
  """
  return jax.tree.map(
      lambda x: _leaf_sharding(x, mesh, rules), state,
      is_leaf=lambda x: isinstance(x, nnx.Variable))


def constrain_batch(x):
  """Keeps an activation's leading (batch) axis on 'data' while a step is traced under its mesh
  (`jax.set_mesh`, as step.jit_train_step does): with FSDP the partitioner then gathers each
  weight where it is used instead of gathering the activations. A no-op outside such a trace."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or 'data' not in mesh.axis_names or x.shape[0] % mesh.shape['data']:
    return x
  return jax.lax.with_sharding_constraint(x, PartitionSpec('data'))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Shards the leading (batch) dimension over 'data', the rest replicated."""
  return NamedSharding(mesh, PartitionSpec('data'))


def replicated(mesh: Mesh) -> NamedSharding:
  """Fully replicated placement (metrics, scalars, per-domain vectors)."""
  return NamedSharding(mesh, PartitionSpec())
