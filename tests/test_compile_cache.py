"""cli.use_compilation_cache: JAX's persistent cache, on by default, JAX's variables winning."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROGRAM = ('from experiments.training import cli; print(cli.use_compilation_cache()); '
            'import jax; jax.jit(lambda x: x * 3 + 1)(2.0).block_until_ready()')


def _run(home, program=_PROGRAM, **env) -> list[str]:
  """Runs `program` with HOME=home and none of JAX's cache variables but `env`; its stdout words."""
  base = {k: v for k, v in os.environ.items() if not k.startswith('JAX_PERSISTENT_CACHE')
          and k != 'JAX_COMPILATION_CACHE_DIR'}
  out = subprocess.run([sys.executable, '-c', program], cwd=ROOT, capture_output=True, text=True,
                       env=dict(base, HOME=str(home), JAX_PLATFORMS='cpu', **env), timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.split()


def test_default_cache_under_home_holds_the_compiled_program(tmp_path):
  cache = tmp_path / '.cache' / 'mixlab' / 'jax'
  assert _run(tmp_path) == [str(cache)]
  assert os.listdir(cache)  # the jitted program was written (every program: no minimum time)


def test_jax_variable_wins_and_empty_turns_it_off(tmp_path):
  mine = tmp_path / 'mine'
  assert _run(tmp_path, JAX_COMPILATION_CACHE_DIR=str(mine)) == [str(mine)]
  assert os.listdir(mine) and not os.path.exists(tmp_path / '.cache')
  assert _run(tmp_path, JAX_COMPILATION_CACHE_DIR='') == ['None']
  assert not os.path.exists(tmp_path / '.cache')


def test_a_home_that_cannot_hold_it_leaves_it_off(tmp_path):
  home = tmp_path / 'home'
  home.write_text('a file, not a directory')
  assert _run(home) == ['None']


def test_before_jax_is_imported_it_reaches_jax_through_its_variables(tmp_path):
  program = ('import sys; from experiments.training import cli; path = cli.use_compilation_cache(); '
             'assert "jax" not in sys.modules; import jax; jax.jit(lambda x: x - 5)(2.0); '
             'print(jax.config.jax_compilation_cache_dir == path)')
  assert _run(tmp_path, program) == ['True']
  assert os.listdir(tmp_path / '.cache' / 'mixlab' / 'jax')


def test_after_jax_is_imported_it_updates_jax_config(tmp_path):
  program = ('import jax; from experiments.training import cli; path = cli.use_compilation_cache(); '
             'jax.jit(lambda x: x / 7)(2.0); print(jax.config.jax_compilation_cache_dir == path, '
             'jax.config.jax_persistent_cache_min_compile_time_secs)')
  assert _run(tmp_path, program) == ['True', '0.0']
  assert os.listdir(tmp_path / '.cache' / 'mixlab' / 'jax')
