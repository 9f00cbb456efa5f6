"""Every test process (each pytest-xdist worker, and the commands the tests start, which inherit the
environment) shares one fresh JAX compilation cache per worker, removed at the end: repeated programs
compile once, and nothing outlives the session or reads ~/.cache/mixlab."""

import os
import shutil
import tempfile

_CACHE = tempfile.mkdtemp(prefix='mixlab_test_jax_cache_')
os.environ['JAX_COMPILATION_CACHE_DIR'] = _CACHE  # read by JAX at import, and by cli.run
os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
  shutil.rmtree(_CACHE, ignore_errors=True)
