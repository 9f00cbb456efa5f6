"""A run small enough for tests: tiny model, short sequences, small generated domains, seconds per run."""

from configs import base
from configs import models


def get_config():
  config = base.get_config()
  config.steps = 20  # optimizer steps
  config.batch_size = 8  # sequences per step (divisible by the test meshes' data axes)
  config.seq_len = 32  # tokens per sequence
  config.eval_every = 10  # steps between evaluations
  config.eval_batches = 1  # held-out batches per domain
  config.eval_items = 2  # decoded items per domain with items
  config.checkpoint_every = 5  # steps between checkpoints
  config.log_every = 1  # a metrics line every step
  config.progress_seconds = 1.0  # progress lines often, so tests see the run is alive
  config.domains = 'synthetic/copy:1,synthetic/noise:1,math/easy:1'  # fast generated domains
  config.data.num_train = 200  # generated documents per domain
  config.data.num_heldout = 20  # held-out documents per domain
  config.model = models.get_config('tiny')  # 2 layers, d_model 64
  config.optimizer.warmup_steps = 2  # short warmup for short runs
  return config
