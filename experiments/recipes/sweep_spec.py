"""Sweep files: loading, expansion (grid/zip/random), validation, run names, train commands.

A sweep file (configs/sweeps/*.py) defines `get_sweep()` returning a ConfigDict or a dict:

  config       the base experiment config every run starts from, e.g. 'configs/quickstart.py'
               (relative to the current directory, else to the repository root)
  kind         'grid': the Cartesian product of `params` (the first field varies slowest);
               'zip': the lists taken together, element i of each (all must have the same length);
               'random': `num_samples` distinct draws, each field uniform over its list (seeded by
               `seed`; a draw equal to an earlier one is redrawn, so num_samples may be at most the
               number of distinct combinations). num_samples and seed are ignored by grid and zip.
  params       dotted config field -> list of values, e.g. {'mixer.name': ['static', 'odm']}.
               Dotted keys need a dict or `ConfigDict(allow_dotted_keys=True)`; nested dicts
               ({'mixer': {'name': [...]}}) work too.
  overrides    (optional) dotted field -> one value, applied to every run (e.g. fewer steps).
  num_samples  (random) how many runs.
  seed         (random) seeds the draws (default 0).

Every field must exist in the base config and every value must have the field's type; both are
checked, with each run's whole config (experiments.training.validate), before anything starts.

Runs live in `<sweep dir>/<run name>`; the name is the run's swept values in field order sorted by
name, `field=value` joined by ',', with characters other than letters, digits and `._,=+-` replaced
by '_' (e.g. `mixer.name=odm,seed=1`); a name longer than 120 characters, or one two runs would
share, is cut and given an 8-hex-digit hash of the exact values. The same sweep file therefore maps
to the same directories, so a re-run can skip the finished runs (experiments.recipes.sweep_runner).
"""

import copy
import dataclasses
import hashlib
import importlib.util
import itertools
import json
import math
import os
import random
import re
import shlex
import sys
from typing import Any

import ml_collections

from experiments.training import atomic
from experiments.training import workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_ROOT = '/tmp/mixlab_sweeps'  # the default sweep dir is DEFAULT_ROOT/<sweep file's stem>
KINDS = ('grid', 'zip', 'random')
_FIELDS = ('config', 'kind', 'params', 'overrides', 'num_samples', 'seed')
_MAX_NAME = 120
_SAFE = re.compile(r'[^A-Za-z0-9._,=+-]')


class SweepError(ValueError):
  """A mistake in the sweep file or flags: one line naming the field and the value."""


@dataclasses.dataclass
class Sweep:
  name: str  # the sweep file's stem
  path: str  # the sweep file
  config: str  # the base config as written in the sweep file
  config_path: str  # ... as usable from the current directory
  kind: str
  params: dict[str, list]  # dotted field -> values, in the sweep file's order
  overrides: dict[str, Any]  # dotted field -> value
  num_samples: int
  seed: int
  domains: tuple[str, ...] = ()  # --domain flags passed to every run


@dataclasses.dataclass
class Run:
  name: str
  values: dict[str, Any]  # swept field -> value (converted to the field's type)
  args: dict[str, str]  # every --config.FIELD=VALUE this run passes: overrides, then swept values
  workdir: str
  config: Any = None  # the run's whole ConfigDict, as experiments.train will parse it
  overwrite: bool = False  # its workdir holds another config and the sweep was given --overwrite



# --- the sweep file -------------------------------------------------------------------------------
def _plain(tree):
  if isinstance(tree, (dict, ml_collections.ConfigDict)):
    return {k: _plain(v) for k, v in tree.items()}
  return tree


def _resolve_config_path(path: str) -> str | None:
  file = path.split(':')[0]  # config_flags' FILE:ARG form
  if os.path.isfile(file):
    return path
  if not os.path.isabs(file) and os.path.isfile(os.path.join(ROOT, file)):
    return os.path.join(ROOT, path)
  return None


