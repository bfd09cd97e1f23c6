"""Multi-host training with real processes on localhost: gloo collectives between processes that each own
fake CPU devices, started through `launch/local_multiprocess.sh`. Also the start-up flags, the per-stream
input, and the launch scripts' syntax."""
import functools
import glob
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from aigc_jax import checkpointing, distributed, input_pipeline, sharding, train
from aigc_jax import state as state_lib
from tests.conftest import REPO_ROOT, env_with_devices

LAUNCHER = os.path.join(REPO_ROOT, 'launch', 'local_multiprocess.sh')
WATCHDOG_S = 420  # never hang the suite: a run still going after this long has failed


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _env(**extra):
  return env_with_devices(None, TF_CPP_MIN_LOG_LEVEL='2', **extra)  # the launcher sets the device count


def _compilation_cache(directory):
  """JAX's persistent compilation cache, shared by the runs of one test: a later process with the same
  program loads it instead of compiling it again (saves CPU time; the programs are the same)."""
  return {'JAX_COMPILATION_CACHE_DIR': str(directory), 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '-1'}


def _flags(config, workdir, **overrides):
  fields = {'data.dir': config.data.dir, 'batch_size': config.batch_size,
            'model.width_multiplier': config.model.width_multiplier, 'data.shuffle_buffer': config.data.shuffle_buffer,
            'num_sample_images': config.num_sample_images, 'log_every_steps': 1, 'sample_every_steps': 100_000,
            'keep_checkpoints': 100, **overrides}
  return ['--config=configs/base.py', f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in fields.items()]


class Launch:
  """`launch/local_multiprocess.sh N` running in the background, its per-process logs under `log_dir`."""

  def __init__(self, num_processes, devices, flags, log_dir, **env):
    self.log_dir = str(log_dir)
    self.console = self.log_dir + '.console'  # the launcher's own output: pids, then process 0's log
    with open(self.console, 'w') as console:
      self.process = subprocess.Popen(
          ['bash', LAUNCHER, str(num_processes), *flags], cwd=REPO_ROOT, stdout=console,
          stderr=subprocess.STDOUT, start_new_session=True,
          env=_env(LOG_DIR=self.log_dir, DEVICES_PER_PROCESS=str(devices), PORT=str(_free_port()), **env))
    self.num_processes = num_processes
    self.started = time.time()

  def log(self, index) -> str:
    path = os.path.join(self.log_dir, f'process_{index}.log')
    return open(path).read() if os.path.exists(path) else ''

  def pids(self) -> list[int]:
    with open(self.console) as console:
      found = {int(i): int(p) for i, p in re.findall(r'^process (\d+): pid (\d+)', console.read(), re.M)}
    return [found[i] for i in range(self.num_processes)]

  def wait_until(self, predicate, what):
    while not predicate():
      assert self.process.poll() is None, f'the run ended before {what}:\n{self.log(0)[-3000:]}'
      assert time.time() - self.started < WATCHDOG_S, f'no {what} after {WATCHDOG_S}s:\n{self.log(0)[-3000:]}'
      time.sleep(0.1)

  def wait(self) -> int:
    try:
      return self.process.wait(timeout=max(1, WATCHDOG_S - (time.time() - self.started)))
    except subprocess.TimeoutExpired:
      self.kill()
      raise AssertionError(f'hung: still running after {WATCHDOG_S}s:\n{self.log(0)[-3000:]}') from None

  def kill(self) -> None:
    """Ends the launcher and every process it started (they share its session)."""
    if self.process.poll() is None:  # not yet reaped, so the group id is still ours
      try:
        os.killpg(self.process.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      self.process.wait()


def _logged_step(log: str) -> int:
  return max([int(s.replace(',', '')) for s in re.findall(r'step +([\d,]+)/[\d,]+ .*d_loss ', log)], default=0)


def _committed_steps(workdir):
  return sorted(int(os.path.basename(os.path.dirname(p)))
                for p in glob.glob(os.path.join(workdir, 'checkpoints', '*', 'commit_success.txt'))
                if os.path.basename(os.path.dirname(p)).isdigit())


def _initializer(config):
  """`(init, abstract)` of the tiny config's train state on this process's 8 devices (see `state.py`)."""
  _, _, family = train.prepare_data_and_models(config)
  return state_lib.initializer_from_config(config, sharding.mesh_from_config(config), family.init_state)


def _saved(workdir, step, abstract):
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=100)
  try:
    return jax.device_get(checkpointer.restore_state(step, abstract))
  finally:
    checkpointer.close()


