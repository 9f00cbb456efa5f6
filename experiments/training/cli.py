"""What every absl entry point shares: one-line errors with exit code 2 for user mistakes."""

import difflib
import importlib.util
import sys

from absl import app
from absl import flags
from absl import logging


def _parse_flags(argv):
  try:
    rest = flags.FLAGS(argv)
    for name in flags.FLAGS:  # a config file that failed to load raises when first read: read it here
      getattr(flags.FLAGS[name].value, 'keys', None)
    if not flags.FLAGS['verbosity'].present:  # orbax and TFDS log every step at INFO
      logging.set_verbosity(logging.WARNING)
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


def fail(error) -> None:
  """Prints the first line of `error` and exits 2: a user mistake, not a crash."""
  text = str(error).strip().splitlines()
  print(f'error: {text[0] if text else type(error).__name__}', file=sys.stderr, flush=True)
  sys.exit(2)


def config_with(config, section: str, example: str):
  """The --config value, or exit 2 unless one was given with `section` (e.g. 'continual')."""
  if config is None or section not in config:
    article = 'an' if section[0] in 'aeiou' else 'a'
    fail(f'config: give --config=FILE with {article} `{section}` section ({example})')
  return config


def run(main, default_config: str | None = None):
  """app.run(main), but a bad flag or config override is one line and exit 2, not a usage dump.

  default_config: the --config file when none is given (set here, not as the flag's default, which
  ml_collections would parse with the overrides at import, before any error could be caught).
  """
  if default_config and not any(a == '--config' or a.startswith('--config=') for a in sys.argv):
    sys.argv.insert(1, f'--config={default_config}')
  app.run(main, flags_parser=_parse_flags)
