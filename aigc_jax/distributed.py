"""Multi-process start-up: `jax.distributed.initialize` from flags or the cluster, with bounded failure times.

`--distributed` picks when a run is multi-process:
- `auto` (default): when `--coordinator_address`, `--num_processes` and `--process_id` are given, or the
  environment shows a multi-process launch that needs no network query to detect: SLURM (`srun` with more
  than one task) or Open MPI (`mpirun -n N`, N > 1). Otherwise one process.
- `on`: always; whatever the flags leave out comes from JAX's cluster detection (Cloud TPU pods through the
  TPU metadata server, GKE, SLURM, Open MPI). Pass it on TPU pods (`launch/tpu_pod.sh` does).
- `off`: never (e.g. one process inside a multi-task SLURM allocation).

Failure bounds (seconds, all configurable): every process must join within `--initialization_timeout`,
else each waiting process prints one `error:` line and exits 1; a process that dies (or stops sending
heartbeats) is detected by the coordinator within `--heartbeat_timeout`, and JAX then terminates every
other process with the fatal log line `Terminating process because the JAX distributed service detected
fatal errors ... another task died`; a process that exits while others still run waits at most
`--shutdown_timeout` for them at the shutdown barrier before JAX ends them the same way. If process 0 (the
coordinator) dies, the others lose the service and end within seconds.

On CPU the processes' collectives go through gloo, so several processes on one machine form a real
multi-host run (`launch/local_multiprocess.sh`).
"""
import dataclasses
import os
import sys
import threading
import time
from typing import Mapping, NoReturn

from absl import flags, logging

MODES = ('auto', 'on', 'off')

_MODE = flags.DEFINE_enum('distributed', 'auto', list(MODES),
                          'When to run as one process of a multi-process (multi-host) run; see aigc_jax/distributed.py.')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None,
                                   'HOST:PORT of process 0, which serves the coordination service there.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Number of processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process: 0 .. num_processes - 1.')
_INIT_TIMEOUT = flags.DEFINE_integer('initialization_timeout', 300,
                                     'Seconds for every process to join before the run gives up.', lower_bound=1)
_HEARTBEAT_TIMEOUT = flags.DEFINE_integer('heartbeat_timeout', 100,
                                          'Seconds without heartbeats after which a process counts as dead '
                                          'and every process is stopped.', lower_bound=1)
_SHUTDOWN_TIMEOUT = flags.DEFINE_integer('shutdown_timeout', 300,
                                         'Seconds a finished process waits for the others at exit.', lower_bound=1)