def load_sweep(path: str) -> Sweep:
  """Reads a sweep file and checks its shape (field names, kinds, lists); not yet the config."""
  if not path:
    raise SweepError('sweep: give --sweep=FILE (e.g. configs/sweeps/quickstart_mixers.py)')
  if not os.path.isfile(path):
    raise SweepError(f'sweep: no such file {path!r}')
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  name = os.path.splitext(os.path.basename(path))[0]
  try:
    spec = importlib.util.spec_from_file_location(f'mixlab_sweep_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not callable(getattr(module, 'get_sweep', None)):
      raise SweepError(f'sweep: {path} defines no get_sweep()')
    raw = module.get_sweep()
  except SweepError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    lines = [l for l in str(e).splitlines() if l.strip()]
    raise SweepError(f'sweep: {path} failed to load: {type(e).__name__}: '
                     f'{lines[-1].strip() if lines else ""}') from None
  if not isinstance(raw, (dict, ml_collections.ConfigDict)):
    raise SweepError(f'sweep: get_sweep() in {path} returned a {type(raw).__name__}, '
                     'not a ConfigDict or dict')
  raw = _plain(raw)
  unknown = [k for k in raw if k not in _FIELDS]
  if unknown:
    raise SweepError(f'sweep.{unknown[0]}: unknown field (known: {", ".join(_FIELDS)})')
  for field in ('config', 'kind', 'params'):
    if field not in raw:
      raise SweepError(f'sweep.{field}: missing in {path}')
  config = raw['config']
  if not isinstance(config, str) or not config:
    raise SweepError(f'sweep.config: needs a config file path, got {config!r}')
  config_path = _resolve_config_path(config)
  if config_path is None:
    raise SweepError(f'sweep.config: no such file {config!r}')
  kind = raw['kind']
  if kind not in KINDS:
    raise SweepError(f'sweep.kind: unknown {kind!r} (known: {", ".join(KINDS)})')
  if not isinstance(raw['params'], dict) or not raw['params']:
    raise SweepError(f'sweep.params: needs at least one field -> list of values, '
                     f'got {raw["params"]!r}')
  params = workdir_lib.flatten(raw['params'])
  for field, values in params.items():
    if not isinstance(values, (list, tuple)):
      raise SweepError(f'sweep.params: {field!r} needs a list of values, got {values!r}')
    if not values:
      raise SweepError(f'sweep.params: {field!r} has an empty list of values')
  overrides = raw.get('overrides') or {}
  if not isinstance(overrides, dict):
    raise SweepError(f'sweep.overrides: needs a dict of field -> value, got {overrides!r}')
  overrides = workdir_lib.flatten(overrides)
  both = [f for f in overrides if f in params]
  if both:
    raise SweepError(f'sweep.overrides: {both[0]!r} is also in sweep.params')
  num_samples, seed = raw.get('num_samples', 0), raw.get('seed', 0)
  if kind == 'random':
    if 'num_samples' not in raw:
      raise SweepError("sweep.num_samples: missing (kind 'random' needs it)")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
      raise SweepError(f'sweep.num_samples: must be a positive integer, got {num_samples!r}')
    if isinstance(seed, bool) or not isinstance(seed, int):
      raise SweepError(f'sweep.seed: must be an integer, got {seed!r}')
  return Sweep(name=name, path=path, config=config, config_path=config_path, kind=kind,
               params={k: list(v) for k, v in params.items()}, overrides=overrides,
               num_samples=num_samples, seed=seed)


# --- expansion (pure) -----------------------------------------------------------------------------
def grid(params: dict[str, list]) -> list[dict]:
  """The Cartesian product; the first field varies slowest."""
  fields = list(params)
  return [dict(zip(fields, combo)) for combo in itertools.product(*params.values())]


def zip_params(params: dict[str, list]) -> list[dict]:
  """Element i of every list together; the lists must have the same length."""
  lengths = {f: len(v) for f, v in params.items()}
  if len(set(lengths.values())) > 1:
    shown = ', '.join(f'{f} has {n}' for f, n in lengths.items())
    raise SweepError(f"sweep.params: kind 'zip' needs lists of the same length ({shown})")
  fields = list(params)
  return [dict(zip(fields, combo)) for combo in zip(*params.values())]


def _key(value) -> str:
  return json.dumps(value, sort_keys=True, default=repr)


def random_params(params: dict[str, list], num_samples: int, seed: int) -> list[dict]:
  """num_samples distinct draws, each field uniform over its list, in the order drawn."""
  distinct = {f: list({_key(v): v for v in values}.values()) for f, values in params.items()}
  total = math.prod(len(v) for v in distinct.values())
  if num_samples > total:
    raise SweepError(f'sweep.num_samples: {num_samples} is more than the {total} distinct '
                     "combinations of sweep.params (use kind 'grid' for all of them)")
  rng = random.Random(seed)
  seen, out = set(), []
  while len(out) < num_samples:
    draw = {f: rng.choice(values) for f, values in params.items()}
    key = _key(draw)
    if key not in seen:
      seen.add(key)
      out.append(draw)
  return out


def expand(kind: str, params: dict[str, list], num_samples: int = 0, seed: int = 0) -> list[dict]:
  """The runs' swept values: a list of {field: value}."""
  if kind == 'grid':
    return grid(params)
  if kind == 'zip':
    return zip_params(params)
  if kind == 'random':
    return random_params(params, num_samples, seed)
  raise SweepError(f'sweep.kind: unknown {kind!r} (known: {", ".join(KINDS)})')


# --- names and command lines ----------------------------------------------------------------------
def format_value(value) -> str:
  """The text of a value on the command line (config_flags parses it back by the field's type)."""
  if isinstance(value, float):
    return repr(value)
  if isinstance(value, (list, tuple)):
    return repr(tuple(value))
  return str(value)


def _hash(values: dict) -> str:
  return hashlib.sha1(_key(values).encode()).hexdigest()[:8]


def run_name(values: dict[str, Any]) -> str:
  """`field=value,...` in field-name order, sanitized for a directory name."""
  name = ','.join(f'{f}={format_value(values[f])}' for f in sorted(values))
  name = _SAFE.sub('_', name)
  if len(name) > _MAX_NAME:
    name = f'{name[:_MAX_NAME - 9]}-{_hash(values)}'
  return name


def run_names(all_values: list[dict]) -> list[str]:
  """run_name of each; names two different runs would share get a hash of the exact values."""
  names = [run_name(v) for v in all_values]
  counts = {}
  for n in names:
    counts[n] = counts.get(n, 0) + 1
  return [f'{n[:_MAX_NAME - 9]}-{_hash(v)}' if counts[n] > 1 else n
          for n, v in zip(names, all_values)]


def train_command(sweep: Sweep, run: Run, python: str = sys.executable) -> list[str]:
  cmd = [python, '-m', 'experiments.train', f'--config={sweep.config_path}',
         f'--workdir={run.workdir}']
  cmd += [f'--config.{f}={v}' for f, v in run.args.items()] + [f'--domain={d}' for d in sweep.domains]
  if run.overwrite:
    cmd.append('--overwrite')
  return cmd


def shell_command(sweep: Sweep, run: Run) -> str:
  return ' '.join(shlex.quote(a) for a in train_command(sweep, run, python='python'))


def write_plan(sweep: Sweep, runs: list[Run], sweep_dir: str) -> str:
  """sweep_dir/sweep.json: the sweep file, base config and every run's name, values and command."""
  os.makedirs(sweep_dir, exist_ok=True)
  return atomic.write_json(os.path.join(sweep_dir, 'sweep.json'), {
      'sweep': os.path.abspath(sweep.path), 'config': sweep.config, 'kind': sweep.kind,
      'params': sweep.params, 'overrides': sweep.overrides,
      'runs': [{'name': r.name, 'values': r.values, 'command': shell_command(sweep, r)}
               for r in runs]}, default=repr)


# --- validation against the base config ----------------------------------------------------------
def parse_config(config_path: str, args: dict[str, str]):
  """The ConfigDict `experiments.train --config=config_path --config.F=V...` would see."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ['sweep', f'--config={config_path}'] + [f'--config.{f}={v}' for f, v in args.items()]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'base config', flag_values=flag_values,
                                  sys_argv=argv)
  flag_values(argv)
  return flag_values['config'].value


def _base_config(sweep: Sweep):
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  try:
    return parse_config(sweep.config_path, {})
  except Exception as e:  # pylint: disable=broad-except
    lines = [l for l in str(e).splitlines() if l.strip()]
    raise SweepError(f'sweep.config: {sweep.config} failed to load: {type(e).__name__}: '
                     f'{lines[-1].strip() if lines else ""}') from None


def _type_error(where, sweep, field, value, old):
  return SweepError(f'{where}: {field}={value!r} has type {type(value).__name__}, but {field} in '
                    f'{sweep.config} is {type(old).__name__} (default {old!r})')


def _convert(base, where: str, sweep: Sweep, field: str, value):
  """value as the field's type, via the ConfigDict's own type-checked assignment."""
  parent, parts = base, field.split('.')
  for i, part in enumerate(parts):
    if not isinstance(parent, ml_collections.ConfigDict) or part not in parent:
      raise SweepError(f'{where}: no field {field!r} in {sweep.config}')
    if i < len(parts) - 1:
      parent = parent[part]
  old = parent[parts[-1]]
  if isinstance(old, ml_collections.ConfigDict):
    raise SweepError(f'{where}: {field!r} in {sweep.config} is a group of fields; sweep one of '
                     f'them (e.g. {field}.{next(iter(old.keys()), "x")})')
  if isinstance(value, bool) != isinstance(old, bool) and old is not None:
    raise _type_error(where, sweep, field, value, old)
  copy_parent = copy.deepcopy(parent)
  try:
    setattr(copy_parent, parts[-1], value)
  except (TypeError, ValueError):
    raise _type_error(where, sweep, field, value, old) from None
  return copy_parent[parts[-1]]


def _get(config, field: str):
  for part in field.split('.'):
    config = config[part]
  return config


def config_differs(run: Run) -> bool:
  """run.workdir/config.json records another config than run.config (a different experiment)."""
  old = atomic.read_json(os.path.join(run.workdir, 'config.json'))
  if old is None:
    return False
  return bool(workdir_lib.differences(old, json.loads(run.config.to_json_best_effort())))


def plan(sweep: Sweep, sweep_dir: str, overwrite: bool = False) -> list[Run]:
  """The runs, each checked: fields exist, values type-check and parse back, configs validate."""
  base = _base_config(sweep)
  params = {f: [_convert(base, 'sweep.params', sweep, f, v) for v in values]
            for f, values in sweep.params.items()}
  overrides = {f: _convert(base, 'sweep.overrides', sweep, f, v)
               for f, v in sweep.overrides.items()}
  all_values = expand(sweep.kind, params, sweep.num_samples, sweep.seed)
  names = run_names(all_values)
  seen = {}
  for name, values in zip(names, all_values):
    if name in seen:
      raise SweepError(f'sweep.params: the run {name} appears twice (a repeated value?)')
    seen[name] = values
  check = None
  try:
    from experiments.training import validate  # pylint: disable=g-import-not-at-top
    check = validate.check_config
  except ImportError:
    pass
  runs = []
  for name, values in zip(names, all_values):
    args = {f: format_value(v) for f, v in {**overrides, **values}.items()}
    try:
      config = parse_config(sweep.config_path, args)
    except Exception as e:  # pylint: disable=broad-except
      text = str(e).strip().splitlines()
      raise SweepError(f'sweep run {name}: the override does not parse: '
                       f'{text[0] if text else type(e).__name__}') from None
    for f, v in {**overrides, **values}.items():
      parsed = _get(config, f)
      if parsed != v or type(parsed) is not type(v):
        where = 'sweep.params' if f in values else 'sweep.overrides'
        raise SweepError(f'{where}: {f}={v!r} does not survive the command line '
                         f'(--config.{f}={args[f]} reads back as {parsed!r})')
    if check is not None and 'continual' not in config:  # continual configs are built in train
      try:
        check(config)
      except ValueError as e:
        raise SweepError(f'sweep run {name}: {str(e).splitlines()[0]}') from None
    runs.append(Run(name=name, values=values, args=args,
                    workdir=os.path.join(os.path.abspath(sweep_dir), name), config=config))
  for run in runs:
    run.overwrite = overwrite and config_differs(run)
  return runs


def default_dir(sweep: Sweep) -> str:
  return os.path.join(DEFAULT_ROOT, sweep.name)

