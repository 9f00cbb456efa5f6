"""The one training loop, for one model (Trainer) or K proxies in one vmapped step (Population).

One iteration draws every member's batch by its current weights, dispatches the jitted step and only
then reads the previous step's metrics, so building batch t+1 on the host overlaps step t on the
device (nanodo's habit). Metrics are read at once where the loop needs them before going on: at an
evaluation, a mixer update (the next batch depends on its weights), a checkpoint and the last step.
A non-finite loss stops the run with its exact step and domains; checkpoints are only written after
their step's loss was read, so only checkpoints before it exist. Everything carried between steps is
in the checkpoint, so a resumed run is bit-identical to an uninterrupted one on the same devices.

Every evaluation is logged at its own step; the other steps log every `log_every` (train loss per
domain, mixture, learning rate, gradient norm, tokens/s).
"""

import dataclasses
import os
import time

import jax
import numpy as np

from experiments.training import metrics as metrics_lib
from experiments.training import workdir as workdir_lib
from mixing import checkpoint as checkpoint_lib


class NonFiniteLossError(RuntimeError):
  pass


@dataclasses.dataclass
class Sums:
  """Per-member, per-domain training-loss sums since some step (for mixer observations and logs)."""
  loss_KxD: np.ndarray
  tokens_KxD: np.ndarray
  grad_norm_K: np.ndarray
  steps: int = 0

  @classmethod
  def zeros(cls, k, d):
    return cls(np.zeros((k, d)), np.zeros((k, d)), np.zeros(k))

  def add(self, metrics):
    self.loss_KxD += np.asarray(metrics['domain_loss_D'], np.float64) * metrics['domain_tokens_D']
    self.tokens_KxD += np.asarray(metrics['domain_tokens_D'], np.float64)
    self.grad_norm_K += np.asarray(metrics.get('grad_norm', np.zeros(len(self.grad_norm_K))))
    self.steps += 1

  def mean_KxD(self):
    with np.errstate(invalid='ignore', divide='ignore'):
      return np.where(self.tokens_KxD > 0, self.loss_KxD / self.tokens_KxD, np.nan)

  def to_tree(self):
    return dataclasses.asdict(self)

  @classmethod
  def from_tree(cls, tree, k, d):
    if 'loss_D' in tree:  # a checkpoint written before populations shared this loop
      return cls(np.asarray(tree['loss_D'])[None], np.asarray(tree['tokens_D'])[None], np.zeros(1))
    return cls(np.asarray(tree['loss_KxD']).reshape(k, d),
               np.asarray(tree['tokens_KxD']).reshape(k, d),
               np.asarray(tree['grad_norm_K']).reshape(k), int(tree['steps']))


