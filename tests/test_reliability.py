"""Fault injection: preemption, crashes during saves, corrupt checkpoints, NaNs, full or read-only disks,
and config changes on resume. Process faults use real processes."""
import glob
import os
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from aigc_jax import checkpointing, input_pipeline, train
from aigc_jax.config_checks import ConfigError
from tests.conftest import REPO_ROOT, snapshot_files


def _params(state):
  return jax.device_get((state.generator, state.discriminator))


def _assert_same_params(a, b):
  jax.tree.map(np.testing.assert_array_equal, _params(a), _params(b))


def _checkpoint_steps(workdir):
  return checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=10).all_steps()


def _main_args(config, workdir, **overrides):
  args = [sys.executable, '-m', 'aigc_jax.main', '--config=configs/default.py', f'--workdir={workdir}']
  fields = {'data_dir': config.data_dir, 'batch_size': config.batch_size,
            'width_multiplier': config.width_multiplier, 'shuffle_buffer': config.shuffle_buffer,
            'num_sample_images': config.num_sample_images, **overrides}
  return args + [f'--config.{key}={value}' for key, value in fields.items()]


def test_sigterm_saves_exits_0_and_resume_is_bit_identical(tiny_config, tmp_path):
  workdir = str(tmp_path / 'preempted')
  process = subprocess.Popen(
      _main_args(tiny_config, workdir, num_train_steps=100_000, log_every_steps=1, sample_every_steps=100_000,
                 checkpoint_every_steps=100_000),
      cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
  watchdog = threading.Timer(300, process.kill)  # never hang the suite if the run misbehaves
  watchdog.start()
  for line in process.stderr:  # wait until a few steps are done, then preempt
    logged = re.search(r'\[(\d+)\] .*d_loss=', line)
    if logged and int(logged.group(1)) >= 3:
      process.send_signal(signal.SIGTERM)
      break
  else:
    process.kill()
  rest = process.stderr.read()
  watchdog.cancel()
  assert process.wait(timeout=120) == 0, rest[-3000:]
  assert 'received SIGTERM' in rest
  (stopped_at,) = _checkpoint_steps(workdir)
  assert 1 < stopped_at < 100_000

  total = stopped_at + 3
  tiny_config.num_train_steps = total
  tiny_config.sample_every_steps = tiny_config.checkpoint_every_steps = 100_000
  resumed = train.train_and_evaluate(tiny_config, workdir)
  straight = train.train_and_evaluate(tiny_config, str(tmp_path / 'straight'))
  assert int(resumed.step) == int(straight.step) == total
  _assert_same_params(resumed, straight)


def test_sigkill_during_an_async_save_resumes_from_the_previous_checkpoint(tiny_config, tmp_path):
  workdir = str(tmp_path / 'killed')
  # A wider model so that each save takes long enough to be caught in the middle.
  process = subprocess.Popen(
      _main_args(tiny_config, workdir, num_train_steps=100_000, width_multiplier=2.0, checkpoint_every_steps=1,
                 keep_checkpoints=2, sample_every_steps=100_000, log_every_steps=100_000),
      cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 120
  try:
    # Kill only once a committed checkpoint exists and the next one is half-written.
    while time.time() < deadline:
      committed = [path for path in glob.glob(os.path.join(workdir, 'checkpoints', '*', 'commit_success.txt'))
                   if os.path.basename(os.path.dirname(path)).isdigit()]  # not `N.orbax-checkpoint-tmp`
      in_flight = glob.glob(os.path.join(workdir, 'checkpoints', '*.orbax-checkpoint-tmp*'))
      if committed and in_flight:
        process.kill()
        break
      time.sleep(0.005)
  finally:
    process.kill()
    process.wait()
  assert in_flight, 'never saw a save in flight'
  steps = _checkpoint_steps(workdir)
  assert steps, 'no committed checkpoint survived'

  tiny_config.width_multiplier = 2.0
  tiny_config.keep_checkpoints = 2
  tiny_config.num_train_steps = max(steps) + 2
  tiny_config.sample_every_steps = 100_000
  state = train.train_and_evaluate(tiny_config, workdir)
  assert int(state.step) == max(steps) + 2
  assert not glob.glob(os.path.join(workdir, 'checkpoints', '*.orbax-checkpoint-tmp*'))


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def _scramble(path):
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.write(np.random.default_rng(0).integers(0, 256, size, np.uint8).tobytes())


@pytest.mark.parametrize('damage', [_truncate, _scramble])
def test_corrupt_latest_checkpoint_falls_back_to_the_newest_good_one(tiny_config, tmp_path, damage, caplog):
  workdir = str(tmp_path / 'run')
  tiny_config.sample_every_steps = 100
  train.train_and_evaluate(tiny_config, workdir)  # checkpoints at 2 and 4
  for path in glob.glob(os.path.join(workdir, 'checkpoints', '4', 'state', '**', '*'), recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 0:
      damage(path)
  tiny_config.num_train_steps = 6
  state = train.train_and_evaluate(tiny_config, workdir)
  assert int(state.step) == 6
  warnings = [r.getMessage() for r in caplog.records if 'unusable' in r.getMessage()]
  assert any('checkpoints/4 is unusable' in w for w in warnings), warnings
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', '4.corrupt'))  # kept for inspection
  assert _checkpoint_steps(workdir) == [2, 4, 6]  # resumed from 2; 4 was written afresh


def test_no_good_checkpoint_is_a_clear_error_and_nothing_is_deleted(tiny_config, tmp_path):
  workdir = str(tmp_path / 'run')
  tiny_config.sample_every_steps = 100
  train.train_and_evaluate(tiny_config, workdir)
  for path in glob.glob(os.path.join(workdir, 'checkpoints', '*', 'state', '**', '*'), recursive=True):
    if os.path.isfile(path) and os.path.getsize(path) > 0:
      _truncate(path)
  before = snapshot_files(workdir + '/checkpoints')
  tiny_config.num_train_steps = 6
  with pytest.raises(checkpointing.CheckpointError, match=r'no usable checkpoint in .*steps \[4, 2\].*nothing was deleted'):
    train.train_and_evaluate(tiny_config, workdir)
  assert snapshot_files(workdir + '/checkpoints') == before


def _poison(monkeypatch, bad_steps):
  """Feeds NaN images at the given (1-based) steps."""
  real = input_pipeline.global_batches

  def poisoned(*args, **kwargs):
    for step, batch in enumerate(real(*args, **kwargs), start=1):
      if step in bad_steps:
        batch = dict(batch, image=batch['image'] * np.nan)
      yield batch

  monkeypatch.setattr(input_pipeline, 'global_batches', poisoned)


def test_a_nan_batch_is_skipped_and_counted(tiny_config, tmp_path, monkeypatch):
  _poison(monkeypatch, {3})
  tiny_config.num_train_steps = 5
  state = train.train_and_evaluate(tiny_config, str(tmp_path / 'run'))
  assert int(state.step) == 5
  assert int(state.skipped_steps) == 1 and int(state.consecutive_skipped) == 0
  assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(_params(state)))


def test_too_many_nonfinite_steps_stop_with_a_checkpoint_of_the_last_good_state(tiny_config, tmp_path,
                                                                                monkeypatch):
  tiny_config.num_train_steps = 100
  tiny_config.max_consecutive_nonfinite = 3
  tiny_config.checkpoint_every_steps = 100
  tiny_config.sample_every_steps = 100
  good = train.train_and_evaluate(_with(tiny_config, num_train_steps=2), str(tmp_path / 'good'))
  _poison(monkeypatch, set(range(3, 101)))
  workdir = str(tmp_path / 'run')
  with pytest.raises(train.TrainingStopped, match='3 steps in a row .* non-finite'):
    train.train_and_evaluate(tiny_config, workdir)
  (step,) = _checkpoint_steps(workdir)
  assert 3 + 3 <= step <= 3 + 4  # noticed one step late, by design (no host sync per step)
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=3)
  restored = checkpointer.restore(step, good, None)
  _assert_same_params(restored, good)  # the params of step 2, the last good step
  assert int(restored.skipped_steps) == step - 2


def _with(config, **changes):
  config = config.copy_and_resolve_references()
  config.unlock()
  config.update(changes)
  return config


def test_config_change_on_resume_is_refused_unless_allowed(tiny_config, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config, workdir)
  for field, value in (('batch_size', 32), ('model', 'dcgan'), ('dataset', 'mnist'), ('image_size', 32)):
    with pytest.raises(ConfigError, match=f'config.{field} changed since the checkpoint'):
      train.train_and_evaluate(_with(tiny_config, num_train_steps=6, **{field: value}), workdir)
  assert _checkpoint_steps(workdir) == [2, 4]
  state = train.train_and_evaluate(_with(tiny_config, num_train_steps=6, batch_size=32, allow_config_change=True),
                                   workdir)
  assert int(state.step) == 6


@pytest.fixture
def small_filesystem(tmp_path):
  """A 24 MiB tmpfs of our own (root and mount(2) needed; skipped where not allowed)."""
  mount_point = tmp_path / 'fs'
  mount_point.mkdir()
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', str(mount_point)],
                          capture_output=True, text=True)
  if result.returncode:
    pytest.skip(f'cannot mount a tmpfs here: {result.stderr.strip()}')
  yield mount_point
  subprocess.run(['umount', '-l', str(mount_point)], check=False)


