"""Faults met inside the training process: preemption, corrupt checkpoints, NaNs, a read-only disk, and
config changes on resume. Faults through the entry points (kill -9, damaged checkpoints, a full disk,
the tools beside training) are in `test_fault_injection.py`."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from aigc_jax import checkpointing, input_pipeline, train
from aigc_jax.config_checks import ConfigError
from tests.conftest import REPO_ROOT, set_fields, snapshot_files


def _params(state):
  return jax.device_get((state.generator, state.discriminator))


def _assert_same_params(a, b):
  jax.tree.map(np.testing.assert_array_equal, _params(a), _params(b))


def _checkpoint_steps(workdir):
  return checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=10).all_steps()


def _main_args(config, workdir, **overrides):
  args = [sys.executable, '-m', 'aigc_jax.main', '--config=configs/base.py', f'--workdir={workdir}']
  fields = {'data.dir': config.data.dir, 'batch_size': config.batch_size,
            'model.width_multiplier': config.model.width_multiplier, 'data.shuffle_buffer': config.data.shuffle_buffer,
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
    logged = re.search(r'step +([\d,]+)/[\d,]+ .*d_loss ', line)
    if logged and int(logged.group(1).replace(',', '')) >= 3:
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


def _truncate(path):
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def test_a_damaged_config_item_does_not_skip_the_resume_check(tiny_config, tmp_path):
  workdir = str(tmp_path / 'run')
  tiny_config.sample_every_steps = 100
  train.train_and_evaluate(tiny_config, workdir)  # checkpoints at 2 and 4
  with open(os.path.join(workdir, 'checkpoints', '4', 'config', 'metadata'), 'w') as f:
    f.write('{"loss": ')
  with pytest.raises(ConfigError, match=r"config.gan.loss changed since the checkpoint in .*checkpoints/2 \(was "
                                        r"'least_squares', now 'hinge'\)"):
    train.train_and_evaluate(_with(tiny_config, loss='hinge', num_train_steps=6), workdir)
  assert _checkpoint_steps(workdir) == [2, 4]  # refused before anything was moved
  state = train.train_and_evaluate(_with(tiny_config, num_train_steps=6), workdir)  # unchanged: from 2
  assert int(state.step) == 6 and os.path.isdir(os.path.join(workdir, 'checkpoints', '4.corrupt'))


def _as_saved_by_0_1_0(config: dict) -> dict:
  """`config` in the flat layout of version 0.1.0: the model, gan, data and optimizer fields at the top, under
  their own names but for these five."""
  renamed = {('model', 'name'): 'model', ('data', 'name'): 'dataset', ('data', 'dir'): 'data_dir',
             ('gan', 'update_scheme'): 'gan_update', ('eval', 'every_steps'): 'eval_every_steps'}
  flat = {key: value for key, value in config.items() if key not in ('model', 'gan', 'data', 'optimizer')}
  flat['eval'] = {key: value for key, value in config['eval'].items() if key != 'every_steps'}
  for group in ('model', 'gan', 'data', 'optimizer', 'eval'):
    for key, value in config[group].items():
      if group != 'eval' or key == 'every_steps':
        flat[renamed.get((group, key), key)] = value
  return flat


def test_a_checkpoint_of_0_1_0_resumes_and_keeps_its_resume_check(tiny_config, tmp_path):
  workdir = str(tmp_path / 'run')
  tiny_config.sample_every_steps = 100
  train.train_and_evaluate(tiny_config, workdir)  # checkpoints at 2 and 4
  for step in (2, 4):
    path = os.path.join(workdir, 'checkpoints', str(step), 'config', 'metadata')
    with open(path) as f:
      saved = json.load(f)
    with open(path, 'w') as f:
      json.dump(_as_saved_by_0_1_0(saved), f)
  with pytest.raises(ConfigError, match=r"config.gan.loss changed since the checkpoint in .*checkpoints/4 \(was "
                                        r"'least_squares', now 'hinge'\)"):
    train.train_and_evaluate(_with(tiny_config, loss='hinge', num_train_steps=6), workdir)
  state = train.train_and_evaluate(_with(tiny_config, num_train_steps=6), workdir)
  assert int(state.step) == 6 and _checkpoint_steps(workdir)[-1] == 6


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
  return set_fields(config.copy_and_resolve_references(), **changes)


def test_config_change_on_resume_is_refused_unless_allowed(tiny_config, tmp_path):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config, workdir)
  for field, value in (('batch_size', 32), ('model.name', 'dcgan'), ('data.name', 'mnist'), ('data.image_size', 32)):
    changed = _with(tiny_config, num_train_steps=6)
    changed.update_from_flattened_dict({field: value})
    with pytest.raises(ConfigError, match=f'config.{field} changed since the checkpoint'):
      train.train_and_evaluate(changed, workdir)
  assert _checkpoint_steps(workdir) == [2, 4]
  state = train.train_and_evaluate(_with(tiny_config, num_train_steps=6, batch_size=32, allow_config_change=True),
                                   workdir)
  assert int(state.step) == 6


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
