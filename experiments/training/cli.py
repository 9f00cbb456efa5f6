"""What every absl entry point shares: one-line errors with exit code 2 for user mistakes.

`run(main)` is the one error path of every CLI. An exception that the user's input or environment
caused is printed as ONE line, `error: <what>`, naming the field, path or value, and the command exits
with code 2: a ValueError (mixlab's convention: the message starts with the field, `batch_size: must
be positive, got 0`), an OSError (a path that is a file, not permitted, read-only, a full disk: its
path and strerror), or a user file that does not parse (JSON, UTF-8, zip/npz: the file, when it can be
found). Any other exception is a bug in mixlab and keeps its traceback.
"""

import difflib
import errno
import importlib.util
import io
import json
import logging as std_logging
import os
import sys
import threading
import zipfile

from absl import app
from absl import flags
from absl import logging

from experiments.training import atomic
from mixing.data import load as load_lib


DOMAIN = flags.DEFINE_multi_string(
    'domain', [], 'A file domain, NAME=GLOB[,GLOB][@field|@input,target][:weight] (repeatable): '
    'declared in config.domain_files and added to config.domains.')


def _parse_flags(argv):
  try:
    rest = flags.FLAGS(argv)
    for name in flags.FLAGS:  # a config file that failed to load raises when first read: read it here
      getattr(flags.FLAGS[name].value, 'keys', None)
    config = _flag_value('config')
    if DOMAIN.value and config is not None and 'domain_files' in config:
      try:
        load_lib.add_domain_flags(config, DOMAIN.value)
      except ValueError as e:
        fail(one_line(e))
    if not flags.FLAGS['verbosity'].present:  # orbax and TFDS log every step at INFO
      logging.set_verbosity(logging.WARNING)
      _quiet_failure_echoes()
    return rest
  except flags.Error as e:
    fail(e)
  except (AttributeError, KeyError) as e:  # ml_collections: an override of a field that is not there
    fail(f'config: {_unknown_field(argv) or str(e).splitlines()[0]}')
  except (OSError, SyntaxError, ValueError, TypeError) as e:  # the config file itself
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    fail(f'config: {lines[-1] if lines else type(e).__name__}')


def _config_file(argv) -> str | None:
  for arg in argv:
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
  return None


