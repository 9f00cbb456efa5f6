"""Config checks: every mistake a user can make becomes a ValueError naming the field and the value.

`check_config` needs no devices (a sweep checks every run's config with it before starting any);
`check_run` adds what needs this machine's devices: the mesh, the batch split, and the model of
`init_from`. Commands call them before they touch a workdir.
"""

import math

from etils import epath
import jax
import ml_collections

from experiments.training import cli
from experiments.training import state as state_lib
from experiments.training import workdir as workdir_lib
from mixing import registry
from models import presets
from models import sharding as sharding_lib
from mixing.data import domains as domains_lib
from mixing.data import load as load_lib
from mixing.data import sampler as sampler_lib

# field: (type, lowest value, whether that value itself is excluded)
_NUMBERS = {
    **{f: (int, 0, True) for f in (
        'steps', 'batch_size', 'seq_len', 'eval_every', 'eval_batches', 'checkpoint_every',
        'keep_checkpoints', 'log_every', 'mixer.update_every', 'mesh.model', 'data.num_train',
        'data.num_heldout', 'data.chunk_chars')},
    **{f: (int, 0, False) for f in ('seed', 'data.seed', 'eval_items', 'optimizer.warmup_steps')},
    **{f: (float, 0, False) for f in ('optimizer.learning_rate', 'optimizer.weight_decay',
                                      'progress_seconds')},
    'optimizer.clip_norm': (float, 0, True),
    'mesh.data': (int, -1, False),
}
_BELOW_ONE = ('optimizer.b1', 'optimizer.b2')  # Adam's betas: in [0, 1)
_TYPES = {'data.loss_on_prompt': bool, 'domains': str, 'init_from': str, 'data.dir': str,
          'mixer.name': str, 'mixer.agent_dir': str}
_NAMES = {int: 'an integer', float: 'a number', bool: 'True or False', str: 'a string'}


def data_draws(config) -> str:
  """config.data.draws: how batches' domains are drawn (configs older than the field: the value
  their runs used, workdir.ADDED)."""
  return config.data.get('draws', workdir_lib.ADDED['data.draws'])


def csv(text, cast=str) -> list:
  """A comma-separated config field as a list (blanks dropped, each item stripped and cast)."""
  return [cast(x.strip()) for x in str(text).split(',') if x.strip()]


def _get(config, dotted):
  value = config
  for part in dotted.split('.'):
    value = value[part]
  return value


def check_type(field: str, value, kind: type):
  """ValueError unless value is of `kind` (an int is a float; a bool is no number)."""
  kinds = (int, float) if kind is float else kind
  if not isinstance(value, kinds) or (kind in (int, float) and isinstance(value, bool)):
    raise ValueError(f'{field}: must be {_NAMES[kind]}, got {value!r}')


def check_number(field: str, value, kind: type = float, low=None, high=None,
                 open_low: bool = False, open_high: bool = False):
  """ValueError unless value is a finite `kind` within [low, high] (open ends excluded)."""
  check_type(field, value, kind)
  if not math.isfinite(value):
    raise ValueError(f'{field}: must be a finite number, got {value!r}')
  too_low = low is not None and (value < low or (open_low and value == low))
  too_high = high is not None and (value > high or (open_high and value == high))
  if too_low or too_high:
    if high is not None:
      bound = f'in {"(" if open_low else "["}{low}, {high}{")" if open_high else "]"}'
    else:
      bound = ('positive' if low == 0 else f'> {low}') if open_low else f'>= {low}'
    raise ValueError(f'{field}: must be {bound}, got {value!r}')


def check_finite(tree, prefix: str = ''):
  """Every float anywhere in a config (any section) is finite: NaN or inf is never a setting."""
  for key, value in tree.items():
    if isinstance(value, dict):
      check_finite(value, f'{prefix}{key}.')
    elif isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f'{prefix}{key}: must be a finite number, got {value!r}')


