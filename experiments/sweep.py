r"""Runs a sweep: one `experiments.train` run per point of a sweep file, N at a time, then a table.

  python -m experiments.sweep --sweep=configs/sweeps/quickstart_mixers.py --workers=2
  python -m experiments.sweep --sweep=configs/sweeps/quickstart_mixers.py --print_commands

Runs go to --workdir/<run name> (default /tmp/mixlab_sweeps/<sweep file's stem>); re-running skips
finished runs and resumes interrupted ones. At the end: <dir>/results.csv and <dir>/results.md (every
run's final eval metrics; the best run per metric), and the plots of experiments.reporting.plots
(--noplots: none). Exit code 1 if a run failed, 2 for a bad sweep or a sweep directory another
sweep is using (the sweep holds its directory's lock, experiments.training.workdir.lock; each run
holds its own). Ctrl-C, SIGTERM or a kill of the sweep stops its runs (see sweep_runner).
The sweep-file format is in experiments/recipes/sweep_spec.py.
"""

import dataclasses
import importlib
import os
import sys
import time
from typing import Callable

from absl import flags

from experiments.recipes import sweep_results
from experiments.recipes import sweep_runner
from experiments.recipes import sweep_spec
from experiments.training import cli
from experiments.training import mirror
from experiments.training import workdir as workdir_lib
from mixing.data import load as load_lib

_SWEEP = flags.DEFINE_string('sweep', None, 'Sweep file, e.g. configs/sweeps/quickstart_mixers.py.')
_WORKERS = flags.DEFINE_integer('workers', 1, 'Runs trained at the same time (local subprocesses).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep directory; each run is a subdirectory '
                               '(default: /tmp/mixlab_sweeps/<sweep file stem>).')
_PRINT = flags.DEFINE_bool('print_commands', False,
                           'Print one shell command per run (e.g. for a cluster) and run nothing.')
_OVERWRITE = flags.DEFINE_bool('overwrite', False, 'Replace runs whose workdir holds another config '
                               '(otherwise they fail, and the others go on).')
_PROGRESS = flags.DEFINE_float('progress_seconds', 30.0,
                               'Seconds between lines showing the running runs\' steps (0: never).')
_PLOTS = flags.DEFINE_bool('plots', True, 'Call experiments.reporting.plots.report_dir on the '
                           'sweep directory at the end, if that module exists.')


def _print(text: str):
  """print, but a reader that went away (`| head`) silences the output, not the sweep."""
  try:
    print(text, flush=True)
  except BrokenPipeError:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def plots(sweep_dir: str, out: Callable[[str], None] = print,
          plots_module: str = 'experiments.reporting.plots') -> list[str]:
  """plots_module.report_dir(sweep_dir) if that module exists; a failure is only reported."""
  try:
    plots_lib = importlib.import_module(plots_module)
  except ModuleNotFoundError as e:
    if e.name == plots_module:  # not there (yet): the sweep works without plots
      return []
    out(f'plots: skipped ({plots_module} does not import: {e})')
    return []
  except Exception as e:  # pylint: disable=broad-except
    out(f'plots: skipped ({plots_module} does not import: {type(e).__name__}: {e})')
    return []
  report_dir = getattr(plots_lib, 'report_dir', None)
  if not callable(report_dir):
    return []
  try:
    paths = list(report_dir(sweep_dir) or [])
  except Exception as e:  # pylint: disable=broad-except
    text = str(e).strip().splitlines()
    out(f'plots: failed ({type(e).__name__}: {text[0] if text else ""})')
    return []
  for path in paths:
    out(f'plot: {path}')
  return paths


def main(argv):
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  if _WORKERS.value < 1:
    cli.fail(f'workers: must be >= 1, got {_WORKERS.value}')
  if _PROGRESS.value < 0:
    cli.fail(f'progress_seconds: must be >= 0, got {_PROGRESS.value}')
  sweep = dataclasses.replace(sweep_spec.load_sweep(_SWEEP.value), domains=tuple(cli.DOMAIN.value))
  load_lib.merge_domain_flags('', cli.DOMAIN.value)  # a malformed --domain fails before any run
  sweep_dir = _WORKDIR.value or sweep_spec.default_dir(sweep)
  if _PRINT.value:
    for run in sweep_spec.plan(sweep, sweep_dir, _OVERWRITE.value):
      _print(sweep_spec.shell_command(sweep, run))
    return
  with mirror.mirrored(sweep_dir, _OVERWRITE.value) as local:  # gs://: a local mirror
    _run(sweep, local)


def _run(sweep, sweep_dir):
  runs = sweep_spec.plan(sweep, sweep_dir, _OVERWRITE.value)
  workdir_lib.lock(sweep_dir)  # one sweep at a time in a directory
  start = time.time()
  try:
    outcomes = sweep_runner.launch(sweep, runs, sweep_dir, _WORKERS.value, _PROGRESS.value,
                                   out=_print)
    sweep_results.report(sweep, runs, outcomes, sweep_dir, out=_print)
    if _PLOTS.value:  # here, not in recipes: experiments.recipes does not import reporting
      plots(sweep_dir, _print)
    code = sweep_runner.summarize(runs, outcomes, time.time() - start, out=_print)
  except KeyboardInterrupt:
    sys.exit(130)
  sys.exit(code)


def console():
  """The `mixlab-sweep` command."""
  cli.run(main, reads_domains=True)


if __name__ == '__main__':
  console()
