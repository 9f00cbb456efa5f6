"""Multi-host runs: the flags of JAX's multi-controller runtime and `initialize()` for every CLI main.

Every process runs the same command; `initialize()` (first thing in each main) joins them through a
coordinator (process 0's HOST:PORT) before any JAX computation. When it is called:

  --coordinator_address, --num_processes, --process_id given (all three): with those values;
  --distributed=on without them: `jax.distributed.initialize()` with no arguments, which detects
      Cloud TPU VMs (worker list in the GCE metadata server), GKE TPU, Slurm and Open MPI;
  --distributed=auto (the default) without them: the same, but only when the environment names a
      multi-host TPU slice (TPU_WORKER_HOSTNAMES / TPU_PROCESS_ADDRESSES with several hosts, or a
      multislice MEGASCALE_COORDINATOR_ADDRESS). This is deliberately conservative: detecting a GCE
      TPU VM pod needs an HTTP query of the metadata server, which a laptop or a single host must not
      wait on, so on `gcloud compute tpus tpu-vm ssh --worker=all` pass --distributed=on;
  --distributed=off: never (single-process, whatever the environment says).

A coordinator that cannot be reached is a user mistake, so it must be one line and exit 2, but JAX's
C++ client aborts the process (LOG(FATAL), a core dump) when registration times out. Hence: processes
other than 0 first probe the coordinator's TCP port until --distributed_timeout; process 0 checks its
port is free; and a watchdog thread turns an initialize() that outlives the timeout (e.g. a process
that never started) into the same one-line error before the C++ deadline fires.
"""

import os
import socket
import sys
import threading
import time

from absl import flags
import jax

from experiments.training import cli

_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, "Multi-host: process 0's HOST:PORT, the same for every process.")
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Multi-host: how many processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'Multi-host: this process, 0..num_processes-1.')
_MODE = flags.DEFINE_enum(
    'distributed', 'auto', ['auto', 'on', 'off'],
    'auto: join when the three flags above are given or the environment is a multi-host TPU slice; '
    'on: always call jax.distributed.initialize (no flags: auto-detect the TPU pod / Slurm / MPI '
    'cluster); off: single process.')
_TIMEOUT = flags.DEFINE_integer('distributed_timeout', 60,
                                'Seconds to wait for the coordinator and every process to join.')

_PROBE_INTERVAL = 0.25  # seconds between connection attempts to a coordinator not up yet
# The C++ client's own deadline, past ours, so the watchdog (a clean exit 2) always fires first.
_JAX_TIMEOUT_MARGIN = 30


def tpu_pod_env() -> bool:
  """True when the environment itself says this is one host of several (GKE TPU, multislice)."""
  hosts = os.environ.get('TPU_PROCESS_ADDRESSES') or os.environ.get('TPU_WORKER_HOSTNAMES') or ''
  return (len([h for h in hosts.split(',') if h.strip()]) > 1
          or bool(os.environ.get('MEGASCALE_COORDINATOR_ADDRESS')))


def parse_address(address: str) -> tuple[str, int]:
  """'host:port' (or '[v6]:port') -> (host, port); ValueError naming the flag otherwise."""
  host, sep, port = address.strip().rpartition(':')
  host = host.strip('[]')
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f'coordinator_address: expected HOST:PORT (port 1-65535), got {address!r}')
  return host, int(port)


def check_flags(address, num_processes, process_id, mode: str, timeout: int) -> bool:
  """Validates the flags (ValueError naming one); returns whether they ask for explicit values."""
  if timeout is None or timeout <= 0:
    raise ValueError(f'distributed_timeout: must be a positive number of seconds, got {timeout!r}')
  given = {'coordinator_address': address, 'num_processes': num_processes,
           'process_id': process_id}
  present = {k: v for k, v in given.items() if v is not None}
  if not present:
    return False
  if mode == 'off':
    name, value = next(iter(present.items()))
    raise ValueError(f'distributed: off, but --{name}={value} asks for a multi-host run')
  if len(present) < 3:
    missing = [k for k in given if k not in present]
    name, value = next(iter(present.items()))
    raise ValueError(f'{missing[0]}: missing; --{name}={value} needs --coordinator_address, '
                     '--num_processes and --process_id together')
  if num_processes < 1:
    raise ValueError(f'num_processes: must be >= 1, got {num_processes}')
  if not 0 <= process_id < num_processes:
    raise ValueError(f'process_id: must be in 0..{num_processes - 1} (num_processes='
                     f'{num_processes}), got {process_id}')
  parse_address(address)
  return True


def _wait_for_port(host: str, port: int, deadline: float) -> bool:
  """Connect attempts to the coordinator until it accepts one (True) or the deadline passes."""
  while True:
    try:
      with socket.create_connection((host, port), timeout=max(min(2.0, deadline - time.time()),
                                                              0.1)):
        return True
    except OSError:  # refused, unreachable, or a name that does not resolve (yet)
      if time.time() + _PROBE_INTERVAL >= deadline:
        return False
      time.sleep(_PROBE_INTERVAL)


def _port_is_free(port: int) -> bool:
  # SO_REUSEADDR as gRPC's server uses it: a port in TIME_WAIT from a previous run is still free.
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
      s.bind(('', port))
      return True
    except OSError:
      return False


def _fail_now(message: str):
  """cli.fail from a thread other than main: sys.exit there would only end the thread."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  os._exit(2)  # pylint: disable=protected-access


def _initialize_with_watchdog(kwargs: dict, deadline: float, what: str):
  """jax.distributed.initialize(**kwargs), or one line and exit 2 if it is not done by `deadline`."""
  done = threading.Event()
  watchdog = threading.Thread(
      target=lambda: done.wait(max(deadline - time.time(), 0.0)) or _fail_now(what), daemon=True)
  watchdog.start()
  try:
    jax.distributed.initialize(
        **kwargs, initialization_timeout=int(deadline - time.time()) + _JAX_TIMEOUT_MARGIN)
  except (RuntimeError, ValueError) as e:  # e.g. auto-detection found no cluster
    done.set()
    cli.fail(f'distributed: jax.distributed.initialize failed: {e}')
  done.set()


def initialize() -> None:
  """Joins the multi-host run the flags or the environment describe; a no-op for one process."""
  address, n, pid = _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
  try:
    explicit = check_flags(address, n, pid, _MODE.value, _TIMEOUT.value)
  except ValueError as e:
    cli.fail(e)
  if not explicit and (_MODE.value == 'off' or (_MODE.value == 'auto' and not tpu_pod_env())):
    return
  if 'JAX_CPU_COLLECTIVES_IMPLEMENTATION' not in os.environ:
    # Cross-process collectives on CPU (tests, CPU clusters) go through gloo; TPUs ignore this.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  timeout = _TIMEOUT.value
  deadline = time.time() + timeout
  if not explicit:
    _initialize_with_watchdog({}, deadline, f'distributed: jax.distributed.initialize() '
                              f'(auto-detected cluster) did not finish within {timeout}s')
    return
  host, port = parse_address(address)
  if pid == 0 and not _port_is_free(port):
    cli.fail(f'coordinator_address: port {port} of {address} is already in use on this host '
             '(process 0 runs the coordinator there)')
  if pid != 0 and not _wait_for_port(host, port, deadline):
    cli.fail(f'coordinator_address: cannot connect to {address} within {timeout}s '
             '(is process 0 running there?)')
  _initialize_with_watchdog(
      {'coordinator_address': address, 'num_processes': n, 'process_id': pid}, deadline,
      f'coordinator_address: not all {n} processes joined {address} within {timeout}s '
      '(check --num_processes and that every process was started)')
