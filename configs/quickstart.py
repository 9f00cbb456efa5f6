"""Quickstart: a ~0.5M-parameter LM on code, prose and math, static uniform mixture, ~1-2 min on 2 CPUs."""

from configs import base


def get_config():
  config = base.get_config()
  config.steps = 300  # optimizer steps
  config.batch_size = 16  # sequences per step
  config.seq_len = 128  # tokens per sequence
  config.eval_every = 100  # steps between evaluations
  config.eval_items = 8  # greedy-decoded items per domain with items (math/*)
  config.checkpoint_every = 100  # steps between checkpoints
  config.domains = 'code/python:1,prose/plays:1,math/easy:1'  # the mixture
  return config