def _assert_bit_identical(a, b, what):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=f'{what}: {jax.tree_util.keystr(path)}')


def test_two_processes_match_one_resume_across_process_counts_and_stop_together(tiny_config, tmp_path):
  """One set of real runs, each assertion naming the property it checks:

  - B: 1 process x 8 devices (the distributed runtime with 1 process, so gloo collectives) for 14 steps,
    a checkpoint every step: the reference.
  - K: 2 processes x 4 devices from scratch, a checkpoint every step; process 1 is killed (SIGKILL).
  - C: this pytest process, 1 x 8 devices without the distributed runtime (in-process collectives).
  - A: 2 processes resume a copy of B's step-2 checkpoint (1 -> 2) and get SIGTERM.
  - D: 1 process resumes K's newest checkpoint (2 -> 1).
  Both process counts read the same global batches (one tf.data stream per batch shard), so with the same
  collectives the runs are bit-identical; in-process collectives sum the gradients of the 8 devices in
  another order than gloo does, which changes float32 rounding and nothing else.
  """
  config = tiny_config
  b_dir, k_dir, a_dir = (str(tmp_path / name) for name in ('b', 'k', 'a'))
  cache = _compilation_cache(tmp_path / 'jax_cache')
  b = Launch(1, 8, _flags(config, b_dir, num_train_steps=14, checkpoint_every_steps=1), tmp_path / 'b_logs', **cache)
  k = Launch(2, 4, _flags(config, k_dir, num_train_steps=100_000, checkpoint_every_steps=1)
             + ['--peer_timeout=3'], tmp_path / 'k_logs', **cache)
  try:
    k.wait_until(lambda: _committed_steps(k_dir) and _committed_steps(k_dir)[-1] >= 3, 'checkpoint 3 of K')
    _, victim = k.pids()
    os.kill(victim, signal.SIGKILL)
    killed_at = time.time()
    k_status = k.wait()
    survivor_s = time.time() - killed_at

    # C, while B runs (after K, so that K stops within B's 14 steps however loaded the machine is).
    config.num_train_steps = 3
    config.checkpoint_every_steps = config.sample_every_steps = 100
    plain = jax.device_get(train.train_and_evaluate(config, str(tmp_path / 'c')))
    b_status = b.wait()
  finally:
    for run in (b, k):
      run.kill()
  print(f'\nsurvivor of the killed process exited after {survivor_s:.1f}s (peer_timeout=3)')

  # The survivor is gone within the stated bound (peer_timeout + 1 s; + 5 s here for a loaded machine): it
  # names the killed process in one line, or (when gloo fails inside a collective it cannot report, e.g.
  # during a save's barrier) gloo ends it first. Either way the launcher names the process that failed first.
  assert k_status == 128 + signal.SIGKILL
  survivor_log = k.log(0)
  assert (re.search(r'^error: process 1 of 2 (gave no sign of life for 3s.*|lost the multi-process run.*); process 0 '
                    r'stops too$', survivor_log, re.M)
          or "terminate called after throwing an instance of 'gloo::" in survivor_log), survivor_log[-3000:]
  assert 'Traceback' not in survivor_log
  assert survivor_s < 3 + 1 + 5
  with open(k.console) as console:
    assert 'process 1 was killed by SIGKILL (status 137), the first to fail' in console.read()
  assert b_status == 0, b.log(0)[-3000:]
  _, abstract = _initializer(config)
  assert _committed_steps(b_dir) == list(range(1, 15))
  reference = functools.lru_cache(lambda step: _saved(b_dir, step, abstract))

  # 2 processes x 4 devices end with exactly the params (and optimiser state) of 1 process x 8 devices.
  k_steps = _committed_steps(k_dir)
  assert k_steps[:3] == [1, 2, 3], sorted(os.listdir(os.path.join(k_dir, 'checkpoints')))
  for step in [s for s in k_steps if s <= 14]:  # K may run past B's 14 steps on a loaded machine
    _assert_bit_identical(_saved(k_dir, step, abstract), reference(step), f'2 processes vs 1, step {step}')
  # Without the distributed runtime, one process sums the devices' gradients in another order: the same
  # run up to float32 rounding (a different batch or step would move the params by ~1e-4).
  for path_and_x, y in zip(jax.tree_util.tree_leaves_with_path(plain), jax.tree.leaves(reference(3))):
    np.testing.assert_allclose(path_and_x[1], y, rtol=1e-5, atol=1e-7, err_msg=jax.tree_util.keystr(path_and_x[0]))

  # Phase 2: resume across process counts (A: 1 -> 2 with a SIGTERM, D: 2 -> 1).
  os.makedirs(os.path.join(a_dir, 'checkpoints'))
  shutil.copytree(os.path.join(b_dir, 'checkpoints', '2'), os.path.join(a_dir, 'checkpoints', '2'))
  c = k_steps[-1]
  a = Launch(2, 4, _flags(config, a_dir, num_train_steps=100_000, checkpoint_every_steps=100_000),
             tmp_path / 'a_logs', **cache)
  d = Launch(1, 8, _flags(config, k_dir, num_train_steps=c + 2, checkpoint_every_steps=100_000),
             tmp_path / 'd_logs', **cache)
  try:
    a.wait_until(lambda: _logged_step(a.log(0)) >= 3, 'step 3 of A')
    a.process.send_signal(signal.SIGTERM)  # the launcher passes it to both processes, as a scheduler would
    a_status, d_status = a.wait(), d.wait()
  finally:
    for run in (a, d):
      run.kill()

  # SIGTERM: both processes stop at the same step, save it and exit 0.
  assert a_status == 0, a.log(0)[-3000:] + a.log(1)[-3000:]
  stops = [re.findall(r'stopping at step (\d+) on request', a.log(i)) for i in range(2)]
  assert stops[0] and stops[0] == stops[1], stops
  stopped_at = int(stops[0][0])
  assert _committed_steps(a_dir) == [2, stopped_at]
  if max(stopped_at, c + 2) > 14:  # rare (a slow stop under load): extend the reference, by a 1-process resume
    more = Launch(1, 8, _flags(config, b_dir, num_train_steps=max(stopped_at, c + 2), checkpoint_every_steps=1),
                  tmp_path / 'b2_logs', **cache)
    assert more.wait() == 0, more.log(0)[-3000:]
  # 1 -> 2: the state and every stream's data position carry over exactly.
  _assert_bit_identical(_saved(a_dir, stopped_at, abstract), reference(stopped_at), '1 -> 2 processes')
  # 2 -> 1: likewise.
  assert d_status == 0, d.log(0)[-3000:]
  _assert_bit_identical(_saved(k_dir, c + 2, abstract), reference(c + 2), '2 -> 1 process')

  # Only process 0 writes metrics: one TensorBoard file, named with its pid; nothing logged by process 1.
  events = glob.glob(os.path.join(a_dir, 'events.out.tfevents.*'))
  assert len(events) == 1 and f'.{a.pids()[0]}.' in os.path.basename(events[0]), events
  assert ' d_loss ' in a.log(0) and ' d_loss ' not in a.log(1)  # the console lines come from process 0 only
  assert os.path.exists(os.path.join(a_dir, 'config.json'))


