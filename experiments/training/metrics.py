"""Metrics: WORKDIR/metrics.jsonl (one object per logged step) and TensorBoard events in WORKDIR/tb.

Only process 0 writes. On resume from step k, lines after k are dropped (and TensorBoard purges events
after k), so a resumed run's metrics file equals an uninterrupted run's.
"""

import json
import math
import os
import time

import numpy as np


def _jsonable(value):
  value = float(value)
  return value if math.isfinite(value) else str(value)  # 'nan' / 'inf' stay readable


def read_jsonl(path: str) -> list[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


class MetricsWriter:

  def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True,
               filename: str = 'metrics.jsonl', tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, filename)
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    kept = [r for r in read_jsonl(self.path) if r['step'] <= resume_step]
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    os.replace(tmp, self.path)
    if not tensorboard:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(os.path.join(workdir, 'tb'), purge_step=resume_step + 1,
                             flush_secs=10)

  def write(self, step: int, scalars: dict):
    if not self.enabled:
      return
    record = {'step': int(step), **{k: _jsonable(v) for k, v in sorted(scalars.items())}}
    with open(self.path, 'a') as f:
      f.write(json.dumps(record) + '\n')
    for key, value in scalars.items() if self._tb else ():
      if math.isfinite(float(value)):
        self._tb.add_scalar(key, float(value), step)

  def close(self):
    if self._tb is not None:
      self._tb.close()


class Progress:
  """A progress line every `seconds`: step, loss, tokens/s and ETA."""

  def __init__(self, total_steps: int, seconds: float, enabled: bool = True, prefix: str = ''):
    self.total_steps = total_steps
    self.seconds = seconds
    self.enabled = enabled
    self.prefix = prefix
    self._last = self._start = time.time()
    self._start_step = None

  def update(self, step: int, loss: float, tokens_per_sec: float, force: bool = False):
    now = time.time()
    if self._start_step is None:
      self._start_step, self._start = step - 1, now
    if not self.enabled or (now - self._last < self.seconds and not force):
      return
    self._last = now
    done = max(step - self._start_step, 1)
    eta = (now - self._start) / done * (self.total_steps - step)
    shown = [f'step {step}/{self.total_steps}']
    if math.isfinite(loss):
      shown.append(f'loss {loss:.4f}')
    if tokens_per_sec > 0:
      shown.append(f'{tokens_per_sec:,.0f} tokens/s')
    print(f'{self.prefix}{"  ".join(shown)}  ETA {eta:.0f}s', flush=True)


def domain_table(names, columns: dict[str, np.ndarray]) -> str:
  """A markdown table: a row per domain, a column per metric."""
  head = '| domain | ' + ' | '.join(columns) + ' |'
  rule = '|---|' + '---:|' * len(columns)
  rows = [f'| {name} | ' + ' | '.join(
      '' if not math.isfinite(float(col[i])) else f'{float(col[i]):.4f}'
      for col in columns.values()) + ' |' for i, name in enumerate(names)]
  return '\n'.join([head, rule] + rows)
