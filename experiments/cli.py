"""What every absl entry point shares: one-line errors with exit code 2 for user mistakes."""

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
    key = str(e).strip('"\'')
    culprit = [a for a in argv if a.startswith('--config.') and key in a.split('=')[0]]
    fail(f'config: no field {key!r} (in {culprit[0] if culprit else "an override"})')
  except (OSError, SyntaxError, ValueError, TypeError) as e:  # the config file itself
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    fail(f'config: {lines[-1] if lines else type(e).__name__}')


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


def run(main):
  """app.run(main), but a bad flag or config override is one line and exit 2, not a usage dump."""
  app.run(main, flags_parser=_parse_flags)
