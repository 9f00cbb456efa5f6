"""Continual pre-training set-up shared by trajectory collection, agent training and comparisons.

The base model: pre-trained on `continual.sources` only, cached under `continual.base_root` in a folder
named by a fingerprint of everything that shapes it (so a changed config trains a new one). The
evaluation environment: the base model's metrics on the whole domain space (cached beside it), and
`features.scores` turning a run's metrics into source, target and balanced scores.
"""

import hashlib
import json
import os

from etils import epath
import jax
import ml_collections

from experiments.training import atomic
from experiments.training import runtime
from experiments.training import state as state_lib
from experiments.training import trainer as trainer_lib
from mixing.agent import features
from mixing.data import load as load_lib
from mixing import mixer as mixer_lib


def roles(config) -> dict[str, str]:
  sources, _ = load_lib.parse_mixture(config.continual.sources, 'continual.sources')
  targets, _ = load_lib.parse_mixture(config.continual.targets, 'continual.targets')
  both = set(sources) & set(targets)
  if both:
    raise ValueError(f'continual.targets: {sorted(both)[0]!r} is also a source domain')
  return {**{n: 'source' for n in sources}, **{n: 'target' for n in targets}}


def fingerprint(parts) -> str:
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def without(config, *dotted) -> dict:
  """config as a dict, less the given dotted fields (absent ones ignored)."""
  tree = config.to_dict()
  for field in dotted:
    *path, last = field.split('.')
    node = tree
    for part in path:
      node = node.get(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
      node.pop(last, None)
  return tree


def stage_config(name: str, version: int, fields: dict, **extra) -> ml_collections.ConfigDict:
  """What a cached stage's outputs are made of, for `workdir.claim` to record and compare.

  `fields`: the config fields that shape the stage (e.g. `without(config, <sections it ignores>)`);
  a `stage` section adds its name, its code version (a constant each stage bumps when its outputs
  change) and `extra`: inputs that are not config fields (a fingerprint of a dataset) or fields
  claim would otherwise pass as resumable (`steps`).
  """
  return ml_collections.ConfigDict({**fields, 'stage': {'name': name, 'version': version, **extra}})


def base_config(config, spec=None) -> ml_collections.ConfigDict:
  """The base model's pre-training run: sources only, uniform, `base_steps` steps.

  `spec` holds sources, base_steps, base_learning_rate and base_root: config.continual by default
  (TaskPGM passes config.taskpgm, which has the same fields).
  """
  spec = spec or config.continual
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.domains = spec.sources
  cfg.steps = spec.base_steps
  cfg.eval_every = cfg.checkpoint_every = cfg.steps
  cfg.eval_items = 0
  cfg.mixer.name = 'static'
  cfg.init_from = ''
  cfg.optimizer.learning_rate = spec.base_learning_rate
  cfg.data.loss_on_prompt = True
  cfg.optimizer.warmup_steps = 20
  return cfg


def tokenizer_key(config) -> list:
  """What a cache key adds for the tokenizer: nothing for bytes (keys made before tokenizers stay
  valid), else the tokenizer's fingerprint (a hash of its file)."""
  tok = state_lib.run_tokenizer(config)
  return [] if tok.kind == 'bytes' else [tok.fingerprint]


def base_dir(config, spec=None) -> str:
  """The base model's run directory, or 'hf:DIR' when the config starts from a Hugging Face model
  (the pretrained model is then the base: nothing is trained)."""
  if state_lib.hf_folder(config.init_from):
    return config.init_from
  spec = spec or config.continual
  cfg = base_config(config, spec)
  key = [cfg.domains, cfg.steps, cfg.seed, cfg.seq_len, cfg.batch_size, cfg.model.to_dict(),
         cfg.data.to_dict(), cfg.optimizer.to_dict(), cfg.domain_files.to_dict()] + tokenizer_key(cfg)
  name = cfg.domains.replace('/', '_').replace(',', '+')[:60]
  return os.path.join(spec.base_root, f'{name}-{fingerprint(key)}')


def ensure_base(config, quiet: bool = False, spec=None) -> str:
  """Trains (or resumes, or reuses) the base model; returns its run directory."""
  spec = spec or config.continual
  folder = base_dir(config, spec)
  if state_lib.hf_folder(folder):
    return folder
  if not epath.Path(folder, 'summary.json').exists():  # base_root may be gs://
    if not quiet and jax.process_index() == 0:
      print(f'pre-training the base model on {spec.sources} in {folder}', flush=True)
    static_trainer(base_config(config, spec), folder, quiet=quiet).run()
  return folder


def with_overrides(config, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of config with {'a.b': value} overrides set."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  for dotted, value in overrides.items():
    node = cfg
    *path, last = dotted.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return cfg


def entries(text: str) -> list[str]:
  """A ';'-separated list of override sets ('' when empty gives one empty entry: the config itself)."""
  return [t.strip() for t in str(text).split(';')] if str(text).strip() else ['']


def overrides(config, text: str, field: str) -> ml_collections.ConfigDict:
  """config with 'a.b=v,c=w'-style overrides ('|' separates them, since values hold commas), typed
  as the fields they replace; ValueError naming `field` for an unknown field or a value of the
  wrong type."""
  out = {}
  for part in filter(None, (p.strip() for p in str(text).split('|'))):
    key, sep, value = part.partition('=')
    if not sep:
      raise ValueError(f'{field}: expected key=value, got {part!r}')
    node = config
    for piece in key.split('.')[:-1]:
      node = node.get(piece) if isinstance(node, ml_collections.ConfigDict) else None
    last = key.split('.')[-1]
    if not isinstance(node, ml_collections.ConfigDict) or last not in node:
      raise ValueError(f'{field}: unknown config field {key!r}')
    old = node[last]
    try:
      out[key] = type(old)(value) if not isinstance(old, bool) else value in ('1', 'true', 'True')
    except ValueError:
      raise ValueError(f'{field}: {key} expects {type(old).__name__}, got {value!r}') from None
  return derive(with_overrides(config, out))


def derive(cfg):
  """The fields configs/continual_math.py ties to the continual section (FieldReferences, which a
  copied config no longer has): the domain list, the run length and the re-weighting cadence."""
  c = cfg.continual
  cfg.domains = f'{c.sources},{c.targets}'
  cfg.steps = c.reweights * c.steps_per_reweight
  cfg.eval_every = cfg.checkpoint_every = cfg.mixer.update_every = c.steps_per_reweight
  cfg.optimizer.learning_rate = c.learning_rate
  return cfg


def continual_config(config, quiet: bool = False, train_base: bool = True,
                     **overrides) -> ml_collections.ConfigDict:
  """A continual run from the base model (trained first if needed), with overrides applied.

  train_base=False only names the base model's folder (e.g. to claim a workdir before training).
  """
  cfg = with_overrides(config, overrides)
  cfg.init_from = ensure_base(config, quiet=quiet) if train_base else base_dir(config)
  return cfg


def base_metrics(config) -> dict[str, float]:
  """The base model's evaluation on the whole domain space (cached beside the base model)."""
  base = ensure_base(config, quiet=True)
  key = fingerprint([config.domains, config.eval_batches, config.eval_items, config.batch_size,
                      config.domain_files.to_dict(), config.data.to_dict()] + tokenizer_key(config))
  # Beside a trained base model; a Hugging Face model's in continual.base_root, never in its folder.
  folder = (os.path.join(config.continual.base_root, f'hf-{fingerprint([base])}')
            if state_lib.hf_folder(base) else base)
  path = os.path.join(folder, f'eval_{key}.json')
  cached = atomic.read_json(path)
  if cached is not None:
    return cached
  probe = continual_config(config, quiet=True, **{'mixer.name': 'static'})
  trainer = static_trainer(probe, os.path.join(folder, f'eval_{key}_run'), quiet=True)
  trainer.state = trainer.state._replace(
      params=state_lib.init_params(probe, base, trainer.state))
  metrics = trainer.evaluate()
  # Every process has the same metrics; one writes them.
  runtime.on_process_0(f'continual.base_metrics.{key}', atomic.write_json, path, metrics)
  return metrics


def base_params(config, spec=None):
  """The base model's parameters (an nnx State), e.g. to start proxies from."""
  like = state_lib.abstract_train_state(config, runtime.make_mesh(config))
  return state_lib.init_params(config, ensure_base(config, True, spec), like)


def static_trainer(config, workdir: str, quiet: bool = True) -> trainer_lib.Trainer:
  """A Trainer mixing by the weights written in config.domains (the base model, its evaluation)."""
  _, weights = load_lib.parse_mixture(config.domains)
  return trainer_lib.Trainer(config, workdir, mixer_lib.Static(weights), quiet=quiet)


def scores_table(rows: dict) -> str:
  lines = ['| run | source score | target score | balanced score |', '|---|---:|---:|---:|']
  main = {k: v for k, v in rows.items() if ':' not in k}
  best = max(main.values(), key=lambda s: s['balanced'])['balanced'] if main else None
  for name, s in rows.items():
    mark = '**' if s['balanced'] == best and name in main else ''
    lines.append(f'| {name} | {s["source"]:+.4f} | {s["target"]:+.4f} | '
                 f'{mark}{s["balanced"]:+.4f}{mark} |')
  return '\n'.join(lines)
