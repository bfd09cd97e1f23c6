"""Fault injection through the real entry points, run as subprocesses, as a user (or a cluster) would hit them.

Every case checks the same promises (the README's reliability table): the error, if any, is one `error:`
line with no traceback; the newest good checkpoint is still there; and training resumed from it ends
bit-identical to a run that was never disturbed. Process-level faults of multi-process runs are in
`test_multihost.py`; in-process faults (NaN steps, config changes on resume) in `test_reliability.py`.
"""
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from aigc_jax import checkpointing, train
from tests.conftest import REPO_ROOT, make_tiny_config, snapshot_files

pytestmark = pytest.mark.slow

STEPS = 4  # the shared run: checkpoints at 2 and 4
WATCHDOG_S = 300
# evaluate's digits classifier: test_evaluation's short recipe, so a test worker trains it once (in eval_cache).
CLASSIFIER_STEPS = 40


def _run(module, *args, timeout=WATCHDOG_S):
  return subprocess.run([sys.executable, '-m', f'aigc_jax.{module}', *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=timeout)


def _train_args(config, workdir, **overrides):
  fields = {'data.dir': config.data.dir, 'batch_size': config.batch_size,
            'model.width_multiplier': config.model.width_multiplier, 'data.shuffle_buffer': config.data.shuffle_buffer,
            'num_sample_images': config.num_sample_images, 'num_train_steps': config.num_train_steps,
            'checkpoint_every_steps': config.checkpoint_every_steps, 'sample_every_steps': 100_000,
            'log_every_steps': config.log_every_steps, **overrides}
  return ['--config=configs/base.py', f'--workdir={workdir}'] + [f'--config.{k}={v}' for k, v in fields.items()]


def _eval_flags(cache):
  return [f'--config.eval.cache_dir={cache}', f'--config.eval.classifier_train_steps={CLASSIFIER_STEPS}']


def _assert_clean(result, status=0):
  """Exit status as expected, no traceback, and at most one `error:` line, the last line of stderr."""
  assert result.returncode == status, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error:')]
  if status:
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr[-3000:]
  else:
    assert not errors, errors


def _steps(workdir):
  return sorted(int(name) for name in os.listdir(os.path.join(workdir, 'checkpoints')) if name.isdigit())


def _params_at(workdir, step, like):
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'), keep=100, read_only=True)
  try:
    return jax.device_get(checkpointer.restore_state(step, like))
  finally:
    checkpointer.close()


def _assert_bit_identical(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope='module')
def reference(tfds_data_dir, tmp_path_factory):
  """A run trained once to STEPS (the run every case damages or disturbs), and `state(step)`: the state
  of an undisturbed run at `step`, trained in this process on demand."""
  config = make_tiny_config(tfds_data_dir)
  config.num_train_steps = STEPS
  config.sample_every_steps = 100_000
  workdir = str(tmp_path_factory.mktemp('reference') / 'run')
  train.train_and_evaluate(config, workdir)
  states = {}

  def state(step):
    if step not in states:
      long_config = config.copy_and_resolve_references()
      long_config.num_train_steps = step
      long_config.checkpoint_every_steps = 100_000
      states[step] = jax.device_get(train.train_and_evaluate(long_config, str(tmp_path_factory.mktemp('straight'))))
    return states[step]
  return config, workdir, state


def _truncate_chunks(checkpoint):
  for path in glob.glob(os.path.join(checkpoint, 'state', 'd', '*')):
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)


def _delete_manifest(checkpoint):
  os.remove(os.path.join(checkpoint, 'state', 'manifest.ocdbt'))


def _bad_config_json(checkpoint):
  with open(os.path.join(checkpoint, 'config', 'metadata'), 'w') as f:
    f.write('{"model": ')


def _damaged_iterator(checkpoint):
  for path in glob.glob(os.path.join(checkpoint, 'data', '*.data-*')):
    with open(path, 'r+b') as f:
      f.truncate(7)


