"""The one training loop, for one model (Trainer) or K proxies in one vmapped step (Population).

One iteration draws every member's batch by its current weights, dispatches the jitted step and only
then reads the previous step's metrics, so building batch t+1 on the host overlaps step t on the
device (nanodo's habit). Metrics are read at once where the loop needs them before going on: at an
evaluation, a mixer update (the next batch depends on its weights), a checkpoint and the last step.
A non-finite loss stops the run with its exact step and domains; checkpoints are only written after
their step's loss was read, so only checkpoints before it exist. Everything carried between steps is
in the checkpoint, so a resumed run is bit-identical to an uninterrupted one on the same devices. A
checkpoint whose meta does not fit the loop (`check_meta`: a key missing, an array of another shape)
is rejected before any of it is applied, and the checkpointer falls back to the one before it.

Every evaluation is logged at its own step; the other steps log every `log_every` (train loss per
domain, mixture, learning rate, gradient norm, tokens/s).
"""

import contextlib
import dataclasses
import os
import time

import jax
import numpy as np

from experiments.training import cli
from experiments.training import metrics as metrics_lib
from experiments.training import workdir as workdir_lib
from mixing import checkpoint as checkpoint_lib


class NonFiniteLossError(cli.RunFailed):
  """A loss that is NaN or infinite: the run stops there, its checkpoints before it kept."""


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
  def from_tree(cls, tree):
    return cls(np.asarray(tree['loss_KxD']), np.asarray(tree['tokens_KxD']),
               np.asarray(tree['grad_norm_K']), int(tree['steps']))


def _upgraded_meta(meta, k: int, d: int) -> dict:
  """A checkpoint's meta in today's format (older ones: one 'sampler', loss sums of one member or
  none, no tokens seen or last evaluation)."""
  if not isinstance(meta, dict):
    raise ValueError(f'meta: a {type(meta).__name__}, not an object')
  meta = dict(meta)
  if 'samplers' not in meta and 'sampler' in meta:
    meta['samplers'] = [meta.pop('sampler')]
  meta.setdefault('last_eval', {})
  meta.setdefault('tokens_seen', 0)
  for key in ('since_update', 'since_log'):
    tree = meta.setdefault(key, Sums.zeros(k, d).to_tree())
    if isinstance(tree, dict) and 'loss_D' in tree:  # written before populations shared this loop
      meta[key] = {'loss_KxD': np.asarray(tree['loss_D'])[None],
                   'tokens_KxD': np.asarray(tree['tokens_D'])[None],
                   'grad_norm_K': np.zeros(1), 'steps': 0}
  return meta


def _check_like(expected, found, where: str = 'meta') -> None:
  """ValueError naming the first place where `found` does not have the form of `expected`: a key of
  `expected` missing, a list of another length, an array of another shape (an axis named H, a history
  that grows with the run, may have any length), or a number where `expected` has none."""
  if isinstance(expected, dict):
    if not isinstance(found, dict):
      raise ValueError(f'{where}: not an object')
    for key, value in expected.items():
      if key not in found:
        raise ValueError(f'{where}: no {key!r}')
      _check_like(value, found[key], f'{where}.{key}')
  elif isinstance(expected, (list, tuple)):
    if not isinstance(found, (list, tuple)) or len(found) != len(expected):
      raise ValueError(f'{where}: expected a list of {len(expected)}')
    for i, (a, b) in enumerate(zip(expected, found)):
      _check_like(a, b, f'{where}[{i}]')
  elif isinstance(expected, (np.ndarray, np.generic, int, float)):
    if not isinstance(found, (np.ndarray, np.generic, int, float)):
      raise ValueError(f'{where}: expected a number or an array, found {type(found).__name__}')
    want, got = np.shape(expected), np.shape(found)
    name = where.rsplit('.', 1)[-1]
    axes = name.rsplit('_', 1)[-1].split('x') if '_' in name else []
    free = [axis == 'H' for axis in axes] if len(axes) == len(want) else [False] * len(want)
    if len(got) != len(want) or any(a != b and not f for a, b, f in zip(want, got, free)):
      raise ValueError(f'{where}: shape {got}, expected {want}')


class Loop:
  """The loop's state and schedule; subclasses build the state, the step and the members' samplers.

  Subclasses set: config, workdir, names, samplers (one per member), state, train_fn(state, batch)
  -> (state, metrics), members (K) and stacked (True: metrics carry a leading member axis), and
  may override next_batch, evaluate, mixer hooks and extra checkpoint meta.
  """
  check_finite = True
  opaque_meta = ()  # meta keys whose form check_meta leaves to their owner (a Mixer's state)
  record_history = False  # keep every step's metrics in self.history (Population.train_steps)
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

  def check_meta(self, meta) -> None:
    """ValueError if a checkpoint's meta does not fit this loop (see _check_like; the last evaluation
    is any mapping of names to numbers). Changes nothing: a rejected checkpoint leaves the loop as
    it was, and the checkpointer falls back to the one before."""
    meta = _upgraded_meta(meta, self.members, len(self.names))
    expected = {**self.meta(), 'last_eval': {}}
    for key in self.opaque_meta:  # present, but its form is its owner's to check when it is used
      if key not in meta:
        raise ValueError(f'meta: no {key!r}')
      expected.pop(key)
    _check_like(expected, meta)
    _check_like({key: 0.0 for key in meta['last_eval']}, meta['last_eval'], 'meta.last_eval')

  def restore_meta(self, meta) -> None:
    """Applies a checkpoint's meta that check_meta accepted."""
    meta = _upgraded_meta(meta, self.members, len(self.names))
    for sampler, state in zip(self.samplers, meta['samplers']):
      sampler.restore(state)
    self.last_eval = {key: float(v) for key, v in meta['last_eval'].items()}
    self.tokens_seen = int(meta['tokens_seen'])
    self.since_update = Sums.from_tree(meta['since_update'])
    self.since_log = Sums.from_tree(meta['since_log'])

  def restore(self) -> bool:
    restored = self.checkpointer.restore_latest(checkpoint_lib.abstract_of(self.state),
                                                validate=self.check_meta)
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
    if self.record_history:
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
      if workdir_lib.has_replaced(self.workdir):  # --overwrite's old run: once this
        self.checkpointer.wait()  # run's first checkpoint is committed, it is no longer needed
        workdir_lib.release_replaced(self.workdir)

  def _is_boundary(self, step: int, until: int) -> bool:
    c = self.config
    return (step >= until or self.is_eval_step(step) or self.is_mixer_step(step)
            or (self._checkpointing and step % c.checkpoint_every == 0))

  # --- the loop ---------------------------------------------------------------------------------------
  def open_writers(self, resumed: bool) -> None:
    """One MetricsWriter per member, keeping the rows up to this step; a resumed run expects its
    rows through the last train log at or before it (a warning names a file that lacks them)."""
    if self.log_dirs is not None and self.writers is None:
      first = jax.process_index() == 0
      c = self.config
      expected = (self.step if self.step >= c.steps else self.step - self.step % c.log_every
                  ) if resumed else None
      self.writers = [metrics_lib.MetricsWriter(d, self.step, first, expected_through=expected)
                      for d in self.log_dirs]

  def close(self) -> None:
    """Closes the checkpointer and every writer, each even if another fails (a remote workdir's
    writers upload their files as they close)."""
    writers, self.writers = self.writers or (), None
    with contextlib.ExitStack() as stack:
      for writer in writers:
        stack.callback(writer.close)
      stack.callback(self.checkpointer.close)  # first: the stack unwinds last-in, first-out

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