def _unknown_field(argv) -> str | None:
  """"no field 'a.b' (did you mean 'a.c'?)" for the first --config.a.b=... the config lacks."""
  path = _config_file(argv)
  if not path:
    return None
  try:
    spec = importlib.util.spec_from_file_location('_mixlab_config', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception:  # pylint: disable=broad-except  # the original error is reported instead
    return None
  for arg in argv:
    if not arg.startswith('--config.'):
      continue
    dotted = arg[len('--config.'):].split('=', 1)[0]
    node, parts = config, dotted.split('.')
    for i, part in enumerate(parts):
      keys = list(node.keys()) if hasattr(node, 'keys') else []
      if part not in keys:
        where = '.'.join(parts[:i])
        close = difflib.get_close_matches(part, keys, n=1)
        hint = f" (did you mean '{'.'.join(parts[:i] + close)}'?)" if close else ''
        return f"no field '{dotted}'{hint}" if not where or keys else (
            f"no field '{dotted}' ('{where}' has no fields)")
      node = node[part]
  return None


class RunFailed(RuntimeError):
  """A run that failed by itself (e.g. a non-finite loss): one line on stderr and exit code 1."""


USER_ERRORS = (ValueError, OSError, zipfile.BadZipFile)  # JSON and UTF-8 errors are ValueErrors
_UNREADABLE = ((json.JSONDecodeError, 'not valid JSON'), (UnicodeDecodeError, 'not UTF-8 text'),
               (zipfile.BadZipFile, 'not a valid zip/npz file'))


class _ReportedByRun(std_logging.Filter):
  """Drops a library's log of a user error with its traceback (orbax logs a full disk from each
  of its writer threads): the error reaches `run`, which reports it in one line."""

  def filter(self, record):
    return not (record.exc_info and isinstance(record.exc_info[1], USER_ERRORS))


def _quiet_failure_echoes():
  """What a failed checkpoint write echoes besides the error `run` reports (--verbosity: all shown):
  orbax's logged tracebacks, and tensorstore's callbacks onto orbax's closed event loop, which
  Python reports as unraisable exceptions."""
  logging.get_absl_handler().addFilter(_ReportedByRun())
  default = sys.unraisablehook

  def unraisable(u):
    if not (isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == 'Event loop is closed'):
      default(u)
  sys.unraisablehook = unraisable


def one_line(e: BaseException) -> str:
  """What went wrong, for one of USER_ERRORS: the field, path or value, and why."""
  if isinstance(e, OSError):
    paths = ' -> '.join(str(p) for p in (e.filename, e.filename2) if p is not None)
    path = paths or _file_in(e.__traceback__)
    what = e.strerror or str(e) or type(e).__name__
    if path:
      return f'{path}: {what}'
    workdir = _flag_value('workdir')  # a write in a library's thread names no file: say whose run
    return f'{what} (the run in {workdir})' if workdir else what
  for kind, what in _UNREADABLE:
    if isinstance(e, kind):
      path = _file_in(e.__traceback__)
      return f'{path}: {what} ({e})' if path else f'{what}: {e}'
  return str(e).strip() or type(e).__name__


def _flag_value(name: str):
  """The value of the command's flag `name` (None: no such flag, or flags not parsed yet)."""
  try:
    return flags.FLAGS[name].value if name in flags.FLAGS else None
  except flags.Error:
    return None


def _silence_background():
  """Once the error is reported: what a library's background writers print about it while the
  interpreter shuts down (orbax's async checkpoint writes on a full disk) is not shown again."""
  sys.unraisablehook = lambda unraisable: None
  threading.excepthook = lambda args: None


def _flush():
  try:
    sys.stdout.flush()  # what the command printed comes before the error
  except OSError:
    pass


_OURS = tuple(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) +
              os.sep + package + os.sep for package in ('configs', 'mixing', 'models', 'experiments'))


# OS errors that libraries (tensorstore under orbax) report inside a ValueError: the machine's state.
_ENVIRONMENT = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _from_user_input(e: BaseException) -> bool:
  """An OSError (the environment), a user file that does not parse, or a ValueError that mixlab
  raised (its convention for a bad field or value). A ValueError raised inside a library, that no
  code of ours turned into a message, is a bug of ours: its traceback shows."""
  if isinstance(e, OSError) or any(isinstance(e, kind) for kind, _ in _UNREADABLE):
    return True
  if any(os.strerror(code) in str(e) for code in _ENVIRONMENT):  # e.g. tensorstore's full disk
    return True
  tb, innermost = e.__traceback__, None
  while tb is not None:
    innermost, tb = tb.tb_frame, tb.tb_next
  return innermost is None or innermost.f_code.co_filename.startswith(_OURS)


def _file_in(tb) -> str | None:
  """The name of the innermost open file (or `path` argument) in a traceback: the file being read or
  written when a parse or a write failed, for errors that do not carry it."""
  frames = []
  while tb is not None:
    frames.append(tb.tb_frame)
    tb = tb.tb_next
  for frame in reversed(frames):
    for value in frame.f_locals.values():
      if isinstance(value, io.IOBase) and isinstance(getattr(value, 'name', None), str):
        return value.name
    if isinstance(frame.f_locals.get('path'), str):
      return frame.f_locals['path']
  return None


def fail(error) -> None:
  """Prints the first line of `error` and exits 2: a user mistake, not a crash."""
  text = str(error).strip().splitlines()
  print(f'error: {text[0] if text else type(error).__name__}', file=sys.stderr, flush=True)
  sys.exit(2)