class DistributedError(ValueError):
  """Flags or an environment that cannot form a multi-process run; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Settings:
  """How (and whether) to join a multi-process run."""
  mode: str = 'auto'
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  initialization_timeout: int = 300
  heartbeat_timeout: int = 100
  shutdown_timeout: int = 300


def settings_from_flags() -> Settings:
  return Settings(_MODE.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _INIT_TIMEOUT.value,
                  _HEARTBEAT_TIMEOUT.value, _SHUTDOWN_TIMEOUT.value)


def check(settings: Settings) -> None:
  """Raises `DistributedError` for a combination of flags that cannot describe a run."""
  explicit = {'--coordinator_address': settings.coordinator_address, '--num_processes': settings.num_processes,
              '--process_id': settings.process_id}
  given = [name for name, value in explicit.items() if value is not None]
  if settings.mode == 'off' and given:
    raise DistributedError(f'--distributed=off contradicts {given[0]}; allowed: drop {given[0]}, or use '
                           '--distributed=auto')
  if settings.mode == 'auto' and given and len(given) < len(explicit):
    missing = [name for name in explicit if name not in given]
    raise DistributedError(f'{given[0]} needs {" and ".join(missing)} too; allowed: all three of '
                           '--coordinator_address, --num_processes, --process_id, or --distributed=on to take '
                           'the missing ones from the cluster (TPU pod, SLURM, Open MPI)')
  if settings.coordinator_address is not None:
    host, _, port = settings.coordinator_address.rpartition(':')
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
      raise DistributedError(f'--coordinator_address={settings.coordinator_address!r} is not allowed; allowed: '
                             'HOST:PORT with a port in 1..65535, e.g. 10.0.0.1:1234')
  if settings.num_processes is not None and settings.num_processes < 1:
    raise DistributedError(f'--num_processes={settings.num_processes} is not allowed; allowed: an integer >= 1')
  if settings.process_id is not None:
    upper = settings.num_processes
    if settings.process_id < 0 or (upper is not None and settings.process_id >= upper):
      allowed = f'0 .. {upper - 1}' if upper is not None else 'an integer >= 0'
      raise DistributedError(f'--process_id={settings.process_id} is not allowed; allowed: {allowed}')


def _count(environ: Mapping[str, str], name: str) -> int:
  try:
    return int(environ.get(name, '1'))
  except ValueError:
    return 1


def detected_launcher(environ: Mapping[str, str]) -> str | None:
  """The multi-process launcher the environment shows (no network queries), or None."""
  slurm = ('SLURM_JOB_ID', 'SLURM_STEP_NODELIST', 'SLURM_NTASKS', 'SLURM_PROCID', 'SLURM_LOCALID')
  if all(name in environ for name in slurm) and _count(environ, 'SLURM_NTASKS') > 1:
    return 'SLURM'
  if 'OMPI_MCA_orte_hnp_uri' in environ and _count(environ, 'OMPI_COMM_WORLD_SIZE') > 1:
    return 'Open MPI'
  return None


def should_initialize(settings: Settings, environ: Mapping[str, str]) -> bool:
  if settings.mode != 'auto':
    return settings.mode == 'on'
  return settings.coordinator_address is not None or detected_launcher(environ) is not None


def _describe(settings: Settings) -> str:
  who = (f'process {settings.process_id} of {settings.num_processes}' if settings.process_id is not None
         else 'this process')
  where = settings.coordinator_address or 'the coordinator the cluster names'
  return f'{who}, coordinator {where}'


def initialize(settings: Settings, environ: Mapping[str, str] = os.environ) -> bool:
  """Joins the multi-process run `settings` describes, if any; returns whether it did.

  Must run before anything touches a jax backend. Raises `DistributedError` for bad flags. If the run does
  not form within `initialization_timeout` (the coordinator unreachable, a process missing), prints one
  `error:` line and ends this process with status 1.
  """
  check(settings)
  if not should_initialize(settings, environ):
    return False
  import jax  # pylint: disable=g-import-not-at-top  (after flag checks; before any backend exists)

  # gloo: cross-process collectives of the CPU backend (the default in jax 0.10, set so it stays so); it
  # leaves GPU and TPU collectives alone.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  what = _describe(settings)
  logging.info('joining a multi-process run (%s; launcher: %s); waiting up to %ds for every process',
               what, detected_launcher(environ) or 'flags', settings.initialization_timeout)
  # JAX's own deadline ends the process with a fatal log that blames "another task"; ours fires first and
  # says what happened. The wait happens in C++ with the GIL released, so the timer runs.
  timer = threading.Timer(settings.initialization_timeout, _give_up, args=(what, settings.initialization_timeout))
  timer.daemon = True
  timer.start()
  start = time.monotonic()
  try:
    jax.distributed.initialize(
        coordinator_address=settings.coordinator_address, num_processes=settings.num_processes,
        process_id=settings.process_id, initialization_timeout=settings.initialization_timeout + 30,
        heartbeat_timeout_seconds=settings.heartbeat_timeout, shutdown_timeout_seconds=settings.shutdown_timeout)
  except (ValueError, TypeError, RuntimeError) as e:  # cluster detection found nothing usable, ...
    timer.cancel()
    raise DistributedError(f'cannot start the multi-process run ({what}): {" ".join(str(e).split())[:300]}; '
                           'give --coordinator_address, --num_processes and --process_id, or run on a TPU pod, '
                           'under SLURM or Open MPI') from None
  timer.cancel()
  logging.info('joined as process %d of %d in %.1fs; a process that stops for %ds stops them all',
               jax.process_index(), jax.process_count(), time.monotonic() - start, settings.heartbeat_timeout)
  return True


def _give_up(what: str, timeout: int) -> None:
  print(f'error: the multi-process run did not form within {timeout}s ({what}): the coordinator is '
        'unreachable or not every process started; check the address, that process 0 runs, and the '
        'firewall, or raise --initialization_timeout', file=sys.stderr, flush=True)
  os._exit(1)  # pylint: disable=protected-access  (the main thread is blocked inside JAX's connect)


def failed_across_processes(error: BaseException) -> BaseException | None:
  """The failed XLA computation (e.g. a collective) of a multi-process run behind `error` (itself or an
  error that caused it), or None. Such a run cannot go on; most often another process died."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() == 1:
    return None
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, jax.errors.JaxRuntimeError):
      return error
    error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
  return None


def exit_failed_across_processes(error: BaseException, status: int = 1) -> NoReturn:
  """Prints one `error:` line about `error` (see `failed_across_processes`) and ends this process at once.

  Skips the exit-time shutdown barrier on purpose: it would wait up to `--shutdown_timeout` for a process
  that may be dead, while this exit already tells the coordination service (or, from process 0, every
  process) that the run is over.
  """
  import jax  # pylint: disable=g-import-not-at-top
  text = ' '.join(str(error).split())[:300]
  print(f'error: process {jax.process_index()} of {jax.process_count()} lost the multi-process run '
        f'({type(error).__name__}: {text}); another process probably died or was killed: see its log',
        file=sys.stderr, flush=True)
  logging.flush()
  sys.stdout.flush()
  os._exit(status)  # pylint: disable=protected-access
