"""One training run: a model, its sampler and the Mixer it is handed, on the one loop (loop.py).

`Trainer(config, workdir, mixer)` never trains another model: offline methods (DoReMi, RegMix proxies,
a continual base model) run in experiments/recipes before a Trainer exists and hand it a Mixer.
The loop hands the Mixer an Observation every `mixer.update_every` steps (and once before the first
step) and applies its weights from the next batch; it evaluates every `eval_every` steps (held-out
loss, and exact match on domains with items), and checkpoints model, optimizer, sampler, mixer state.
"""

import contextlib
import os

import jax
import ml_collections
import numpy as np

from experiments.training import atomic
from experiments.training import evaluate as evaluate_lib
from experiments.training import loop as loop_lib
from experiments.training import metrics as metrics_lib
from experiments.training import runtime
from experiments.training import state as state_lib
from experiments.training import step as step_lib
from experiments.training import validate
from mixing import mixer as mixer_lib
from mixing.data import sampler as sampler_lib

NonFiniteLossError = loop_lib.NonFiniteLossError


class Trainer(loop_lib.Loop):
  """Builds a run from a config and a Mixer; `run()` trains to config.steps, resuming."""

  members, stacked = 1, False
  opaque_meta = ('mixer',)

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, mixer: mixer_lib.Mixer,
               quiet: bool = False, domains=None):
    validate.check_config(config)
    self.config, self.workdir = config, workdir
    self.quiet = quiet or jax.process_index() != 0
    if domains is None:
      domains = runtime.load_run_domains(config)
    self.names, weights, self.domains = domains
    self.mesh = runtime.make_mesh(config)
    validate.check_batch(config, self.mesh.shape['data'])
    built = state_lib.build_train_state(config, self.mesh)
    self.graphdef, self.state, self.state_sharding = built.graphdef, built.state, built.sharding
    self.schedule = built.schedule
    num_domains = len(self.names)
    self.train_fn = step_lib.jit_train_step(self.mesh, self.graphdef, self.state_sharding,
                                            built.tx, num_domains, config.get('microbatches', 1))
    self.eval_fn = step_lib.jit_eval_step(self.mesh, self.graphdef, self.state_sharding.params,
                                          num_domains)
    self.eval_set = evaluate_lib.heldout_batches(self.domains, config.eval_batches,
                                                 config.batch_size)
    self.sampler = sampler_lib.MixtureSampler(
        [d.train for d in self.domains], self.names, weights, config.batch_size, config.seed,
        local_rows=runtime.process_rows(self.mesh, config.batch_size),
        draws=validate.data_draws(config))
    self.samplers = [self.sampler]
    self.mixer = mixer
    self.mixer_state = mixer.init([mixer_lib.DomainInfo(d.name, d.train.num_tokens)
                                   for d in self.domains])
    self.mixer_step = -1  # the step of the last mixer update (-1: none yet)
    self._init_loop([workdir])

  # --- what the loop asks of a single run ---------------------------------------------------------------
  def meta(self):
    return {**super().meta(), 'mixer': self.mixer_state, 'mixer_step': self.mixer_step}

  def restore_meta(self, meta):
    super().restore_meta(meta)
    self.mixer_state = meta['mixer']
    every = self.config.mixer.update_every  # checkpoints before mixer_step was recorded:
    self.mixer_step = int(meta.get('mixer_step', (self.step // every) * every))

  def next_batch(self):
    return runtime.to_global(self.mesh, self.sampler.next_batch())

  def is_eval_step(self, step):
    return step % self.config.eval_every == 0 or step == self.config.steps

  def is_mixer_step(self, step):
    return step % self.config.mixer.update_every == 0

  def observation(self) -> mixer_lib.Observation:
    return mixer_lib.Observation(
        step=self.step, total_steps=self.config.steps, tokens_seen=self.tokens_seen,
        train_loss_D=self.since_update.mean_KxD()[0],
        train_tokens_D=self.since_update.tokens_KxD[0].copy(),
        eval_metrics=dict(self.last_eval), weights_D=self.sampler.weights_D.copy())

  def update_mixers(self):
    self.mixer_state, weights = self.mixer.update(self.mixer_state, self.observation())
    if jax.process_count() > 1:  # every process samples by process 0's choice (and checkpoints it)
      weights = runtime.from_process_0(sampler_lib.validate_weights(weights, self.names))
    weights = self.sampler.set_weights(weights)
    self.mixer_log.write(self.step, {f'mixture/{n}': w for n, w in zip(self.names, weights)})
    self.mixer_step = self.step

  def evaluate(self) -> dict[str, float]:
    params = self.state.params
    batches = [runtime.local_rows(self.mesh, b) for b in self.eval_set]
    loss_D = evaluate_lib.heldout_loss(self.eval_fn, params, batches,
                                       lambda b: runtime.to_global(self.mesh, b))
    out = {f'eval/{name}/loss': float(v) for name, v in zip(self.names, loss_D)}
    for d in self.domains:
      if d.domain.items and self.config.eval_items > 0:
        out[f'eval/{d.name}/accuracy'] = evaluate_lib.accuracy(self.graphdef, params, d.domain,
                                                               self.config.eval_items, d.tokenizer)
    return out

  # --- the run --------------------------------------------------------------------------------------
  def run(self) -> dict[str, float]:
    """Trains to config.steps (resuming if the workdir has a checkpoint); returns the last eval."""
    c = self.config
    resumed = self.restore()
    first = jax.process_index() == 0
    self.open_writers(resumed)
    # Every mixer update (its step, then the weights it chose) is a line of mixer.jsonl.
    self.mixer_log = metrics_lib.MetricsWriter(self.workdir, self.step if resumed else -1, first,
                                               'mixer.jsonl', tensorboard=False,
                                               expected_through=self.mixer_step if resumed else None)
    if not resumed and c.init_from:  # continue from another run's model, with a fresh optimizer
      params = state_lib.init_params(c, c.init_from, self.state)
      self.state = self.state._replace(params=params)
    if not resumed or (self.is_mixer_step(self.step) and self.mixer_step < self.step < c.steps):
      # Every mixer chooses the first weights too; a finished run extended to more steps makes the
      # update its old last step skipped.
      self.update_mixers()
      self.since_update = loop_lib.Sums.zeros(1, len(self.names))
    if resumed and not self.quiet:
      print(f'resumed from step {self.step}', flush=True)
    try:
      self.train(c.steps)
    finally:
      with contextlib.ExitStack() as stack:  # both close, even if one fails
        stack.callback(self.mixer_log.close)
        stack.callback(self.close)
    self._write_summary()
    return self.last_eval

  def _write_summary(self):
    if jax.process_index() == 0:
      summary = {'step': self.step, 'domains': self.names, 'eval': self.last_eval,
                 'weights': self.sampler.weights_D.tolist(), 'realized':
                 {k: v.tolist() for k, v in self.sampler.realized().items()}}
      atomic.write_json(os.path.join(self.workdir, 'summary.json'), summary)
    # When run() returns, summary.json exists for every process: callers test it to skip finished runs.
    runtime.barrier(f'trainer.summary.{self.step}')

  def table(self) -> str:
    columns = {'eval loss': np.array([self.last_eval.get(f'eval/{n}/loss', np.nan)
                                      for n in self.names])}
    acc = np.array([self.last_eval.get(f'eval/{n}/accuracy', np.nan) for n in self.names])
    if np.isfinite(acc).any():
      columns['accuracy'] = acc
    columns['final weight'] = self.sampler.weights_D
    return metrics_lib.domain_table(self.names, columns)