DAMAGE = {'truncated chunk': _truncate_chunks, 'deleted manifest': _delete_manifest,
          'bad JSON in the config item': _bad_config_json, 'damaged iterator state': _damaged_iterator}
# What the newest checkpoint's damage means to `sample`, which reads the state and config only.
SAMPLE_FALLS_BACK = {'truncated chunk': True, 'deleted manifest': True, 'bad JSON in the config item': True,
                     'damaged iterator state': False}


@pytest.mark.parametrize('damage', sorted(DAMAGE))
def test_damaged_newest_checkpoint(damage, reference, tmp_path):
  config, trained, state = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  DAMAGE[damage](os.path.join(workdir, 'checkpoints', str(STEPS)))
  before = snapshot_files(workdir)

  # The tools fall back past a checkpoint they cannot read, and change nothing.
  sampled = _run('sample', f'--workdir={workdir}', '--num_samples=4', f'--output={tmp_path}/samples.npz')
  _assert_clean(sampled)
  expected_step = STEPS - 2 if SAMPLE_FALLS_BACK[damage] else STEPS
  assert f'at step {expected_step} to' in sampled.stdout, sampled.stdout
  assert (f'checkpoints/{STEPS} is unusable' in sampled.stderr) == SAMPLE_FALLS_BACK[damage], sampled.stderr[-3000:]
  assert snapshot_files(workdir) == before

  # Training warns once, moves the checkpoint aside (kept), resumes from the one before, and ends exactly
  # where an undisturbed run ends.
  resumed = _run('main', *_train_args(config, workdir, num_train_steps=STEPS + 2))
  _assert_clean(resumed)
  assert len(re.findall(rf'checkpoints/{STEPS} is unusable', resumed.stderr)) == 1, resumed.stderr[-3000:]
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', f'{STEPS}.corrupt'))
  assert _steps(workdir) == [STEPS - 2, STEPS, STEPS + 2]
  _assert_bit_identical(_params_at(workdir, STEPS + 2, state(STEPS + 2)), state(STEPS + 2))


def test_evaluate_falls_back_past_a_damaged_checkpoint_and_changes_nothing(reference, eval_cache, tmp_path):
  _, trained, _ = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  _truncate_chunks(os.path.join(workdir, 'checkpoints', str(STEPS)))
  before = snapshot_files(workdir)
  result = _run('evaluate', f'--workdir={workdir}', '--num_samples=16', '--config.eval.num_reference=16',
                *_eval_flags(eval_cache))
  _assert_clean(result)
  assert '"step": 2,' in result.stdout and f'checkpoints/{STEPS} is unusable' in result.stderr
  # What training wrote is unchanged; the scores are kept beside it, in evaluations/.
  after = snapshot_files(workdir)
  assert {path: digest for path, digest in after.items() if not path.startswith('evaluations/')} == before
  with open(os.path.join(workdir, 'evaluations', 'evaluations.jsonl')) as f:
    assert [json.loads(line)['step'] for line in f] == [2]


def test_no_usable_checkpoint_is_one_line_for_the_tools(reference, tmp_path):
  _, trained, _ = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  for step in (2, STEPS):
    _delete_manifest(os.path.join(workdir, 'checkpoints', str(step)))
  before = snapshot_files(workdir)
  result = _run('sample', f'--workdir={workdir}', '--num_samples=4', f'--output={tmp_path}/samples.npz')
  _assert_clean(result, status=1)
  assert 'no usable checkpoint' in result.stderr and 'steps 4, 2 all failed' in result.stderr
  assert snapshot_files(workdir) == before and not os.path.exists(tmp_path / 'samples.npz')


