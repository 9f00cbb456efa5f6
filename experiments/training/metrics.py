"""Metrics: WORKDIR/metrics.jsonl (one object per logged step) and TensorBoard events in WORKDIR/tb.

Only process 0 writes. On resume from step k, lines after k are dropped (and TensorBoard purges events
after k), so a resumed run's metrics file equals an uninterrupted run's. Nothing is lost silently: a
last line cut short by a killed write is dropped with a warning (a bad line elsewhere is an error
naming the file and line), a resumed run warns if the file lacks rows it should have, and a file
deleted or truncated while the run writes it is warned about once, naming it.

A remote workdir (`gs://...`) is mirrored: the writer works on a local copy of its file (and of the
TensorBoard events it writes) and uploads them, each as one object, with the first row written
UPLOAD_SECONDS or more after the last upload, and on close. A run killed between uploads loses the
rows since the last one, which its resumption warns about as above.
"""

import json
import math
import os
import shutil
import tempfile
import time

from etils import epath
import numpy as np

from experiments.training import atomic

UPLOAD_SECONDS = 30.0  # a remote workdir's metrics are uploaded with a row at most this often


def _jsonable(value):
  value = float(value)
  return value if math.isfinite(value) else str(value)  # 'nan' / 'inf' stay readable


def warn(message: str) -> None:
  print(f'warning: {message}', flush=True)


def read_jsonl(path: str, name: str = '') -> list[dict]:
  """The objects of a JSON-lines file (local or remote; [] if there is none). A last line that is not
  JSON (a write cut short) is dropped with a warning; any other bad line is a ValueError naming the
  file (as `name`, if given) and line."""
  if not epath.Path(path).exists():
    return []
  with epath.Path(path).open() as f:
    lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
  path = name or path
  rows = []
  for i, line in lines:
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if i == lines[-1][0]:
        warn(f'{path}: line {i}, the last, is cut short (an interrupted write); dropping it')
        break
      raise ValueError(f'{path}: line {i} is not JSON ({e})') from None
    if not isinstance(row, dict):
      raise ValueError(f'{path}: line {i} is not a JSON object')
    rows.append(row)
  return rows


class MetricsWriter:
  """Appends a line per `write` to WORKDIR/filename, keeping the lines up to `resume_step`.

  expected_through: the step of the last line a resumed run's file should hold (None: no check); a
  file that ends before it (or is missing) gets a warning naming it.
  """

  def __init__(self, workdir: str, resume_step: int = 0, enabled: bool = True,
               filename: str = 'metrics.jsonl', tensorboard: bool = True,
               expected_through: int | None = None):
    self.enabled = enabled
    self._remote = workdir if enabled and atomic.is_remote(workdir) else ''
    if self._remote:  # the local mirror (see the module docstring)
      workdir = tempfile.mkdtemp(prefix='mixlab-metrics-')
      if (epath.Path(self._remote) / filename).exists():
        (epath.Path(self._remote) / filename).copy(epath.Path(workdir) / filename)
      self._uploaded = time.monotonic()
    self.path = os.path.join(workdir, filename)
    self.name = atomic.join(self._remote, filename) if self._remote else self.path  # in messages
    self._tb = None
    self._size = 0  # the file's size after our last write; a smaller file lost lines
    self._warned = False
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    existed = os.path.exists(self.path)
    kept = read_jsonl(self.path, self.name)
    for i, row in enumerate(kept):
      if not isinstance(row.get('step'), int):
        raise ValueError(f'{self.name}: row {i + 1} has no integer "step"')
    kept = [r for r in kept if r['step'] <= resume_step]
    last = max((r['step'] for r in kept), default=0)
    if expected_through is not None and last < expected_through:
      found = f'ends at step {last}' if kept else 'has no rows' if existed else 'is missing'
      warn(f'{self.name} {found}, but the run resumes from step {resume_step}: its rows of steps '
           f'{last + 1}..{expected_through} are lost')
    tmp = self.path + '.tmp'
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    os.replace(tmp, self.path)
    self._size = os.path.getsize(self.path)
    if not tensorboard:
      return
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(os.path.join(workdir, 'tb'), purge_step=resume_step + 1,
                             flush_secs=10)

  def write(self, step: int, scalars: dict):
    if not self.enabled:
      return
    record = {'step': int(step), **{k: _jsonable(v) for k, v in sorted(scalars.items())}}
    size = os.path.getsize(self.path) if os.path.exists(self.path) else -1
    if size < self._size and not self._warned:
      self._warned = True
      lost = 'deleted' if size < 0 else 'truncated'
      warn(f'{self.name} was {lost} while the run was writing it: its rows before step {step} '
           'are lost; writing on')
    line = json.dumps(record) + '\n'
    with open(self.path, 'a') as f:
      f.write(line)
    self._size = max(size, 0) + len(line)
    for key, value in scalars.items() if self._tb else ():
      if math.isfinite(float(value)):
        self._tb.add_scalar(key, float(value), step)
    if self._remote and time.monotonic() - self._uploaded >= UPLOAD_SECONDS:
      self._upload()

  def _upload(self) -> None:
    """The mirror's files, each replacing its remote object whole."""
    if self._tb is not None:
      self._tb.flush()
    local = os.path.dirname(self.path)
    atomic.upload(local, self._remote, atomic.files_under(local))
    self._uploaded = time.monotonic()

  def close(self):
    if self._tb is not None:
      self._tb.close()
    if self._remote:
      self._upload()
      shutil.rmtree(os.path.dirname(self.path), ignore_errors=True)
      self._remote = ''


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
