"""The train loop every mixlab method uses: sharded steps, mixer updates, evaluation, checkpoints.

One loop iteration: draw a batch by the current weights, run the jitted step (which returns every
domain's loss), stop on a non-finite loss, evaluate every `eval_every` steps, log every `log_every`,
hand the Mixer an Observation every `mixer.update_every` and apply its weights from the next batch,
checkpoint every `checkpoint_every`. Everything the loop carries between steps is in the checkpoint,
so a resumed run is bit-identical to an uninterrupted one on the same devices.
"""

import dataclasses
import os
import time

from flax import nnx
import jax
import ml_collections
import numpy as np

from configs import models as model_configs
from mixing import checkpoint as checkpoint_lib
from experiments import atomic
from experiments import evaluate as evaluate_lib
from experiments import metrics as metrics_lib
from experiments import step as step_lib
from experiments import offline
from experiments import runtime
from experiments import validate
from mixing import mixer as mixer_lib
from mixing.data import sampler as sampler_lib
from models import sharding as sharding_lib
from models import transformer


class NonFiniteLossError(RuntimeError):
  pass


@dataclasses.dataclass
class _Sums:
  """Per-domain training-loss sums since some step (for mixer observations and logs)."""
  loss_D: np.ndarray
  tokens_D: np.ndarray

  @classmethod
  def zeros(cls, d):
    return cls(np.zeros(d), np.zeros(d))

  def add(self, metrics):
    self.loss_D += np.asarray(metrics['domain_loss_D'], np.float64) * metrics['domain_tokens_D']
    self.tokens_D += np.asarray(metrics['domain_tokens_D'], np.float64)

  def mean_D(self):
    with np.errstate(invalid='ignore', divide='ignore'):
      return np.where(self.tokens_D > 0, self.loss_D / self.tokens_D, np.nan)