def test_a_hung_process_is_named_by_the_others_within_the_peer_timeout(tiny_config, tmp_path):
  run = Launch(2, 4, _flags(tiny_config, str(tmp_path / 'run'), num_train_steps=100_000,
                            checkpoint_every_steps=100_000) + ['--peer_timeout=3'], tmp_path / 'logs')
  try:
    run.wait_until(lambda: _logged_step(run.log(0)) >= 3, 'step 3')
    survivor, hung = run.pids()
    os.kill(hung, signal.SIGSTOP)
    stopped_at = time.time()
    while _alive(survivor):
      assert time.time() - stopped_at < 60, f'process 0 still running 60 s after process 1 hung:\n{run.log(0)[-3000:]}'
      time.sleep(0.1)
    survivor_s = time.time() - stopped_at
  finally:
    run.kill()
  log = run.log(0)
  errors = [line for line in log.splitlines() if line.startswith('error:')]
  assert errors == ['error: process 1 of 2 gave no sign of life for 3s: it was killed, crashed or hangs (see its '
                    'log); process 0 stops too'], log[-3000:]
  assert log.rstrip().endswith(errors[0]) and 'Traceback' not in log
  assert survivor_s < 3 + 1 + 5, survivor_s  # the stated bound, and 5 s for a loaded machine


_PEER_THAT_ENDS_TOGETHER = """
import os, signal, sys, time
me = int([a for a in sys.argv if a.startswith('--process_id=')][0].split('=')[1])
flag = os.path.join(os.environ['FLAG_DIR'], 'dead')
if me == 1:  # the process that fails: it dies at once
  open(flag, 'w').close()
  os.kill(os.getpid(), signal.SIGKILL)
while not os.path.exists(flag):  # its peer, which gloo aborts as soon as the connection closes
  time.sleep(0.001)
print("terminate called after throwing an instance of 'gloo::EnforceNotMet'", flush=True)
os.abort()
"""