def test_full_disk_when_saving_is_a_clear_error_and_the_last_checkpoint_survives(tiny_config, small_filesystem):
  workdir = str(small_filesystem / 'run')
  tiny_config.num_train_steps = 2
  train.train_and_evaluate(tiny_config, workdir)
  filler = small_filesystem / 'filler'
  descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the disk (unbuffered: nothing left to flush) ...
  try:
    while True:
      os.write(descriptor, b'\0' * (64 << 10))
  except OSError:
    pass
  finally:
    os.close(descriptor)
  # ... then leave room for start-up (event file, config.json) but not for a ~1.5 MB checkpoint.
  os.truncate(filler, os.path.getsize(filler) - (256 << 10))
  tiny_config.num_train_steps = 4
  with pytest.raises(checkpointing.CheckpointError, match=r'(saving checkpoint|finishing a checkpoint save).*failed.*last good checkpoint is .*/2'):
    train.train_and_evaluate(tiny_config, workdir)
  filler.unlink()
  assert _checkpoint_steps(workdir) == [2]
  state = train.train_and_evaluate(tiny_config, workdir)  # the surviving checkpoint restores
  assert int(state.step) == 4


def test_read_only_workdir_is_a_clear_error(tiny_config, small_filesystem):
  workdir = str(small_filesystem / 'run')
  tiny_config.num_train_steps = 2
  train.train_and_evaluate(tiny_config, workdir)
  subprocess.run(['mount', '-o', 'remount,ro', str(small_filesystem)], check=True)
  try:
    tiny_config.num_train_steps = 4
    with pytest.raises(ConfigError, match='is not writable: Read-only file system'):
      train.train_and_evaluate(tiny_config, workdir)
  finally:
    subprocess.run(['mount', '-o', 'remount,rw', str(small_filesystem)], check=True)
  assert _checkpoint_steps(workdir) == [2]