def check_config(config: ml_collections.ConfigDict):
  """Types, values and paths of a run's config, and its domains and mixer; no devices needed."""
  check_finite(config.to_dict())
  for field, (kind, low, open_low) in _NUMBERS.items():
    check_number(field, _get(config, field), kind, low, open_low=open_low)
  for field in _BELOW_ONE:
    check_number(field, _get(config, field), float, 0, 1, open_high=True)
  for field, kind in _TYPES.items():
    check_type(field, _get(config, field), kind)
  sampler_lib.check_draws(data_draws(config))
  if config.mesh.data == 0:
    raise ValueError('mesh.data: -1 (every device not on the model axis) or a device count, got 0')
  presets.resolve(config.model)
  presets.compute_fields(config.model)
  names, weights = load_lib.parse_mixture(config.domains)
  sampler_lib.validate_weights(weights, names, 'domains')
  for name, spec in config.domain_files.items():
    unknown = set(spec.keys()) - {f.name for f in load_lib.dataclasses.fields(
        load_lib.FileDomainSpec)}
    if 'path' not in spec or unknown:
      raise ValueError(f'domain_files.{name}: needs a path and only FileDomainSpec fields, '
                       f'got {sorted(spec.keys())}')
    load_lib.check_file_spec(name, load_lib.FileDomainSpec(**spec.to_dict()))
  for name in names:
    if name not in config.domain_files:
      domains_lib.check_builtin_name(name)
  registry.check(config.mixer, len(names))
  cli.check_writable('data.dir', config.data.dir)
  for section in ('continual', 'taskpgm'):  # where base models are cached
    if section in config and 'base_root' in config[section]:
      cli.check_writable(f'{section}.base_root', config[section].base_root)
  hf = state_lib.hf_folder(config.init_from)
  if config.init_from and not hf and not epath.Path(config.init_from, 'checkpoints').is_dir():
    raise ValueError(f'init_from: no checkpoints in {config.init_from!r}')
  # The tokenizer loads; an hf: checkpoint's config.json is readable, supported, and fits it.
  state_lib.run_model_config(config)


def mesh_shape(config) -> tuple[int, int]:
  """(data, model) of the run's mesh over this machine's devices (of every process)."""
  model, devices = config.mesh.model, jax.device_count()
  if model > devices:
    raise ValueError(f'mesh.model: {model} devices on the model axis, but there are only {devices}')
  data = config.mesh.data if config.mesh.data > 0 else devices // model
  if data * model > devices:
    raise ValueError(f'mesh.data: {data} x mesh.model {model} needs {data * model} devices, '
                     f'there are {devices}')
  if jax.process_count() > 1 and data * model != devices:
    # A mesh over the first data x model devices would leave some processes without a device of it:
    # they could neither hold their rows of the batch nor take part in the step.
    raise ValueError(f'mesh.data: {config.mesh.data} x mesh.model {model} must use all '
                     f'{devices} devices of the {jax.process_count()} processes '
                     '(mesh.data=-1 does)')
  return data, model


def check_batch(config, data_devices: int):
  """`data_devices`: the mesh's data axis, over all processes (each feeds the rows of its devices)."""
  if config.batch_size % data_devices:
    raise ValueError(f'batch_size: {config.batch_size} is not divisible by the {data_devices} '
                     'data-parallel devices (of all processes)')
  m = config.get('microbatches', 1)
  if not isinstance(m, int) or m < 1 or config.batch_size % (m * data_devices):
    raise ValueError(f'microbatches: must be >= 1 and split batch_size {config.batch_size} into '
                     f'equal parts over the {data_devices} data-parallel devices, got {m!r}')


def check_run(config: ml_collections.ConfigDict):
  """check_config, and what needs the devices: the mesh, the batch split, init_from's model."""
  check_config(config)
  data, model = mesh_shape(config)
  check_batch(config, data)
  if config.init_from and not state_lib.hf_folder(config.init_from):
    check_init_from(config, sharding_lib.make_mesh(data, model))


def _param_shapes(tree, names=None) -> dict[str, tuple]:
  """{'params.blocks.0.attn.qkv.value': shape} of a state's params, or of checkpoint metadata."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  key = lambda k: str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
  return {'.'.join(map(key, path)): tuple(leaf.shape) for path, leaf in leaves}


def check_init_from(config, mesh):
  """init_from's newest checkpoint holds a model of this config's shapes (else restoring it fails
  inside orbax, checkpoint by checkpoint)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  folder = epath.Path(config.init_from, 'checkpoints')
  steps = sorted((int(p.name) for p in folder.iterdir() if p.name.isdigit()), reverse=True)
  if not steps:
    raise ValueError(f'init_from: no checkpoints in {config.init_from!r}')
  try:
    there = _param_shapes(ocp.PyTreeCheckpointHandler().metadata(
        folder / str(steps[0]) / 'state').tree['params'])
  except Exception:  # pylint: disable=broad-except  # unreadable: restoring reports it, falls back
    return
  here = _param_shapes(state_lib.abstract_train_state(config, mesh).params)
  if there != here:
    name = min(n for n in there.keys() | here.keys() if there.get(n) != here.get(n))
    raise ValueError(f'init_from: {config.init_from} holds a model of another shape '
                     f'(params.{name.removesuffix(".value")}: {there.get(name, "absent")} there, '
                     f'{here.get(name, "absent")} with this config\'s `model`)')