def test_tools_never_touch_a_save_in_flight(reference, tmp_path):
  """`sample` and `evaluate` beside a training run: what an unfinished save left is not theirs to clean."""
  _, trained, _ = reference
  workdir = str(tmp_path / 'run')
  shutil.copytree(trained, workdir)
  in_flight = os.path.join(workdir, 'checkpoints', f'{STEPS + 2}.orbax-checkpoint-tmp-1234')
  os.makedirs(os.path.join(in_flight, 'state'))
  before = snapshot_files(workdir)
  result = _run('sample', f'--workdir={workdir}', '--num_samples=4', f'--output={tmp_path}/samples.png')
  _assert_clean(result)
  assert os.path.isdir(in_flight) and snapshot_files(workdir) == before


def test_sample_and_evaluate_beside_a_training_run_that_saves_every_two_steps(reference, eval_cache, tmp_path):
  config, _, state = reference
  workdir = str(tmp_path / 'run')
  log = open(tmp_path / 'training.log', 'w+')  # pylint: disable=consider-using-with
  training = subprocess.Popen([sys.executable, '-m', 'aigc_jax.main', *_train_args(
      config, workdir, num_train_steps=100_000, checkpoint_every_steps=2, keep_checkpoints=100_000)],
      cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
  try:
    deadline = time.time() + WATCHDOG_S
    while not (os.path.isdir(os.path.join(workdir, 'checkpoints')) and _steps(workdir)):
      assert training.poll() is None and time.time() < deadline, 'training ended before its first checkpoint'
      time.sleep(0.2)
    tools = [_run('sample', f'--workdir={workdir}', '--num_samples=4', f'--output={tmp_path}/s.npz')]
    tools.append(_run('evaluate', f'--workdir={workdir}', '--num_samples=16', '--config.eval.num_reference=16',
                      *_eval_flags(eval_cache)))
    still_training = training.poll() is None
    training.send_signal(signal.SIGTERM)
    training.wait(timeout=WATCHDOG_S)
  finally:
    training.kill()
  log.seek(0)
  stderr = log.read()
  for result in tools:
    _assert_clean(result)
    assert 'removing' not in result.stderr and 'unusable' not in result.stderr, result.stderr[-3000:]
  assert still_training, 'training ended before the tools did: the test proved nothing'
  assert training.returncode == 0 and 'Traceback' not in stderr, stderr[-3000:]
  assert not re.search(r'^error:|unusable|NOT_FOUND', stderr, re.M), stderr[-3000:]
  # Every save went through, those made while the tools read too (from step 2 on): step STEPS + 2 matches.
  saved = [step for step in _steps(workdir) if step % 2 == 0]  # and the step it stopped at
  assert saved == list(range(2, saved[-1] + 1, 2)) and saved[-1] > STEPS + 2, saved
  _assert_bit_identical(_params_at(workdir, STEPS + 2, state(STEPS + 2)), state(STEPS + 2))


def test_kill_9_at_random_moments_during_saves_then_resume_is_bit_identical(reference, tmp_path):
  config, _, state = reference
  workdir = str(tmp_path / 'run')
  rng = random.Random(0)
  for _ in range(2):
    committed = _steps(workdir) if os.path.isdir(os.path.join(workdir, 'checkpoints')) else []
    process = subprocess.Popen([sys.executable, '-m', 'aigc_jax.main', *_train_args(
        config, workdir, num_train_steps=100_000, checkpoint_every_steps=1, keep_checkpoints=2,
        log_every_steps=100_000)], cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      deadline = time.time() + WATCHDOG_S
      # This process has committed a checkpoint of its own and is writing the next one.
      while not (os.path.isdir(os.path.join(workdir, 'checkpoints'))
                 and max(_steps(workdir), default=0) > max(committed, default=0)
                 and glob.glob(os.path.join(workdir, 'checkpoints', '*.orbax-checkpoint-tmp*'))):
        assert process.poll() is None and time.time() < deadline, 'no save in flight seen'
        time.sleep(0.002)
      time.sleep(rng.uniform(0, 0.05))  # somewhere in that save, or just after it
      process.kill()
    finally:
      process.kill()
      process.wait()
  steps = _steps(workdir)
  assert steps, 'no committed checkpoint survived the kills'
  resume = config.copy_and_resolve_references()  # in this process: the kills are what is under test
  resume.num_train_steps, resume.checkpoint_every_steps, resume.sample_every_steps = steps[-1] + 2, 1, 100_000
  resumed = train.train_and_evaluate(resume, workdir)
  assert not glob.glob(os.path.join(workdir, 'checkpoints', '*.orbax-checkpoint-tmp*'))
  _assert_bit_identical(jax.device_get(resumed), state(steps[-1] + 2))


def test_full_disk_is_one_line_naming_the_save_that_failed(reference, small_filesystem):
  config, trained, state = reference
  workdir = str(small_filesystem / 'run')
  shutil.copytree(trained, workdir)
  filler = small_filesystem / 'filler'
  descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT)
  try:
    while True:
      os.write(descriptor, b'\0' * (64 << 10))
  except OSError:
    pass
  finally:
    os.close(descriptor)
  os.truncate(filler, os.path.getsize(filler) - (256 << 10))  # room to start, not for a checkpoint
  result = _run('main', *_train_args(config, workdir, num_train_steps=STEPS + 4))
  _assert_clean(result, status=1)
  assert re.search(rf'^error: saving checkpoint {STEPS + 2} in .* failed \(.*(No space left on device|'
                   rf'RESOURCE_EXHAUSTED|ResourceExhausted).*\); the last good checkpoint is .*/checkpoints/{STEPS}$',
                   result.stderr, re.M), result.stderr[-3000:]
  filler.unlink()
  assert _steps(workdir) == [STEPS - 2, STEPS]
  resumed = _run('main', *_train_args(config, workdir, num_train_steps=STEPS + 2))
  _assert_clean(resumed)
  _assert_bit_identical(_params_at(workdir, STEPS + 2, state(STEPS + 2)), state(STEPS + 2))


def test_sigterm_during_set_up_exits_0_with_one_line_and_writes_nothing(reference, tmp_path):
  config, _, _ = reference
  workdir = tmp_path / 'run'
  process = subprocess.Popen([sys.executable, '-m', 'aigc_jax.main', *_train_args(config, str(workdir))],
                             cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  try:
    for line in process.stderr:  # the set-up has begun: the dataset is being read
      if 'dataset' in line.lower() or 'tf.data' in line:
        process.send_signal(signal.SIGTERM)
        break
    stderr = process.communicate(timeout=WATCHDOG_S)[1]
  finally:
    process.kill()
  assert process.returncode == 0, stderr[-3000:]
  assert 'Traceback' not in stderr
  assert re.search(r'stopped on request during set-up \(.*\), before the first step; no checkpoint was written',
                   stderr), stderr[-3000:]
  assert not workdir.exists()


@pytest.mark.parametrize('bad', ['data.train_split=bogus', 'data.image_key=bogus'])
def test_errors_found_while_preparing_leave_no_workdir_behind(bad, reference, tmp_path):
  config, _, _ = reference
  workdir = tmp_path / 'new_run'
  key, value = bad.split('=')
  result = _run('main', *_train_args(config, str(workdir), **{key: value}))
  _assert_clean(result, status=2)
  assert f"config.{key}='bogus' is not" in result.stderr
  assert not workdir.exists()


@pytest.mark.parametrize('tool, override, message', [
    ('sample', '--config.bogus=1', "unknown config key 'bogus'; allowed keys of config: allow_config_change"),
    ('evaluate', '--config.eval.bogus=1', "unknown config key 'eval.bogus'; allowed keys of config.eval: batch_size"),
])
def test_tools_unknown_config_key_is_one_line(tool, override, message, reference, tmp_path):
  _, trained, _ = reference
  before = snapshot_files(trained)
  result = _run(tool, f'--workdir={trained}', f'--output={tmp_path}/s.npz' if tool == 'sample' else '--num_samples=16',
                override)
  _assert_clean(result, status=2)
  assert message in result.stderr
  assert snapshot_files(trained) == before
