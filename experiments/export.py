r"""Exports a mixlab run's newest model as a Hugging Face checkpoint folder (Llama/Qwen2 layout).

  python -m experiments.export --workdir=W --out=DIR [--max_shard_mb=5000]

DIR gets config.json, model.safetensors (or shards and model.safetensors.index.json) and the run's
tokenizer file (tokenizer.json and tokenizer_config.json, or tokenizer.model); `transformers`'
AutoModelForCausalLM.from_pretrained(DIR) reads it. A run that started from init_from=hf:SRC keeps
SRC's config.json fields (model_type, special-token ids, ...) with mixlab's shapes.
"""

import json
import os
import shutil

from absl import flags
import ml_collections

from experiments.training import cli
from experiments.training import runtime
from experiments.training import state as state_lib
from mixing import checkpoint as checkpoint_lib
from models import hf

_WORKDIR = flags.DEFINE_string('workdir', None, 'A mixlab run directory (config.json, checkpoints/).')
_OUT = flags.DEFINE_string('out', None, 'The Hugging Face folder to write.')
_MAX_SHARD_MB = flags.DEFINE_integer('max_shard_mb', 5000, 'Largest safetensors file, in MB.')


def export(workdir: str, out: str, max_shard_bytes: int) -> list[str]:
  """Writes `out`; returns the files written."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.isfile(path):
    raise ValueError(f'workdir: no run config.json in {workdir!r}')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  like = state_lib.abstract_train_state(config, runtime.make_mesh(config))
  params = checkpoint_lib.load_run_state(workdir, like).params
  source = state_lib.hf_folder(config.init_from)
  files = hf.export(params, state_lib.run_model_config(config), out,
                    hf.read_config(source) if source else None, max_shard_bytes)
  tok = state_lib.run_tokenizer(config)
  if tok.kind != 'bytes':
    spec = config.get('tokenizer', '') or source
    file = os.path.join(spec, 'tokenizer.json') if os.path.isdir(spec) else spec
    if tok.kind == 'sentencepiece' and not os.path.exists(file):
      file = os.path.join(spec, 'tokenizer.model')
    names = [(file, 'tokenizer.model' if tok.kind == 'sentencepiece' else 'tokenizer.json')]
    beside = os.path.join(os.path.dirname(file), 'tokenizer_config.json')
    if tok.kind == 'hf' and os.path.exists(beside):
      names.append((beside, 'tokenizer_config.json'))
    for src, name in names:
      if os.path.abspath(src) != os.path.abspath(os.path.join(out, name)):
        shutil.copyfile(src, os.path.join(out, name))
      files.append(name)
  return files


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  for flag in (_WORKDIR, _OUT):
    if not flag.value:
      raise ValueError(f'{flag.name}: required, got {flag.value!r}')
  if _MAX_SHARD_MB.value < 1:
    raise ValueError(f'max_shard_mb: must be positive, got {_MAX_SHARD_MB.value}')
  cli.check_writable('out', _OUT.value)
  files = export(_WORKDIR.value, _OUT.value, _MAX_SHARD_MB.value << 20)
  print(f'wrote {_OUT.value}: {", ".join(files)}')


def console():
  """The `mixlab-export` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
