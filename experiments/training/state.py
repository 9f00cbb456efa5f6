"""The one place a config becomes model + optimizer + sharded train state.

Parameters are created directly in their shards, as nanodo's `_init_train_state` does: the init is
traced abstractly (`jax.eval_shape`), shardings are derived from the abstract state, and the init runs
under `jax.jit(..., out_shardings=...)`, so no device ever holds an unsharded copy of a large model.
A population stacks K members' states on a leading axis (vmapped init over their seeds), sharded over
the mesh's data axis when K divides by it.
"""

import dataclasses
import functools
import json
from typing import Any, Callable, Sequence

from etils import epath
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
import optax

from experiments.training import step as step_lib
from mixing import checkpoint as checkpoint_lib
from mixing.data import records
from mixing.data import tokenizer
from models import hf
from models import presets
from models import sharding as sharding_lib
from models import transformer


@dataclasses.dataclass
class Built:
  graphdef: nnx.GraphDef  # the model's structure (nnx.merge(graphdef, state.params) is the model)
  state: step_lib.TrainState  # sharded; with a population, every leaf has a leading member axis
  sharding: Any  # the state's sharding tree (or one NamedSharding for every leaf of a population)
  tx: optax.GradientTransformation
  schedule: Callable[[int], Any]  # learning rate of update i (0-based)


def optimizer(config) -> tuple[optax.GradientTransformation, Callable]:
  """AdamW and its schedule from `config.optimizer`, over `config.steps`."""
  o = config.optimizer
  tx = step_lib.make_optimizer(o.learning_rate, o.warmup_steps, config.steps, o.weight_decay,
                               o.clip_norm, o.b1, o.b2)
  return tx, step_lib.make_schedule(o.learning_rate, o.warmup_steps, config.steps)


def member_sharding(mesh, k: int) -> NamedSharding:
  """Population members over the data axis when k divides by it, else replicated."""
  axis = 'data' if k % mesh.shape['data'] == 0 else None
  return NamedSharding(mesh, PartitionSpec(axis))


def hf_folder(init_from: str) -> str:
  """The Hugging Face checkpoint folder of init_from='hf:DIR' ('' for a mixlab workdir or none); a
  remote DIR (`hf:gs://...`) is copied once to a local folder (safetensors are memory-mapped)."""
  folder = init_from[3:] if init_from.startswith('hf:') else ''
  return _local_hf(folder) if folder and not records.is_local(folder) else folder


@functools.lru_cache(maxsize=4)
def _local_hf(folder: str) -> str:
  """A local copy of a remote Hugging Face folder's config, tokenizer and safetensors files (each
  cached by its path, size and mtime: records.local_copy)."""
  if not (epath.Path(folder) / 'config.json').exists():
    raise ValueError(f'init_from: no Hugging Face config.json in {folder!r}')
  index = epath.Path(folder) / hf.INDEX
  weights = sorted(set(json.loads(index.read_text())['weight_map'].values())) if index.exists() \
      else ['model.safetensors']
  return records.local_folder(folder, ['config.json', 'tokenizer.json', 'tokenizer.model',
                                       'tokenizer_config.json', hf.INDEX, *weights])


def run_tokenizer(config) -> tokenizer.Tokenizer:
  """config.tokenizer's tokenizer; '' (the default) is the model's own: the Hugging Face checkpoint's
  (init_from='hf:DIR': DIR's tokenizer.json or tokenizer.model) or bytes."""
  folder = hf_folder(config.get('init_from', ''))
  spec = config.get('tokenizer', '')
  if not spec and folder:
    if tokenizer.file_of(folder) is None:
      raise ValueError(f"tokenizer: '' takes the checkpoint's, but {folder} has no tokenizer.json "
                       'or tokenizer.model (name one with --config.tokenizer=PATH)')
    spec = folder
  return tokenizer.load(spec or 'bytes')


def run_model_config(config) -> transformer.ModelConfig:
  """The run's model: an hf: checkpoint's shape, else config.model over the tokenizer's vocabulary."""
  folder = hf_folder(config.init_from)
  if not folder:
    return presets.model_config(config.model, config.seq_len, run_tokenizer(config).vocab_size)
  model_config = hf.model_config(hf.read_config(folder), config.seq_len,
                                 **presets.compute_fields(config.model))
  vocab = run_tokenizer(config).vocab_size
  if vocab > model_config.vocab_size:
    raise ValueError(f'tokenizer: {vocab} ids, more than the vocabulary of {folder} '
                     f'({model_config.vocab_size})')
  return model_config


def init_params(config, init_from: str, like):
  """The parameters init_from names, in `like`'s (a train state's) structure and shardings: an
  hf:DIR checkpoint read into its shards, or a mixlab workdir's latest checkpoint."""
  folder = hf_folder(init_from)
  if folder:
    return hf.load_params(folder, run_model_config(config), like.params)
  return checkpoint_lib.load_run_state(init_from, like).params


def _model_and_init(config):
  model_config = run_model_config(config)
  tx, schedule = optimizer(config)
  graphdef, _ = nnx.split(nnx.eval_shape(
      lambda: transformer.Transformer(model_config, rngs=nnx.Rngs(0))))

  def init(seed, params):
    if params is None:
      model = transformer.Transformer(model_config, rngs=nnx.Rngs(jax.random.key(seed)))
      params = nnx.split(model)[1]
    return step_lib.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
  return graphdef, init, tx, schedule


def param_rules(config):
  """Logical axes -> mesh axes: tensor parallel, plus FSDP over 'data' with config.mesh.fsdp."""
  return sharding_lib.rules(config.mesh.get('fsdp', False))


def abstract_train_state(config, mesh):
  """The train state's shapes, dtypes and shardings, nothing allocated (e.g. to restore into)."""
  _, init, _, _ = _model_and_init(config)
  abstract = jax.eval_shape(lambda: init(config.seed, None))
  sharding = sharding_lib.state_shardings(abstract, mesh, param_rules(config))
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                      sharding)


def build_train_state(config, mesh, seeds: Sequence[int] | None = None, init_params=None) -> Built:
  """Model + optimizer + train state for `config`, created in their shards.

  seeds=None: one model seeded by config.seed, sharded by the logical-axis rules. seeds=[s_1..s_K]:
  a population of K members (leading axis), member k seeded by s_k. init_params: parameters every
  model starts from instead of its random init (e.g. a base model), with a fresh optimizer state.
  """
  graphdef, init, tx, schedule = _model_and_init(config)
  if seeds is None:
    make = lambda params: init(config.seed, params)
    sharding = sharding_lib.state_shardings(jax.eval_shape(make, init_params), mesh,
                                            param_rules(config))
    state = jax.jit(make, out_shardings=sharding)(init_params)
  else:
    sharding = member_sharding(mesh, len(seeds))
    make = jax.vmap(init, in_axes=(0, None))
    state = jax.jit(make, out_shardings=sharding)(jnp.asarray(seeds, jnp.int32), init_params)
  return Built(graphdef, state, sharding, tx, schedule)