def check_writable(field: str, path: str, directory: bool = True) -> None:
  """ValueError naming `field` unless `path` is, or can be created as, a directory (directory=False:
  a file, written by replacing it) that this process may write: not a file where a directory goes
  (or the reverse), not below a file, not read-only, not without permission. A remote path
  (`gs://...`) is left to its first write."""
  if atomic.is_remote(path):
    return
  path = os.path.abspath(path)
  if os.path.exists(path) and os.path.isdir(path) != directory:
    raise ValueError(f'{field}: {path} is ' + ('a file, not a directory' if directory else
                                               'a directory, not a file'))
  target = path if directory else os.path.dirname(path)
  while not os.path.exists(target):
    target = os.path.dirname(target)
  if not os.path.isdir(target):
    raise ValueError(f'{field}: {path} cannot be created: {target} is a file')
  if not os.access(target, os.W_OK | os.X_OK):
    why = ('is on a read-only file system' if os.statvfs(target).f_flag & os.ST_RDONLY else
           'may not be written by this user')
    raise ValueError(f'{field}: {path} cannot be written: {target} {why}')


def config_with(config, section: str, example: str):
  """The --config value, or exit 2 unless one was given with `section` (e.g. 'continual')."""
  if config is None or section not in config:
    article = 'an' if section[0] in 'aeiou' else 'a'
    fail(f'config: give --config=FILE with {article} `{section}` section ({example})')
  return config


def _raised_in(error: BaseException, packages) -> bool:
  """Whether `error` was raised inside one of the site packages `packages`."""
  tb = error.__traceback__
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  where = tb.tb_frame.f_code.co_filename if tb is not None else ''
  return any(f'{os.sep}{package}{os.sep}' in where for package in packages)


CACHE_DIR = os.path.join('~', '.cache', 'mixlab', 'jax')  # JAX's compilation cache, by default


def use_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache; returns its directory (None: off).

  Every chunk of a population stage, every proxy and every evaluation builds its own jit of the same
  programs, so most of a small run's time is compiling them again: cached, a repeat loads from disk
  (mixbench's smoke run: 400 s -> 200 s from an empty cache). The directory is
  $JAX_COMPILATION_CACHE_DIR when set (empty: off), else ~/.cache/mixlab/jax (none if it cannot be
  made); every program is cached unless $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says otherwise."""
  path = os.environ.get('JAX_COMPILATION_CACHE_DIR', os.path.expanduser(CACHE_DIR))
  if not path:
    return None
  try:
    if not atomic.is_remote(path):  # gs://: JAX writes it through its own file system
      os.makedirs(path, exist_ok=True)
  except OSError:
    return None
  settings = {'jax_compilation_cache_dir': path}
  if 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS' not in os.environ:
    settings['jax_persistent_cache_min_compile_time_secs'] = 0.0  # small programs add up
  if 'jax' in sys.modules:  # JAX read its variables when imported: set them in its config
    for name, value in settings.items():
      sys.modules['jax'].config.update(name, value)
  else:  # a command that has not imported JAX (it may never need it) leaves it unimported
    os.environ.update({name.upper(): str(value) for name, value in settings.items()})
  return path


def run(main, default_config: str | None = None, reads_domains: bool = False):
  """app.run(main), but a user mistake is one line and exit 2 (module docstring), not a traceback.

  default_config: the --config file when none is given (set here, not as the flag's default, which
  ml_collections would parse with the overrides at import, before any error could be caught).
  reads_domains: main reads --domain itself (else it goes into the config, or is refused).
  """
  if default_config and not any(a == '--config' or a.startswith('--config=') for a in sys.argv):
    sys.argv.insert(1, f'--config={default_config}')
  use_compilation_cache()

  def guarded(argv):
    config = _flag_value('config')
    if DOMAIN.value and not reads_domains and (config is None or 'domain_files' not in config):
      fail(f'domain: {DOMAIN.value[0]!r}: this command takes no domains')
    try:
      return main(argv)
    except RunFailed as e:  # e.g. a run that diverged: not a user mistake, and not a bug
      _flush()
      print(f'error: {e}', file=sys.stderr, flush=True)
      sys.exit(1)
    except ImportError as e:  # a gs:// path without fsspec's GCS backend (gcsfs): the setup's
      if not _raised_in(e, ('fsspec', 'epath')):
        raise
      _flush()
      fail(f'{one_line(e)} (gs:// paths need the gcs extra: pip install -e \'.[gcs]\')')
    except USER_ERRORS as e:
      if not _from_user_input(e):
        raise  # a bug: its traceback shows
      _flush()
      _silence_background()
      fail(one_line(e))
  app.run(guarded, flags_parser=_parse_flags)
