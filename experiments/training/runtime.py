"""Run set-up shared by the trainer, populations and offline methods: domains, mesh, global batches."""

import jax
from jax.experimental import multihost_utils
import numpy as np

from experiments.training import atomic
from experiments.training import state as state_lib
from experiments.training import validate
from experiments.training import workdir as workdir_lib
from mixing.data import domains as domains_lib
from mixing.data import load as load_lib
from models import sharding as sharding_lib


def make_mesh(config) -> jax.sharding.Mesh:
  return sharding_lib.make_mesh(*validate.mesh_shape(config))


def load_run_domains(config, train_docs=None):
  """(names, weights, packed domains) of config.domains; train_docs: name -> documents kept."""
  names, weights = load_lib.parse_mixture(config.domains)
  files = {name: load_lib.FileDomainSpec(**spec.to_dict())
           for name, spec in config.domain_files.items()}
  opts = domains_lib.BuiltinOptions(num_train=config.data.num_train,
                                    num_heldout=config.data.num_heldout,
                                    num_eval=max(config.eval_items, 1),
                                    chunk_chars=config.data.chunk_chars)
  load = lambda: load_lib.load_domains(
      names, config.seq_len, config.data.seed, files, config.data.dir, opts,
      config.data.loss_on_prompt, train_docs, state_lib.run_tokenizer(config),
      config.data.get('build_workers', 0))
  if set(names) & set(files) and jax.process_count() > 1 and atomic.is_remote(config.data.dir):
    # One bucket for every host, and no lock across hosts on an object store: process 0 builds
    # the file domains, then the others open its build (a bad file is process 0's one line on all).
    built = workdir_lib.process_0_first(f'data.dir: {config.data.dir}', load)
    return names, weights, built if jax.process_index() == 0 else load()
  return names, weights, load()


def process_rows(mesh, batch_size: int) -> np.ndarray:
  """The global batch rows this process feeds: those its devices hold, ascending.

  Usually block p of P equal blocks for process p, but a device order that interleaves hosts gives
  other rows, and a model axis spanning hosts makes two processes hold (and feed) the same rows;
  make_array_from_process_local_data takes exactly these rows, in this order.
  """
  index_map = sharding_lib.batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
  return np.array(sorted({row for index in index_map.values()
                          for row in range(*index[0].indices(batch_size))}), np.int64)


def to_global(mesh, batch):
  """This process's rows (`process_rows`) -> global arrays sharded over the data axis."""
  sharding = sharding_lib.batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def from_process_0(x_D: np.ndarray) -> np.ndarray:
  """`x_D` as process 0 has it, on every process, bit for bit (a no-op with one process).

  Host-side decisions such as a mixer's weights must be identical on every process, or their samplers
  would draw different global batches; a regression or a network may differ in its last bits between
  hosts. The bytes travel as uint8, so JAX's 32-bit default cannot round float64 values.
  """
  x_D = np.asarray(x_D)
  if jax.process_count() == 1:
    return x_D
  raw = multihost_utils.broadcast_one_to_all(np.frombuffer(x_D.tobytes(), np.uint8))
  return np.frombuffer(np.asarray(raw, np.uint8).tobytes(), x_D.dtype).reshape(x_D.shape)


def barrier(name: str) -> None:
  """Waits until every process gets here (a no-op with one), e.g. to read what process 0 wrote."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def on_process_0(name: str, fn, *args) -> None:
  """fn(*args) on process 0 only (e.g. writing a file), then every process waits for it."""
  if jax.process_index() == 0:
    fn(*args)
  barrier(name)


def local_rows(mesh, batch):
  """This process's rows of a global batch (e.g. a held-out batch every process builds whole)."""
  rows = process_rows(mesh, len(batch['domain_B']))
  return {k: v[rows] for k, v in batch.items()}