class Loop:
  """The loop's state and schedule; subclasses build the state, the step and the members' samplers.

  Subclasses set: config, workdir, names, samplers (one per member), state, train_fn(state, batch)
  -> (state, metrics), members (K) and stacked (True: metrics carry a leading member axis), and
  may override next_batch, evaluate, mixer hooks and extra checkpoint meta.
  """
  check_finite = True
  quiet = False
  label = ''

  def _init_loop(self, log_dirs):
    k, d = self.members, len(self.names)
    self.log_dirs = log_dirs  # one metrics folder per member (None: no metrics files)
    self.checkpointer = checkpoint_lib.Checkpointer(os.path.join(self.workdir, 'checkpoints'),
                                                    self.config.keep_checkpoints)
    self.step = 0
    self.tokens_seen = 0
    self.last_eval: dict[str, float] = {}
    self.since_update = Sums.zeros(k, d)
    self.since_log = Sums.zeros(k, d)
    self.history: list[dict] = []  # metrics of the steps of the current run() call, host copies
    self.writers = None

  # --- checkpoint -----------------------------------------------------------------------------------
  def meta(self) -> dict:
    return {'step': self.step, 'samplers': [s.state() for s in self.samplers],
            'last_eval': self.last_eval, 'tokens_seen': self.tokens_seen,
            'since_update': self.since_update.to_tree(), 'since_log': self.since_log.to_tree()}

  def restore_meta(self, meta) -> None:
    k, d = self.members, len(self.names)
    states = meta['samplers'] if 'samplers' in meta else [meta['sampler']]
    for sampler, state in zip(self.samplers, states):
      sampler.restore(state)
    self.last_eval = {key: float(v) for key, v in meta.get('last_eval', {}).items()}
    self.tokens_seen = int(meta.get('tokens_seen', 0))
    if 'since_update' in meta:
      self.since_update = Sums.from_tree(meta['since_update'], k, d)
      self.since_log = Sums.from_tree(meta['since_log'], k, d)

  def restore(self) -> bool:
    restored = self.checkpointer.restore_latest(checkpoint_lib.abstract_of(self.state))
    if restored is None:
      return False
    self.step, self.state, meta = restored
    self.restore_meta(meta)
    return True

  # --- hooks ----------------------------------------------------------------------------------------
  def next_batch(self):
    raise NotImplementedError  # each kind of loop places its batch on the mesh its own way

  def evaluate(self) -> dict[str, float]:
    return {}

  def is_eval_step(self, step: int) -> bool:
    return False

  def update_mixers(self) -> None:
    pass

  def is_mixer_step(self, step: int) -> bool:
    return False

  # --- reading a step's metrics -----------------------------------------------------------------------
  def _consume(self, step: int, metrics) -> None:
    metrics = jax.device_get(metrics)
    if not self.stacked:
      metrics = {key: np.asarray(v)[None] for key, v in metrics.items()}
    if self.check_finite:
      self._check_finite(step, metrics)
    self.since_update.add(metrics)
    self.since_log.add(metrics)
    self.tokens_seen += int(np.asarray(metrics['domain_tokens_D'])[0].sum())
    self.history.append(metrics)
    self._last_loss = float(np.mean(metrics['token_loss']))

  def _check_finite(self, step, metrics):
    for k in range(self.members):
      bad = [name for name, loss, tokens in zip(self.names, metrics['domain_loss_D'][k],
                                                metrics['domain_tokens_D'][k])
             if tokens > 0 and not np.isfinite(loss)]
      loss = float(metrics['loss'][k])
      if not np.isfinite(loss) or bad:
        who = f'member {k}: ' if self.members > 1 else ''
        raise NonFiniteLossError(
            f'{who}non-finite loss {loss} at step {step}; domains with a non-finite loss: '
            f'{", ".join(bad) or "none (the total only)"}; the last good checkpoint is kept')

  def _log(self, step: int, train: bool, evaluation: dict) -> None:
    """One metrics line per member at `step`: train scalars since the last line, and/or the eval."""
    if self.writers is None:
      return
    lr = float(self.schedule(step - 1)) if train and self.schedule is not None else None
    mean_KxD = self.since_log.mean_KxD()
    for k, writer in enumerate(self.writers):
      scalars = {}
      if train:
        tokens = max(self.since_log.tokens_KxD[k].sum(), 1.0)
        scalars['train/loss'] = float(np.nansum(self.since_log.loss_KxD[k]) / tokens)
        scalars['learning_rate'] = lr
        scalars['grad_norm'] = self.since_log.grad_norm_K[k] / max(self.since_log.steps, 1)
        if k == 0 and not self.stacked:
          scalars['perf/tokens_per_sec'] = self._tokens_per_sec
        for d, name in enumerate(self.names):
          if np.isfinite(mean_KxD[k, d]):
            scalars[f'train/loss/{name}'] = mean_KxD[k, d]
          scalars[f'mixture/{name}'] = self.samplers[k].weights_D[d]
      scalars.update(evaluation)
      writer.write(step, scalars)
    if train:
      self.since_log = Sums.zeros(self.members, len(self.names))

  def _after_step(self, step: int, until: int, boundary: bool) -> None:
    """Everything that happens once `step`'s metrics are read (and, at a boundary, before t+1)."""
    c = self.config
    evaluation = {}
    if boundary and self.is_eval_step(step):
      self.last_eval = evaluation = self.evaluate()
      self._clock, self._clock_step = time.time(), step  # evaluation time is not training time
    elapsed = time.time() - self._clock
    if elapsed > 0 and step > self._clock_step:
      self._tokens_per_sec = (step - self._clock_step) * c.batch_size * c.seq_len / elapsed
    self.progress.update(step, self._last_loss, self._tokens_per_sec)
    train_log = step % c.log_every == 0 or step == c.steps
    if train_log or evaluation:
      self._log(step, train_log, evaluation)
    if boundary and self.is_mixer_step(step) and step < c.steps:
      self.update_mixers()
      self.since_update = Sums.zeros(self.members, len(self.names))
    if boundary and self._checkpointing and (step % c.checkpoint_every == 0 or step == c.steps):
      self.checkpointer.save(step, self.state, self.meta())
      if os.path.isdir(workdir_lib.replaced_path(self.workdir)):  # --overwrite's old run: once this
        self.checkpointer.wait()  # run's first checkpoint is committed, it is no longer needed
        workdir_lib.release_replaced(self.workdir)

  def _is_boundary(self, step: int, until: int) -> bool:
    c = self.config
    return (step >= until or self.is_eval_step(step) or self.is_mixer_step(step)
            or (self._checkpointing and step % c.checkpoint_every == 0))

  # --- the loop ---------------------------------------------------------------------------------------
  def open_writers(self, resumed: bool) -> None:
    del resumed
    if self.log_dirs is not None and self.writers is None:
      first = jax.process_index() == 0
      self.writers = [metrics_lib.MetricsWriter(d, self.step, first) for d in self.log_dirs]

  def close(self) -> None:
    self.checkpointer.close()
    for writer in self.writers or ():
      writer.close()
    self.writers = None

  def train(self, until: int, checkpoints: bool = True) -> None:
    """Steps until `until` (<= config.steps), dispatching step t+1 before reading step t."""
    self._checkpointing = checkpoints
    if not hasattr(self, 'progress'):
      self.progress = metrics_lib.Progress(self.config.steps, self.config.progress_seconds,
                                           not self.quiet, prefix=self.label)
    self._tokens_per_sec, self._clock, self._clock_step = 0.0, time.time(), self.step
    self._last_loss = float('nan')
    self.history = []
    pending = None
    while self.step < until:
      batch = self.next_batch()
      self.state, metrics = self.train_fn(self.state, batch)
      if pending is not None:  # step t's metrics, read while step t+1 runs
        self._consume(*pending)
        self._after_step(pending[0], until, boundary=False)
      self.step += 1
      pending = (self.step, metrics)
      if self._is_boundary(self.step, until):
        self._consume(*pending)
        self._after_step(self.step, until, boundary=True)
        pending = None