# Process 1 sees the coordination service of process 0 fail and JAX's client aborts it; process 0 is reaped
# a moment later (the order in which a launcher can see a killed coordinator and its survivor end).
_SURVIVOR_SEEN_BEFORE_THE_COORDINATOR = """
import os, signal, sys, time
me = int([a for a in sys.argv if a.startswith('--process_id=')][0].split('=')[1])
flag = os.path.join(os.environ['FLAG_DIR'], 'aborted')
if me == 1:
  print('F1207 client.h:80] Terminating process because the JAX distributed service detected fatal errors. '
        'This most likely indicates that another task died', flush=True)
  open(flag, 'w').close()
  os.abort()
while not os.path.exists(flag):
  time.sleep(0.001)
time.sleep(0.7)  # more than one of the launcher's polls
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize('fake,failed', [(_PEER_THAT_ENDS_TOGETHER, 1), (_SURVIVOR_SEEN_BEFORE_THE_COORDINATOR, 0)],
                         ids=['peer_killed', 'coordinator_killed'])
def test_launcher_names_the_process_that_failed_not_the_peer_that_ended_with_it(fake, failed, tmp_path):
  """Two processes that end within a moment: one is killed and the other aborts on the lost connection (gloo's
  abort, or JAX's client when the coordinator is gone), seen in the same poll or a poll before the killed one.
  The launcher names the killed process and exits with its status."""
  (tmp_path / 'fake_peer.py').write_text(fake)
  run = Launch(2, 1, [], tmp_path / 'logs', MODULE='fake_peer', PYTHONPATH=str(tmp_path), FLAG_DIR=str(tmp_path))
  try:
    status = run.wait()
  finally:
    run.kill()
  console = open(run.console).read()
  assert status == 128 + signal.SIGKILL, console
  assert f'process {failed} was killed by SIGKILL (status 137), the first to fail' in console, console


def _alive(pid: int) -> bool:
  """Whether `pid` still runs (a process that ended and was not reaped yet counts as ended)."""
  try:
    with open(f'/proc/{pid}/stat') as stat:
      return stat.read().split(')')[-1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def test_unreachable_coordinator_is_one_error_line_within_the_timeout(tiny_config, tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'aigc_jax.main', *_flags(tiny_config, str(tmp_path / 'run')),
       f'--coordinator_address=localhost:{_free_port()}', '--num_processes=2', '--process_id=1',
       '--initialization_timeout=3'],
      cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=WATCHDOG_S)
  assert result.returncode == 1, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and 'did not form within 3s' in errors[0], result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(tmp_path / 'run')  # nothing written before the run formed


BAD_FLAGS = {
    'missing process id': (['--coordinator_address=localhost:1234', '--num_processes=2'],
                           '--coordinator_address needs --process_id too'),
    'off with an address': (['--distributed=off', '--coordinator_address=localhost:1234'],
                            '--distributed=off contradicts --coordinator_address'),
    'process id out of range': (['--coordinator_address=localhost:1234', '--num_processes=2', '--process_id=2'],
                                '--process_id=2 is not allowed; allowed: 0 .. 1'),
    'no port': (['--coordinator_address=localhost', '--num_processes=2', '--process_id=0'],
                "--coordinator_address='localhost' is not allowed; allowed: HOST:PORT"),
    'no processes': (['--coordinator_address=h:1', '--num_processes=0', '--process_id=0'],
                     '--num_processes=0 is not allowed'),
}


@pytest.mark.parametrize('case', sorted(BAD_FLAGS))
def test_bad_distributed_flags(case):
  argv, message = BAD_FLAGS[case]
  settings = distributed.Settings(
      mode=next((a.split('=')[1] for a in argv if a.startswith('--distributed=')), 'auto'),
      **{name: (int(value) if name != 'coordinator_address' else value)
         for name, value in (a[2:].split('=', 1) for a in argv if not a.startswith('--distributed='))})
  with pytest.raises(distributed.DistributedError, match=re.escape(message)):
    distributed.check(settings)


def test_bad_distributed_flags_on_the_command_line_are_one_line_and_exit_2(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'aigc_jax.main', '--config=configs/base.py', f'--workdir={tmp_path}/run',
       '--coordinator_address=localhost:1234', '--num_processes=2'],
      cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=WATCHDOG_S)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith('error: --coordinator_address needs --process_id')
  assert 'Traceback' not in result.stderr and not os.path.exists(tmp_path / 'run')


def test_multi_process_launchers_are_detected_from_the_environment():
  slurm = {'SLURM_JOB_ID': '7', 'SLURM_STEP_NODELIST': 'n[1-2]', 'SLURM_NTASKS': '16', 'SLURM_PROCID': '3',
           'SLURM_LOCALID': '3'}
  assert distributed.detected_launcher(slurm) == 'SLURM'
  assert distributed.detected_launcher(dict(slurm, SLURM_NTASKS='1')) is None  # a one-task job step
  assert distributed.detected_launcher({'OMPI_MCA_orte_hnp_uri': 'x', 'OMPI_COMM_WORLD_SIZE': '4'}) == 'Open MPI'
  assert distributed.detected_launcher({}) is None
  auto, on, off = (distributed.Settings(mode=mode) for mode in ('auto', 'on', 'off'))
  assert not distributed.should_initialize(auto, {}) and distributed.should_initialize(auto, slurm)
  assert distributed.should_initialize(on, {}) and not distributed.should_initialize(off, slurm)
  explicit = distributed.Settings(coordinator_address='h:1', num_processes=2, process_id=0)
  assert distributed.should_initialize(explicit, {})


def test_process_shares_of_the_streams_assemble_the_one_process_batch(tiny_config):
  """Each process runs the streams of its rows; concatenated they are the batch one process reads."""
  builder = input_pipeline.get_builder(tiny_config)
  info = input_pipeline.dataset_info(tiny_config, builder)
  shape = input_pipeline.global_batch_shapes(tiny_config, info)['image'].shape
  assert input_pipeline.batch_streams(sharding.batch_sharding(sharding.create_mesh()), shape) == (8, list(range(8)))
  # 4 streams (as on 4 devices) read by one process, and by two processes of 2 streams each.
  whole = input_pipeline.TrainStreams(tiny_config, builder, num_streams=4, ids=range(4))
  halves = [input_pipeline.TrainStreams(tiny_config, builder, num_streams=4, ids=range(2 * i, 2 * i + 2))
            for i in range(2)]
  for _ in range(3):
    expected = next(whole)
    parts = [next(half) for half in halves]
    for key in expected:
      np.testing.assert_array_equal(np.concatenate([p[key] for p in parts], axis=1), expected[key])
  assert not np.array_equal(parts[0]['image'], parts[1]['image'])


def test_data_positions_of_another_stream_count_restart_with_a_warning(tiny_config, tmp_path, caplog):
  builder = input_pipeline.get_builder(tiny_config)
  init, abstract = _initializer(tiny_config)
  saved = input_pipeline.TrainStreams(tiny_config, builder, num_streams=2, ids=range(2))
  first = next(saved)
  checkpointer = checkpointing.Checkpointer(str(tmp_path / 'checkpoints'), keep=3)
  checkpointer.save(1, init(jax.random.key(0)), saved, tiny_config)
  checkpointer.wait_until_finished()

  fewer = input_pipeline.TrainStreams(tiny_config, builder, num_streams=1, ids=range(1))
  with caplog.at_level(logging.WARNING):
    state = checkpointer.restore(1, abstract, fewer)
  assert int(state.step) == 0  # the train state restores
  assert any('holds data positions for' in r.getMessage() and 'restarts' in r.getMessage() for r in caplog.records)
  fresh = input_pipeline.TrainStreams(tiny_config, builder, num_streams=1, ids=range(1))
  np.testing.assert_array_equal(next(fewer)['image'], next(fresh)['image'])  # left at the start

  same = input_pipeline.TrainStreams(tiny_config, builder, num_streams=2, ids=range(2))
  checkpointer.restore(1, abstract, same)
  second = next(saved)['image']
  assert not np.array_equal(second, first['image'])
  np.testing.assert_array_equal(next(same)['image'], second)  # moved to the saved position
  checkpointer.close()


LAUNCH_SCRIPTS = sorted(glob.glob(os.path.join(REPO_ROOT, 'launch', '*.sh'))
                        + glob.glob(os.path.join(REPO_ROOT, 'launch', '*.sbatch')))


@pytest.mark.parametrize('script', [os.path.basename(s) for s in LAUNCH_SCRIPTS])
def test_launch_scripts_parse_and_pass_shellcheck(script):
  path = os.path.join(REPO_ROOT, 'launch', script)
  result = subprocess.run(['bash', '-n', path], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  if shutil.which('shellcheck') is None:
    pytest.skip('bash -n passed; shellcheck is not installed here')
  result = subprocess.run(['shellcheck', path], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout


def test_launcher_usage_errors_exit_2():
  result = subprocess.run(['bash', LAUNCHER, 'two'], capture_output=True, text=True)
  assert result.returncode == 2 and result.stderr.startswith('usage:')
