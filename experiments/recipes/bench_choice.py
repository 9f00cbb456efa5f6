"""Multiple-choice scoring benchmark: each context read once vs one full row per option.

  python -m experiments.bench --only=choice

The set: the TaskPGM benchmark's validation items (configs/taskpgm.py: 16 BBH suites, 150 items
each, 2-4 options). Both sides score the same rows with the same random-init model: `full rows` is a
lax.map over batches of 32 whole rows in one jit (the scorer mixlab used before), `shared context`
is choice_eval's make_scorer. Each side's first call (compile + score, as a fresh scorer pays) and
its warm time (best of 3) are printed, with the largest difference of a row's log-probability
between the sides and the tokens each side runs (every row's length vs contexts once + bucketed
options).
"""

import time

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from configs import taskpgm as taskpgm_config
from experiments.recipes import task_mixtures
from experiments.recipes import taskpgm_seeds
from experiments.training import choice_eval
from experiments.training import runtime
from experiments.training import state as state_lib
from models import transformer

ROW_BATCH = 32


def rows_logprob(graphdef, params, tokens_BxL1, mask_BxL):
  """Summed log-probability of each row's masked targets (tokens_BxL1[:, 1:]), float32, shape B."""
  logits_BxLxV = nnx.merge(graphdef, params)(tokens_BxL1[:, :-1])
  logprob_BxLxV = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32))
  target_BxL = jnp.take_along_axis(logprob_BxLxV, tokens_BxL1[:, 1:, None], axis=-1)[..., 0]
  return jnp.sum(target_BxL * mask_BxL, axis=-1)


def _full_row_scorer(graphdef, choice_set):
  n, row = choice_set.tokens_NxL1.shape
  pad = -n % ROW_BATCH
  tokens = np.concatenate([choice_set.tokens_NxL1, np.zeros((pad, row), np.int32)])
  mask = np.concatenate([choice_set.mask_NxL, np.zeros((pad, row - 1), np.float32)])
  tokens = jnp.asarray(tokens.reshape(-1, ROW_BATCH, row))
  mask = jnp.asarray(mask.reshape(-1, ROW_BATCH, row - 1))
  scored = jax.jit(lambda params: jax.lax.map(
      lambda batch: rows_logprob(graphdef, params, *batch), (tokens, mask)))
  return lambda params: np.asarray(scored(params)).reshape(-1)[:n]


def _first_and_best_s(fn, params) -> tuple[float, float]:
  """Seconds of the first call (compile + score) and the best of 3 later ones."""
  times = []
  for _ in range(4):
    start = time.perf_counter()
    fn(params)
    times.append(time.perf_counter() - start)
  return times[0], min(times[1:])


def _tokens_run(choice_set) -> tuple[int, int]:
  full = choice_set.tokens_NxL1.size
  shared = sum(b.context.size + b.options.size
               for b in choice_eval._buckets(choice_set, choice_eval.DEFAULT_BATCH_ROWS))  # pylint: disable=protected-access
  return full, shared


def report() -> str:
  lines = ['## multiple-choice scoring (TaskPGM validation items: 16 BBH suites x 150, 2-4 options)',
           '| model | seq_len | rows | first call s (full / shared) | full rows s | shared context s '
           '| speed-up | tokens run (full / shared) | max abs diff |',
           '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  for seq_len in (128, 256):
    base = taskpgm_config.get_config()
    base.seq_len = seq_len
    for family in ('quickstart', 'gqa'):
      config = taskpgm_seeds.seed_config(base, family, 0)
      tasks, evals, file_suites = task_mixtures.check(config)
      _, _, domains = runtime.load_run_domains(config, taskpgm_seeds.train_docs(config, tasks))
      val_set, _ = task_mixtures.choice_sets(
          config, task_mixtures.suites(config, domains, evals, file_suites))
      model = transformer.Transformer(state_lib.run_model_config(config), rngs=nnx.Rngs(0))
      graphdef, params = nnx.split(model)
      full, shared = _full_row_scorer(graphdef, val_set), choice_eval.make_scorer(graphdef, val_set)
      (full_first, full_s), (shared_first, shared_s) = (_first_and_best_s(full, params),
                                                        _first_and_best_s(shared, params))
      diff = float(np.abs(full(params) - shared(params)).max())
      tokens_full, tokens_shared = _tokens_run(val_set)
      lines.append(f'| {family} | {seq_len} | {val_set.num_rows:,} | {full_first:.1f} / '
                   f'{shared_first:.1f} | {full_s:.2f} | '
                   f'{shared_s:.2f} | {full_s / shared_s:.1f}x | '
                   f'{tokens_full / 1e6:.2f}M / {tokens_shared / 1e6:.2f}M | {diff:.1e} |')
  return '\n'.join(lines)
