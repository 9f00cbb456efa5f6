"""Run set-up shared by the trainer, populations and offline methods: domains, mesh, global batches."""

import jax

from mixing.data import domains as domains_lib
from mixing.data import load as load_lib
from models import sharding as sharding_lib


def make_mesh(config) -> jax.sharding.Mesh:
  model = config.mesh.model
  data = config.mesh.data if config.mesh.data > 0 else jax.device_count() // model
  return sharding_lib.make_mesh(data, model)


def load_run_domains(config):
  names, weights = load_lib.parse_mixture(config.domains)
  files = {name: load_lib.FileDomainSpec(**spec.to_dict())
           for name, spec in config.domain_files.items()}
  opts = domains_lib.BuiltinOptions(num_train=config.data.num_train,
                                    num_heldout=config.data.num_heldout,
                                    num_eval=max(config.eval_items, 1),
                                    chunk_chars=config.data.chunk_chars)
  packed = load_lib.load_domains(names, config.seq_len, config.data.seed, files, config.data.dir, opts,
                                 config.data.loss_on_prompt)
  return names, weights, packed


def to_global(mesh, batch):
  """This process's rows -> global arrays sharded over the data axis."""
  sharding = sharding_lib.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def local_rows(batch):
  n = len(batch['domain_B']) // jax.process_count()
  lo = jax.process_index() * n
  return {k: v[lo:lo + n] for k, v in batch.items()}
