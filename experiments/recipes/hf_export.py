"""A mixlab run's newest model as a Hugging Face checkpoint folder (the `experiments.export` CLI).

The workdir and the output folder may be remote (`gs://...`): the config and checkpoint are read
through epath and orbax, and a remote folder is written locally first, then uploaded file by file.
"""

import os
import shutil
import tempfile

import ml_collections

from experiments.training import atomic
from experiments.training import runtime
from experiments.training import state as state_lib
from mixing import checkpoint as checkpoint_lib
from models import hf


def export(workdir: str, out: str, max_shard_bytes: int) -> list[str]:
  """Writes `out`; returns the files written."""
  config = atomic.read_json(atomic.join(workdir, 'config.json'))
  if not isinstance(config, dict):
    raise ValueError(f'workdir: no run config.json in {workdir!r}')
  config = ml_collections.ConfigDict(config)
  like = state_lib.abstract_train_state(config, runtime.make_mesh(config))
  params = checkpoint_lib.load_run_state(workdir, like).params
  local = tempfile.mkdtemp(prefix='mixlab-export-') if atomic.is_remote(out) else out
  try:
    files = _write(config, params, local, max_shard_bytes)
    if local != out:
      atomic.upload(local, out, files)
  finally:
    if local != out:
      shutil.rmtree(local, ignore_errors=True)
  return files


def _write(config, params, out: str, max_shard_bytes: int) -> list[str]:
  source = state_lib.hf_folder(config.init_from)
  files = hf.export(params, state_lib.run_model_config(config), out,
                    hf.read_config(source) if source else None, max_shard_bytes)
  tok = state_lib.run_tokenizer(config)
  if tok.kind != 'bytes':  # the tokenizer file, and a tokenizer_config.json beside a tokenizer.json
    beside = os.path.join(os.path.dirname(tok.path), 'tokenizer_config.json')
    names = [(tok.path, 'tokenizer.model' if tok.kind == 'sentencepiece' else 'tokenizer.json')]
    if tok.kind == 'hf' and os.path.exists(beside):
      names.append((beside, 'tokenizer_config.json'))
    for src, name in names:
      if os.path.abspath(src) != os.path.abspath(os.path.join(out, name)):
        shutil.copyfile(src, os.path.join(out, name))
      files.append(name)
  return files
