r"""Exports a mixlab run's newest model as a Hugging Face checkpoint folder (Llama/Qwen2 layout).

  python -m experiments.export --workdir=W --out=DIR [--max_shard_mb=5000]

DIR gets config.json, model.safetensors (or shards and model.safetensors.index.json) and the run's
tokenizer file (tokenizer.json and tokenizer_config.json, or tokenizer.model); `transformers`'
AutoModelForCausalLM.from_pretrained(DIR) reads it. A run that started from init_from=hf:SRC keeps
SRC's config.json fields (model_type, special-token ids, ...) with mixlab's shapes. W and DIR may be
gs:// URLs (DIR is then written locally and uploaded).
"""

from absl import flags

from experiments.recipes import hf_export
from experiments.training import cli

_WORKDIR = flags.DEFINE_string('workdir', None, 'A mixlab run directory (config.json, checkpoints/).')
_OUT = flags.DEFINE_string('out', None, 'The Hugging Face folder to write.')
_MAX_SHARD_MB = flags.DEFINE_integer('max_shard_mb', 5000, 'Largest safetensors file, in MB.')


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  for flag in (_WORKDIR, _OUT):
    if not flag.value:
      raise ValueError(f'{flag.name}: required, got {flag.value!r}')
  if _MAX_SHARD_MB.value < 1:
    raise ValueError(f'max_shard_mb: must be positive, got {_MAX_SHARD_MB.value}')
  cli.check_writable('out', _OUT.value)
  files = hf_export.export(_WORKDIR.value, _OUT.value, _MAX_SHARD_MB.value << 20)
  print(f'wrote {_OUT.value}: {", ".join(files)}')


def console():
  """The `mixlab-export` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
