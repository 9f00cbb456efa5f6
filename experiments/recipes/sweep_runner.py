"""Runs a sweep's runs as `experiments.train` subprocesses, N at a time, skipping finished ones.

Each run trains in its own `<sweep dir>/<run name>` (experiments.recipes.sweep_spec), with its
stdout and stderr in `<sweep dir>/logs/<run name>.out|.err`. A progress line is printed as each run
starts, finishes or fails, and every `progress_seconds` with the running runs' steps. A re-run of
the same sweep skips every run whose summary.json is at the config's `steps` (and whose config.json
is this run's config); the others are (re)started, and `experiments.train` resumes them from their
last checkpoint. A failed run is reported (exit code, last line of its stderr) and the others go on.

No run outlives the sweep: each runs in its own process group, which Ctrl-C or SIGTERM of the
sweep terminates (and waits for); on Linux each also gets SIGTERM from the kernel when the sweep
dies otherwise, SIGKILL included (PR_SET_PDEATHSIG). A run's workdir lock dies with it, so a re-run
of the sweep resumes every interrupted run.
"""

import ctypes
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from experiments.recipes import sweep_spec
from experiments.training import atomic

_STEP = re.compile(r'step (\d+)/(\d+)')
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_STOP_SECONDS = 15  # how long stopped runs get to exit after SIGTERM, before SIGKILL


@dataclasses.dataclass
class Outcome:
  status: str  # 'done' | 'skipped' | 'failed' | 'interrupted'
  seconds: float = 0.0
  message: str = ''


# --- run state ------------------------------------------------------------------------------------
def finished(run: sweep_spec.Run) -> bool:
  """summary.json is at the config's steps, and the workdir holds this run's config."""
  summary = atomic.read_json(os.path.join(run.workdir, 'summary.json'))
  return (isinstance(summary, dict) and summary.get('step') == run.config.steps
          and not sweep_spec.config_differs(run))


def tail(path: str, size: int = 8192) -> list[str]:
  """The non-blank lines in the last `size` bytes of a file ([] if it cannot be read)."""
  try:
    with open(path, 'rb') as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - size))
      return [l for l in f.read().decode('utf-8', 'replace').splitlines() if l.strip()]
  except OSError:
    return []


def _current_step(log: str) -> str:
  for line in reversed(tail(log, 2048)):
    m = _STEP.search(line)
    if m:
      return f'step {m.group(1)}/{m.group(2)}'
  return 'starting'


def _clock(seconds: float) -> str:
  seconds = int(seconds)
  return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}' if seconds >= 3600 \
      else f'{seconds // 60}:{seconds % 60:02d}'


# --- child processes ------------------------------------------------------------------------------
def _libc():
  try:
    return ctypes.CDLL(None, use_errno=True) if sys.platform.startswith('linux') else None
  except OSError:
    return None


_LIBC = _libc()  # loaded here: the child, between fork and exec, only calls into it


def _dies_with_this_process() -> Callable[[], None] | None:
  """A preexec_fn (Linux only; None elsewhere): the child gets SIGTERM when this process dies."""
  if _LIBC is None:
    return None
  parent = os.getpid()

  def set_death_signal():
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the sweep died before prctl: nobody would send the signal
      os.kill(os.getpid(), signal.SIGTERM)
  return set_death_signal


def spawn(command: list[str], stdout, stderr, env: dict[str, str]) -> subprocess.Popen:
  """A child in its own process group that dies with this process (see `stop`)."""
  return subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, stdin=subprocess.DEVNULL,
                          process_group=0, preexec_fn=_dies_with_this_process())


def stop(procs: list[subprocess.Popen], seconds: float = _STOP_SECONDS) -> None:
  """SIGTERM to each child's process group, then waits; SIGKILL for those left after `seconds`."""
  def signal_group(proc, signum):
    try:
      os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):  # already gone
      pass
  for proc in procs:
    signal_group(proc, signal.SIGTERM)
  deadline = time.time() + seconds
  for proc in procs:
    try:
      proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      signal_group(proc, signal.SIGKILL)
      proc.wait()


