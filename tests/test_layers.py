"""Repo structure: the import-linter contracts in pyproject.toml hold, and no module grows too long."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ('configs', 'mixing', 'models', 'experiments')
MAX_LINES = 400


def _lint_imports_command() -> list[str]:
  """The `lint-imports` next to this interpreter, else import-linter's CLI through this interpreter.

  (`python -m importlinter` does not work: the package has no __main__.)
  """
  exe = os.path.join(os.path.dirname(sys.executable), 'lint-imports')
  if os.path.exists(exe):
    return [exe]
  return [sys.executable, '-c',
          'import sys; from importlinter.cli import lint_imports_command; '
          'sys.exit(lint_imports_command())']


def test_import_contracts_hold():
  try:
    import importlinter  # noqa: F401
  except ImportError:
    pytest.fail("import-linter is not installed: pip install -e '.[dev]' (or `make venv`)")
  # --no-cache: nothing written under the repo root.
  result = subprocess.run(_lint_imports_command() + ['--no-cache'], cwd=ROOT,
                          capture_output=True, text=True)
  output = result.stdout + result.stderr
  assert result.returncode == 0, f'lint-imports exited {result.returncode}:\n{output}'


def _python_files() -> list[str]:
  """Tracked and untracked (not ignored) .py files under the packages, relative to ROOT."""
  try:
    listed = subprocess.run(
        ['git', 'ls-files', '--cached', '--others', '--exclude-standard', '--', *PACKAGES],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
  except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an sdist): walk
    listed = []
    for package in PACKAGES:
      for dirpath, dirnames, filenames in os.walk(os.path.join(ROOT, package)):
        dirnames[:] = [d for d in dirnames if d != '__pycache__']
        listed += [os.path.relpath(os.path.join(dirpath, f), ROOT) for f in filenames]
  # A file deleted in the working tree but still in the index is skipped.
  return sorted(p for p in set(listed)
                if p.endswith('.py') and os.path.isfile(os.path.join(ROOT, p)))


def test_no_module_longer_than_limit():
  files = _python_files()
  assert files, f'no .py files found under {PACKAGES} in {ROOT}'
  too_long = []
  for path in files:
    with open(os.path.join(ROOT, path), encoding='utf-8') as f:
      n = sum(1 for _ in f)
    if n > MAX_LINES:
      too_long.append(f'{path}: {n} lines')
  assert not too_long, f'modules over {MAX_LINES} lines (split them):\n' + '\n'.join(too_long)
