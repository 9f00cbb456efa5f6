r"""Reports from finished runs: plots and markdown tables (the logic lives in experiments/reporting/plots.py).

  python -m experiments.report --workdir=W [--out=DIR] [--source=D1,D2 --target=D3]
W may be one run, a directory of runs (a sweep, a comparison), a continual comparison (scores.json) or
a TaskPGM workdir (potentials.npz); what is there decides what is drawn. Writes into W (or --out):
weights.png|svg, eval_curves.png|svg, source_vs_target.png|svg (from scores.json, or from --source and
--target: score = minus the mean final eval loss of the group), potentials.png|svg and report.md.

  python -m experiments.report --root=/tmp/compare          # tables only: every run under ROOT
  python -m experiments.report --workdirs=/tmp/a,/tmp/b     # tables only: these runs
Writes ROOT/report.md (or the file --out) and prints it.
"""

import os
import tempfile

from absl import flags
from etils import epath

from experiments.training import atomic
from experiments.training import cli
from experiments.reporting.plots import comparison_table, load_summary, report, report_dir  # pylint: disable=unused-import

_WORKDIR = flags.DEFINE_string('workdir', None, 'A run, a directory of runs, a continual comparison '
                               'or a TaskPGM workdir: plots and report.md.')
_SOURCE = flags.DEFINE_string('source', None, 'With --workdir: source domains, e.g. code/python,'
                              'prose/plays (score = minus their mean final eval loss).')
_TARGET = flags.DEFINE_string('target', None, 'With --workdir: target domains, e.g. math/easy.')
_ROOT = flags.DEFINE_string('root', None, 'Tables only: a directory whose subdirectories are runs.')
_WORKDIRS = flags.DEFINE_list('workdirs', [], 'Tables only: run directories.')
_OUT = flags.DEFINE_string('out', None, 'With --workdir: the output directory (default the '
                           'workdir); with --root/--workdirs: the markdown file (default '
                           'ROOT/report.md).')


def find_runs(root: str | None, workdirs) -> list[str]:
  """The runs of --root (its subdirectories with summary.json) and --workdirs, all finished."""
  runs = list(workdirs)
  if root:
    if not os.path.isdir(root):
      raise ValueError(f'root: not a directory: {root!r}')
    runs += sorted(os.path.join(root, d) for d in os.listdir(root)
                   if os.path.exists(os.path.join(root, d, 'summary.json')))
  for run in runs:
    if not os.path.exists(os.path.join(run, 'summary.json')):
      raise ValueError(f'workdirs: {run!r} has no summary.json (not a finished run)')
  if not runs:
    raise ValueError('root: no finished runs found (give --root or --workdirs)')
  return runs


def report_workdir(workdir: str, out: str | None, source: str | None, target: str | None) -> None:
  """`--workdir`'s report (plots.report_dir), printing the files written."""
  cli.check_writable('out' if out else 'workdir', out or workdir)
  if not atomic.is_remote(workdir) and not atomic.is_remote(out):
    for path in report_dir(workdir, out, source, target):
      print(path)
    return
  # A remote workdir is read from a local copy of its files (checkpoints and TensorBoard events
  # left out); a remote --out (or the remote workdir itself) gets the report's files uploaded.
  with tempfile.TemporaryDirectory(prefix='mixlab-report-') as local:
    if not epath.Path(workdir).is_dir():
      raise ValueError(f'workdir: not a directory: {workdir!r}')
    here = atomic.download(workdir, os.path.join(local, 'run')) if atomic.is_remote(workdir) \
        else workdir
    there = out or workdir
    written = report_dir(here, os.path.join(local, 'out') if atomic.is_remote(there) else there,
                         source, target, shown=workdir)
    if atomic.is_remote(there):
      written = atomic.upload(os.path.join(local, 'out'), there,
                              [os.path.relpath(p, os.path.join(local, 'out')) for p in written])
    for path in written:
      print(path)


def main(argv):
  del argv
  if _WORKDIR.value is not None:
    if _ROOT.value or _WORKDIRS.value:
      raise ValueError('workdir: give either --workdir or --root/--workdirs, not both')
    return report_workdir(_WORKDIR.value, _OUT.value, _SOURCE.value, _TARGET.value)
  if _SOURCE.value or _TARGET.value:
    raise ValueError('source: --source/--target need --workdir')
  runs = find_runs(_ROOT.value, _WORKDIRS.value)
  out = _OUT.value or os.path.join(_ROOT.value or os.path.dirname(runs[0]), 'report.md')
  cli.check_writable('out', out, directory=False)
  text = report(runs)
  atomic.write_text(out, text)
  print(text)
  print(f'(written to {out})')


def console():
  """The `mixlab-report` command."""
  cli.run(main)


if __name__ == '__main__':
  console()
