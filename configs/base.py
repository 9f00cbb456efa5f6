"""Defaults for every mixlab training run; experiment configs start from `get_config()` and override."""

import ml_collections

from configs import models


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # seeds the model init and the data (sampler draws, generated domains, splits)
  config.steps = 300  # optimizer steps
  config.batch_size = 16  # global batch, in sequences; split over the mesh's data axis and processes
  config.seq_len = 128  # tokens per training sequence (documents are packed)
  config.eval_every = 100  # steps between evaluations (held-out loss; accuracy where there are items)
  config.eval_batches = 2  # held-out batches (of batch_size sequences) per domain at each evaluation
  config.eval_items = 16  # evaluation items per domain scored by greedy decoding (0: loss only)
  config.checkpoint_every = 100  # steps between checkpoints (and one at the end)
  config.keep_checkpoints = 3  # checkpoints kept; older ones are deleted
  config.log_every = 10  # steps between metrics lines (metrics.jsonl, TensorBoard)
  config.progress_seconds = 5.0  # seconds between progress lines on stdout

  # The mixture: 'name[:weight],...'. Built-in names: see mixing/data/domains.py; a name listed in
  # `domain_files` is read from that file instead. The weights are the static mixer's.
  config.domains = 'code/python:1,prose/plays:1,math/easy:1'
  # name -> {path, fields ('input,target' for JSONL, '' for text), ...}: see load.FileDomainSpec.
  config.domain_files = ml_collections.ConfigDict()

  config.data = ml_collections.ConfigDict()
  config.data.dir = '/tmp/mixlab_data'  # cache for file domains built through TFDS (array_record)
  config.data.num_train = 4000  # generated domains: training documents
  config.data.num_heldout = 200  # generated domains: held-out documents (eval items come from these)
  config.data.chunk_chars = 4096  # corpus and file domains: document size, in characters
  config.data.loss_on_prompt = True  # False: only completions (answers) carry loss, as in SFT

  config.model = models.get_config('quickstart')  # see configs/models.py for the presets

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 3e-3  # peak learning rate of AdamW
  config.optimizer.warmup_steps = 20  # linear warmup from 0 to the peak
  config.optimizer.weight_decay = 0.1  # decoupled weight decay
  config.optimizer.clip_norm = 1.0  # global gradient-norm clip
  config.optimizer.b1 = 0.9  # Adam beta1
  config.optimizer.b2 = 0.95  # Adam beta2

  config.mixer = ml_collections.ConfigDict()
  config.mixer.name = 'static'  # which Mixer re-weights the domains (static: the weights above)
  config.mixer.update_every = 50  # steps between Mixer updates

  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # devices on the data axis (-1: all devices not used by `model`)
  config.mesh.model = 1  # devices on the model (tensor-parallel) axis
  return config