# --- execution ------------------------------------------------------------------------------------
def execute(sweep: sweep_spec.Sweep, runs: list[sweep_spec.Run], sweep_dir: str, workers: int,
            progress_seconds: float = 30.0, out: Callable[[str], None] = print
            ) -> dict[str, Outcome]:
  """Runs every unfinished run, `workers` at a time; prints each start/finish/failure as it happens.

  Ctrl-C or SIGTERM stops the running subprocesses (`stop`; they resume from their checkpoints on
  a re-run) and raises KeyboardInterrupt.
  """
  start, total = time.time(), len(runs)
  outcomes: dict[str, Outcome] = {}

  def say(text):
    out(f'[{_clock(time.time() - start)}] {text}')

  queue = []
  for run in runs:
    if finished(run):
      outcomes[run.name] = Outcome('skipped', message=f'finished at step {run.config.steps}')
      say(f'{len(outcomes)}/{total} skip    {run.name} (already finished: step '
          f'{run.config.steps})')
    else:
      queue.append(run)
  if not queue:
    return outcomes
  logs = os.path.join(sweep_dir, 'logs')
  os.makedirs(logs, exist_ok=True)
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([sweep_spec.ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
  running: dict[str, tuple[sweep_spec.Run, subprocess.Popen, float, list]] = {}
  last_heartbeat = time.time()
  old_term = signal.getsignal(signal.SIGTERM)

  def on_term(signum, frame):
    del signum, frame
    raise KeyboardInterrupt

  if threading_main():
    signal.signal(signal.SIGTERM, on_term)
  launched = len(outcomes)
  try:
    while queue or running:
      while queue and len(running) < workers:
        run = queue.pop(0)
        launched += 1
        files = [open(os.path.join(logs, f'{run.name}.{s}'), 'w') for s in ('out', 'err')]
        proc = spawn(sweep_spec.train_command(sweep, run), files[0], files[1], env)
        running[run.name] = (run, proc, time.time(), files)
        resumed = (' (replacing another config)' if run.overwrite else ' (resuming)'
                   if os.path.isdir(os.path.join(run.workdir, 'checkpoints')) else '')
        say(f'start   {run.name}{resumed} (run {launched}/{total}, {len(running)} running)')
      time.sleep(0.2)
      for name in list(running):
        run, proc, t0, files = running[name]
        code = proc.poll()
        if code is None:
          continue
        for f in files:
          f.close()
        del running[name]
        seconds = time.time() - t0
        summary = atomic.read_json(os.path.join(run.workdir, 'summary.json'))
        if code == 0 and isinstance(summary, dict) and summary.get('step') == run.config.steps:
          outcomes[name] = Outcome('done', seconds)
          losses = [v for k, v in (summary.get('eval') or {}).items() if k.endswith('/loss')]
          shown = f', mean eval loss {sum(losses) / len(losses):.4f}' if losses else ''
          say(f'{len(outcomes)}/{total} done    {name} ({seconds:.0f}s{shown})')
        else:
          err = tail(os.path.join(logs, f'{name}.err'))
          last = err[-1].strip() if err else (f'exit code {code}' if code else
                                               'no summary.json at the end')
          outcomes[name] = Outcome('failed', seconds, f'exit code {code}: {last}')
          say(f'{len(outcomes)}/{total} FAILED  {name} (exit code {code}, {seconds:.0f}s): {last}'
              f'  [log: {os.path.join(logs, name + ".err")}]')
      if progress_seconds > 0 and running and time.time() - last_heartbeat >= progress_seconds:
        last_heartbeat = time.time()
        shown = '; '.join(f'{n} {_current_step(os.path.join(logs, n + ".out"))}'
                          for n in running)
        say(f'running {shown} ({len(outcomes)}/{total} finished, {len(queue)} queued)')
  except BaseException as e:  # Ctrl-C, SIGTERM, or a bug: no run is left behind
    stop([proc for _, proc, _, _ in running.values()])
    for run, _, _, files in running.values():
      for f in files:
        f.close()
      outcomes[run.name] = Outcome('interrupted')
    if isinstance(e, KeyboardInterrupt):
      say(f'interrupted; stopped {len(running)} running run(s); re-run the same command to '
          'resume')
    raise
  finally:
    if threading_main():
      signal.signal(signal.SIGTERM, old_term)
  return outcomes


def threading_main() -> bool:
  return threading.current_thread() is threading.main_thread()


def launch(sweep: sweep_spec.Sweep, runs: list[sweep_spec.Run], sweep_dir: str, workers: int,
           progress_seconds: float = 30.0, out: Callable[[str], None] = print
           ) -> dict[str, Outcome]:
  """Writes sweep_dir/sweep.json, says what will run, then execute()s the runs."""
  sweep_spec.write_plan(sweep, runs, sweep_dir)
  out(f'sweep {sweep.name}: {len(runs)} runs of {sweep.config} in {sweep_dir}, '
      f'{workers} at a time')
  return execute(sweep, runs, sweep_dir, workers, progress_seconds, out)


def summarize(runs: list[sweep_spec.Run], outcomes: dict[str, Outcome], seconds: float,
              out: Callable[[str], None] = print) -> int:
  """Prints the counts and each failure; returns the exit code (0: no run failed, 1: some did)."""
  counts = {s: sum(o.status == s for o in outcomes.values()) for s in ('done', 'skipped', 'failed')}
  out(f'{len(runs)} runs: {counts["done"]} done, {counts["skipped"]} skipped (already finished), '
      f'{counts["failed"]} failed, in {_clock(seconds)}')
  failed = [n for n, o in outcomes.items() if o.status == 'failed']
  for name in failed:
    out(f'failed: {name}: {outcomes[name].message}')
  return 1 if failed else 0
