"""Multi-process start-up: `jax.distributed.initialize` from flags or the cluster, with bounded failure times.

`--distributed` picks when a run is multi-process:
- `auto` (default): when `--coordinator_address`, `--num_processes` and `--process_id` are given, or the
  environment shows a multi-process launch that needs no network query to detect: SLURM (`srun` with more
  than one task) or Open MPI (`mpirun -n N`, N > 1). Otherwise one process.
- `on`: always; whatever the flags leave out comes from JAX's cluster detection (Cloud TPU pods through the
  TPU metadata server, GKE, SLURM, Open MPI). Pass it on TPU pods (`launch/tpu_pod.sh` does).
- `off`: never (e.g. one process inside a multi-task SLURM allocation).

Failure bounds (seconds, all configurable): every process must join within `--initialization_timeout`, else each
waiting process prints one `error:` line and exits 1. A process that dies, hangs or fails is named by every
other process within `--peer_timeout` (+1 s) in one `error:` line, and they exit 1 (see `PeerWatch`). Two cases
end the survivors first, by an abort that is not ours: process 0 (the coordinator) dying, which JAX's client
answers within about a second with its fatal log line (jaxlib's hook for that event,
`missed_heartbeat_callback`, cannot take a Python function: in jaxlib 0.10.2 the call aborts with
`std::bad_cast`; jax 0.11 and later need Python 3.12, so the launcher, not the survivor, names process 0), and
(rarely) a collective that gloo runs off the Python stack failing when its peer is killed. JAX's own heartbeat
check (`--heartbeat_timeout`, which must be longer than `--peer_timeout`) is the backstop for the rest. A
process that exits while others still run waits at most `--shutdown_timeout` for them at the shutdown barrier.

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
_PEER_TIMEOUT = flags.DEFINE_integer('peer_timeout', 30,
                                     'Seconds without a sign of life from another process after which every '
                                     'process stops with one error line naming it; below --heartbeat_timeout.',
                                     lower_bound=2)
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
  peer_timeout: int = 30


def settings_from_flags() -> Settings:
  return Settings(_MODE.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _INIT_TIMEOUT.value,
                  _HEARTBEAT_TIMEOUT.value, _SHUTDOWN_TIMEOUT.value, _PEER_TIMEOUT.value)


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
  if settings.peer_timeout >= settings.heartbeat_timeout:
    raise DistributedError(f'--peer_timeout={settings.peer_timeout} is not allowed; allowed: fewer seconds than '
                           f'--heartbeat_timeout={settings.heartbeat_timeout}, so that a lost process is named '
                           'before JAX aborts the others')
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


def initialize(settings: Settings, environ: Mapping[str, str] = os.environ) -> 'PeerWatch | None':
  """Joins the multi-process run `settings` describes, if any, and starts watching the other processes
  (see `PeerWatch`); returns the watch, or None for a one-process run.

  Must run before anything touches a jax backend. Raises `DistributedError` for bad flags. If the run does
  not form within `initialization_timeout` (the coordinator unreachable, a process missing), prints one
  `error:` line and ends this process with status 1.
  """
  check(settings)
  if not should_initialize(settings, environ):
    return None
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
  logging.info('joined as process %d of %d in %.1fs; a process silent for %ds stops them all',
               jax.process_index(), jax.process_count(), time.monotonic() - start, settings.peer_timeout)
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top  (its KV store)
  watch = PeerWatch(jax_distributed.global_state.client, jax.process_index(), jax.process_count(),
                    settings.peer_timeout)
  watch.start()
  return watch


class PeerWatch:
  """Names a lost process within a bound, in one line, on every other process.

  Each process publishes a counter in the coordination service's key-value store every second. A process
  whose counter stops for `timeout` seconds (killed, crashed, hung) or that leaves with an error makes every
  other process print one `error:` line naming it and exit 1 at once. (When the service itself, on process
  0, goes away, JAX's client usually aborts this process before the watch can say so.) Without this a survivor waits in a collective until JAX's own heartbeat
  check aborts it with a fatal log that blames "another task".
  """
  _PREFIX = 'aigc_jax/peers'
  _FAILED_GRACE = 5.0  # seconds for this process to report an error of its own first

  def __init__(self, client, process_id: int, num_processes: int, timeout: float, interval: float = 1.0):
    self._client, self._me, self._count = client, process_id, num_processes
    self._timeout, self._interval = timeout, interval
    self._stopped = threading.Event()
    self._failed_since = {}
    self._thread = threading.Thread(target=self._watch, name='peer_watch', daemon=True)

  def start(self) -> None:
    self._thread.start()

  def finish(self) -> None:
    """This process ended well: the others stop expecting signs of life from it."""
    self._leave('done')

  def fail(self) -> None:
    """This process ends with an error: the others stop too, naming it."""
    self._leave('failed')

  def name_the_lost_process(self) -> None:
    """After a collective failed: waits until the watch names the process that was lost (ending this one),
    at most `timeout` seconds and a little more; returns if it named none."""
    deadline = time.monotonic() + self._timeout + 2 * self._interval
    while time.monotonic() < deadline and self._thread.is_alive():
      time.sleep(0.1)

  def _leave(self, how: str) -> None:
    self._stopped.set()
    try:
      self._client.key_value_set(f'{self._PREFIX}/{how}/{self._me}', '1', allow_overwrite=True)
    except Exception:  # pylint: disable=broad-except  (the service may already be gone)
      pass

  def _watch(self) -> None:
    beat = 0
    seen = {process: (None, time.monotonic()) for process in range(self._count) if process != self._me}
    while not self._stopped.wait(0 if beat == 0 else self._interval):
      beat += 1
      try:
        self._client.key_value_set(f'{self._PREFIX}/alive/{self._me}', str(beat), allow_overwrite=True)
        entries = dict(self._client.key_value_dir_get(f'{self._PREFIX}/'))
      except Exception as e:  # pylint: disable=broad-except  (the coordination service is unreachable)
        if self._stopped.is_set():
          return
        self._lost(f'lost the coordination service of process 0 ({" ".join(str(e).split())[:200]}): '
                   'process 0 probably died or was killed')
      now = time.monotonic()
      for process, (value, since) in seen.items():
        state = lambda how, p=process: entries.get(f'{self._PREFIX}/{how}/{p}')  # noqa: E731
        if state('done'):
          continue
        if state('failed'):
          failed_since = self._failed_since.setdefault(process, now)
          if now - failed_since >= self._FAILED_GRACE:  # the same error (e.g. a config one) stops this process too
            self._lost(f'process {process} of {self._count} stopped with an error (see its log)')
          continue
        current = state('alive')
        if current != value:
          seen[process] = (current, now)
        elif now - since > self._timeout:
          self._lost(f'process {process} of {self._count} gave no sign of life for {self._timeout:g}s: it '
                     'was killed, crashed or hangs (see its log)')

  def _lost(self, why: str) -> None:
    if self._stopped.is_set():
      return
    print(f'error: {why}; process {self._me} stops too', file=sys.stderr, flush=True)
    logging.flush()
    os._exit(1)  # pylint: disable=protected-access  (the main thread may be blocked in a collective)


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


def exit_with_error(message: str, status: int) -> NoReturn:
  """Prints `error: message` and ends this process of a multi-process run at once, skipping JAX's shutdown
  barrier: the other processes stop on their own (see `PeerWatch`), so nobody waits there."""
  print(f'error: {message}', file=sys.stderr, flush=True)
  logging.flush()
  sys.stdout.flush()
  os._exit(status)  # pylint: disable=protected-access


def exit_failed_across_processes(error: BaseException, status: int = 1, peers: PeerWatch | None = None) -> NoReturn:
  """Prints one `error:` line about `error` (see `failed_across_processes`) and ends this process at once.

  With `peers`, first gives them time to name the process that was lost (their line then replaces this one).

  Skips the exit-time shutdown barrier on purpose: it would wait up to `--shutdown_timeout` for a process
  that may be dead, while this exit already tells the coordination service (or, from process 0, every
  process) that the run is over.
  """
  import jax  # pylint: disable=g-import-not-at-top
  if peers is not None:
    peers.name_the_lost_process()
  text = ' '.join(str(error).split())[:300]
  exit_with_error(f'process {jax.process_index()} of {jax.process_count()} lost the multi-process run '
                  f'({type(error).__name__}: {text}); another process probably died or was killed: see its log',
                  status)