class Trainer:
  """Builds a run from a config; `run()` trains to config.steps, resuming from the workdir."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, quiet: bool = False):
    validate.check_config(config)
    self.config, self.workdir = config, workdir
    self.quiet = quiet or jax.process_index() != 0
    self.names, weights, self.domains = runtime.load_run_domains(config)
    self.mesh = runtime.make_mesh(config)
    validate.check_batch(config, self.mesh.shape['data'])
    cfg = model_configs.model_config(config.model, config.seq_len)
    model = transformer.Transformer(cfg, rngs=nnx.Rngs(config.seed))
    o = config.optimizer
    tx = step_lib.make_optimizer(o.learning_rate, o.warmup_steps, config.steps, o.weight_decay,
                                 o.clip_norm, o.b1, o.b2)
    self.graphdef, state = step_lib.init_train_state(model, tx)
    self.state_sharding = sharding_lib.state_shardings(state, self.mesh)
    self.state = jax.device_put(state, self.state_sharding)
    num_domains = len(self.names)
    self.train_fn = step_lib.jit_train_step(self.mesh, self.graphdef, self.state_sharding, tx,
                                            num_domains)
    self.eval_fn = step_lib.jit_eval_step(self.mesh, self.graphdef, self.state_sharding.params,
                                          num_domains)
    self.eval_set = evaluate_lib.heldout_batches(self.domains, config.eval_batches,
                                                 config.batch_size)
    self.sampler = sampler_lib.MixtureSampler(
        [d.train for d in self.domains], self.names, weights, config.batch_size, config.seed,
        local_rows=runtime.process_rows(self.mesh, config.batch_size))
    self.mixer = offline.build_mixer(config, workdir, self.names, weights, self.domains,
                                     self.quiet)
    infos = [mixer_lib.DomainInfo(d.name, d.train.num_tokens) for d in self.domains]
    self.mixer_state = self.mixer.init(infos)
    self.checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                                    config.keep_checkpoints)
    self.step = 0
    self.rng = jax.random.key_data(jax.random.key(config.seed))
    self.last_eval: dict[str, float] = {}
    self.since_update = _Sums.zeros(num_domains)
    self.since_log = _Sums.zeros(num_domains)
    self.tokens_seen = 0

  # --- checkpoint ---------------------------------------------------------------------------------
  def _meta(self):
    return {'step': self.step, 'sampler': self.sampler.state(), 'mixer': self.mixer_state,
            'rng': np.asarray(self.rng), 'last_eval': self.last_eval,
            'tokens_seen': self.tokens_seen,
            'since_update': dataclasses.asdict(self.since_update),
            'since_log': dataclasses.asdict(self.since_log)}

  def _restore(self) -> bool:
    restored = self.checkpointer.restore_latest(checkpoint_lib.abstract_of(self.state))
    if restored is None:
      return False
    self.step, self.state, meta = restored
    self.sampler.restore(meta['sampler'])
    self.mixer_state = meta['mixer']
    self.rng = meta['rng']
    self.last_eval = {k: float(v) for k, v in meta['last_eval'].items()}
    self.tokens_seen = int(meta['tokens_seen'])
    self.since_update = _Sums(**meta['since_update'])
    self.since_log = _Sums(**meta['since_log'])
    return True

  # --- pieces of the loop ---------------------------------------------------------------------------
  def observation(self) -> mixer_lib.Observation:
    return mixer_lib.Observation(
        step=self.step, total_steps=self.config.steps, tokens_seen=self.tokens_seen,
        train_loss_D=self.since_update.mean_D(), train_tokens_D=self.since_update.tokens_D.copy(),
        eval_metrics=dict(self.last_eval), weights_D=self.sampler.weights_D.copy())

  def _update_mixer(self):
    self.mixer_state, weights = self.mixer.update(self.mixer_state, self.observation())
    if jax.process_count() > 1:  # every process samples by process 0's choice (and checkpoints it)
      weights = runtime.from_process_0(sampler_lib.validate_weights(weights, self.names))
    weights = self.sampler.set_weights(weights)
    self.mixer_log.write(self.step, {f'mixture/{n}': w for n, w in zip(self.names, weights)})
    self.since_update = _Sums.zeros(len(self.names))

  def evaluate(self) -> dict[str, float]:
    params = self.state.params
    batches = [runtime.local_rows(self.mesh, b) for b in self.eval_set]
    loss_D = evaluate_lib.heldout_loss(self.eval_fn, params, batches,
                                       lambda b: runtime.to_global(self.mesh, b))
    out = {f'eval/{name}/loss': float(v) for name, v in zip(self.names, loss_D)}
    for d in self.domains:
      if d.domain.items and self.config.eval_items > 0:
        out[f'eval/{d.name}/accuracy'] = evaluate_lib.accuracy(self.graphdef, params, d.domain,
                                                               self.config.eval_items)
    return out

  def _check_finite(self, metrics):
    bad = [name for name, loss, tokens in zip(self.names, metrics['domain_loss_D'],
                                              metrics['domain_tokens_D'])
           if tokens > 0 and not np.isfinite(loss)]
    if not np.isfinite(metrics['loss']) or bad:
      raise NonFiniteLossError(
          f'non-finite loss {float(metrics["loss"])} at step {self.step}; domains with a '
          f'non-finite loss: {", ".join(bad) or "none (the total only)"}; the last good '
          'checkpoint is kept')

  def _log(self, tokens_per_sec: float):
    scalars = {'train/loss': float(np.nansum(self.since_log.loss_D) /
                                   max(self.since_log.tokens_D.sum(), 1.0)),
               'perf/tokens_per_sec': tokens_per_sec}
    for name, loss, w in zip(self.names, self.since_log.mean_D(), self.sampler.weights_D):
      if np.isfinite(loss):
        scalars[f'train/loss/{name}'] = loss
      scalars[f'mixture/{name}'] = w
    scalars.update(self.last_eval if self.step % self.config.eval_every == 0
                   or self.step == self.config.steps else {})
    self.writer.write(self.step, scalars)
    self.since_log = _Sums.zeros(len(self.names))

  # --- the loop -------------------------------------------------------------------------------------
  def run(self, step_wrapper=None) -> dict[str, float]:
    """Trains to config.steps (resuming if the workdir has a checkpoint); returns the last eval."""
    c = self.config
    resumed = self._restore()
    first = jax.process_index() == 0
    self.writer = metrics_lib.MetricsWriter(self.workdir, self.step, first)
    # Every mixer update (its step, then the weights it chose) is a line of mixer.jsonl.
    self.mixer_log = metrics_lib.MetricsWriter(self.workdir, self.step if resumed else -1, first,
                                               'mixer.jsonl', tensorboard=False)
    if not resumed and c.init_from:  # continue from another run's model, with a fresh optimizer
      params = checkpoint_lib.load_run_state(c.init_from, self.state).params
      self.state = self.state._replace(params=params)
    if not resumed:
      self._update_mixer()  # every mixer chooses the first weights too
    progress = metrics_lib.Progress(c.steps, c.progress_seconds, not self.quiet)
    if resumed and not self.quiet:
      print(f'resumed from step {self.step}', flush=True)
    train_fn = step_wrapper(self.train_fn) if step_wrapper else self.train_fn
    tokens_per_sec, clock, clock_step = 0.0, time.time(), self.step
    try:
      while self.step < c.steps:
        batch = runtime.to_global(self.mesh, self.sampler.next_batch())
        self.state, metrics = train_fn(self.state, batch, None)
        metrics = jax.device_get(metrics)
        self.step += 1
        self._check_finite(metrics)
        self.since_update.add(metrics)
        self.since_log.add(metrics)
        self.tokens_seen += int(metrics['domain_tokens_D'].sum())
        if self.step % c.eval_every == 0 or self.step == c.steps:
          self.last_eval = self.evaluate()
          clock, clock_step = time.time(), self.step  # evaluation time is not training time
        elapsed = time.time() - clock
        if elapsed > 0 and self.step > clock_step:
          tokens_per_sec = (self.step - clock_step) * c.batch_size * c.seq_len / elapsed
        progress.update(self.step, float(metrics['loss']), tokens_per_sec)
        if self.step % c.log_every == 0 or self.step == c.steps:
          self._log(tokens_per_sec)
        if self.step % c.mixer.update_every == 0 and self.step < c.steps:
          self._update_mixer()
        if self.step % c.checkpoint_every == 0 or self.step == c.steps:
          self.checkpointer.save(self.step, self.state, self._meta())
    finally:
      self.checkpointer.close()
      self.writer.close()
      self.mixer_log.close()
    self._write_summary()
    return self.last_eval

  def _write_summary(self):
    if jax.process_index() == 0:
      self._write_summary_file()
    # When run() returns, summary.json exists for every process: callers test it to skip finished runs.
    runtime.barrier(f'trainer.summary.{self.step}')

  def _write_summary_file(self):
    summary = {'step': self.step, 'domains': self.names, 'eval': self.last_eval,
               'weights': self.sampler.weights_D.tolist(), 'realized':
               {k: v.tolist() for k, v in self.sampler.realized().items()}}
    atomic.write_json(os.path.join(self.workdir, 'summary.json'), summary)

  def table(self) -> str:
    columns = {'eval loss': np.array([self.last_eval.get(f'eval/{n}/loss', np.nan)
                                      for n in self.names])}
    acc = np.array([self.last_eval.get(f'eval/{n}/accuracy', np.nan) for n in self.names])
    if np.isfinite(acc).any():
      columns['accuracy'] = acc
    columns['final weight'] = self.sampler.weights_D
    return metrics_lib.domain_table(self.names, columns)
