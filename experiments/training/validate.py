"""Config checks: every mistake a user can make becomes a ValueError naming the field and the value."""

import os

import ml_collections

from mixing import registry
from models import presets
from mixing.data import domains as domains_lib
from mixing.data import load as load_lib
from mixing.data import sampler as sampler_lib

_POSITIVE = ('steps', 'batch_size', 'seq_len', 'eval_every', 'eval_batches', 'checkpoint_every',
             'keep_checkpoints', 'log_every', 'mixer.update_every', 'mesh.model',
             'data.num_train', 'data.num_heldout', 'data.chunk_chars')
_NON_NEGATIVE = ('eval_items', 'optimizer.learning_rate', 'optimizer.warmup_steps',
                 'optimizer.weight_decay', 'progress_seconds')


def _get(config, dotted):
  value = config
  for part in dotted.split('.'):
    value = value[part]
  return value


def check_config(config: ml_collections.ConfigDict):
  for field in _POSITIVE:
    if _get(config, field) <= 0:
      raise ValueError(f'{field}: must be positive, got {_get(config, field)!r}')
  for field in _NON_NEGATIVE:
    if _get(config, field) < 0:
      raise ValueError(f'{field}: must be >= 0, got {_get(config, field)!r}')
  presets.resolve(config.model)
  names, weights = load_lib.parse_mixture(config.domains)
  sampler_lib.validate_weights(weights, names, 'domains')
  for name, spec in config.domain_files.items():
    unknown = set(spec.keys()) - {f.name for f in load_lib.dataclasses.fields(
        load_lib.FileDomainSpec)}
    if 'path' not in spec or unknown:
      raise ValueError(f'domain_files.{name}: needs a path and only FileDomainSpec fields, '
                       f'got {sorted(spec.keys())}')
    if not os.path.exists(spec.path):
      raise ValueError(f'domain_files.{name}.path: no such file or directory: {spec.path!r}')
  for name in names:
    if name not in config.domain_files:
      domains_lib.check_builtin_name(name)
  registry.check(config.mixer, len(names))
  if config.init_from and not os.path.isdir(os.path.join(config.init_from, 'checkpoints')):
    raise ValueError(f'init_from: no checkpoints in {config.init_from!r}')


def check_batch(config, data_devices: int):
  """`data_devices`: the mesh's data axis, over all processes (each feeds the rows of its devices)."""
  if config.batch_size % data_devices:
    raise ValueError(f'batch_size: {config.batch_size} is not divisible by the {data_devices} '
                     'data-parallel devices (of all processes)')
