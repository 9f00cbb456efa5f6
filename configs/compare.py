"""The baseline comparison: every mixer on the same budget over built-in domains (README, issue #4)."""

from configs import base


def get_config():
  config = base.get_config()
  config.steps = 300  # optimizer steps of the main model, the same for every mixer
  config.batch_size = 16  # sequences per step
  config.seq_len = 128  # tokens per sequence
  config.eval_every = 100  # steps between evaluations
  config.eval_items = 8  # greedy-decoded items per domain with items
  config.domains = 'code/python,prose/plays,math/easy,bbh/web_of_lies'  # equal static weights
  config.mixer.update_every = 25  # online mixers (odm) re-weight every 25 steps
  config.mixer.doremi.proxy_steps = 200  # reference and proxy runs
  config.mixer.regmix.num_proxies = 16  # proxies (tiny models), trained as one population
  config.mixer.regmix.proxy_steps = 200  # steps of each proxy
  return config
