"""What a training run prints, and how it names its TensorBoard scalars: a real `python -m aigc_jax.main` run
on the offline digits."""
import glob
import os
import re
import subprocess
import sys

import pytest
from absl import logging

from aigc_jax import console

from tests.conftest import REPO_ROOT

_STEPS, _LOG_EVERY, _BATCH = 8, 2, 16


def _main(workdir, data_dir, cache_dir, *extra):
  args = ['--config=configs/mlp_gan_mnist.py', f'--workdir={workdir}', f'--config.data.dir={data_dir}',
          f'--config.batch_size={_BATCH}', f'--config.num_train_steps={_STEPS}', '--config.model.width_multiplier=0.125',
          '--config.data.shuffle_buffer=64', f'--config.log_every_steps={_LOG_EVERY}', '--config.sample_every_steps=4',
          '--config.checkpoint_every_steps=4', '--config.num_sample_images=4', '--config.eval.every_steps=4',
          f'--config.eval.cache_dir={cache_dir}', '--config.eval.classifier_train_steps=40',
          '--config.eval.num_samples=32', '--config.eval.batch_size=16', '--config.eval.num_reference=100',
          '--config.eval.kid_subsets=2', '--config.eval.kid_subset_size=16', '--config.optimizer.learning_rate=3e-4', *extra]
  return subprocess.run([sys.executable, '-m', 'aigc_jax.main', *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=600)


@pytest.fixture(scope='module')
def quiet_run(tmp_path_factory, eval_cache):
  workdir = tmp_path_factory.mktemp('console') / 'run'
  result = _main(workdir, tmp_path_factory.mktemp('tfds'), eval_cache)  # a first run: it prepares the data too
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir, (result.stdout + result.stderr).splitlines()


def test_the_console_prints_a_line_per_interval_and_evaluation_and_a_summary(quiet_run):
  workdir, all_lines = quiet_run
  # The digits classifier and the reference features are computed once per cache, with a line each time.
  lines = [line for line in all_lines if not re.search('digits classifier|computing reference features', line)]
  # A first run prepares its dataset: one line of ours, no progress bars and no TFDS download lines.
  preparing = [line for line in lines if ' preparing dataset mnist5k in ' in line]
  assert len(preparing) == 1 and preparing[0].endswith('(once for this data_dir)'), '\n'.join(all_lines)
  lines.remove(preparing[0])
  # Set-up (compile, devices), one line per interval, one per evaluation, the closing line; nothing else.
  assert len(lines) == 2 + _STEPS // _LOG_EVERY + _STEPS // 4 + 1, '\n'.join(all_lines)
  assert not [line for line in lines if re.search(r'oneDNN|tensorflow|Unable to initialize|dataset_info|'
                                                   r'Traceback|WARNING', line)]
  assert re.fullmatch(r'\d\d:\d\d:\d\d compiled the train step in [\d.]+ s; device memory: [\d.]+ GiB per device .*',
                      lines[0])
  intervals = [line for line in lines if re.match(r'\d\d:\d\d:\d\d step +\d+/8 ', line)]
  assert len(intervals) == _STEPS // _LOG_EVERY
  assert re.search(r'step 4/8  0\.1 kimg  [\d.]+ steps/s  ETA \dm\d\ds  d_loss [\d.]+  g_loss [\d.]+  '
                   r'd_acc_real [\d.]+  d_acc_fake [\d.]+$', intervals[1])
  evaluations = [line for line in lines if 'evaluation (digits_classifier): fid ' in line]
  assert len(evaluations) == 2 and 'precision' in evaluations[0]
  assert re.search(rf'done: step 8 of 8 \(8 this run, in \dm\d\ds\); d_loss .* digits_classifier_fid [\d.]+'
                   rf'( \(best [\d.]+ at step 4\))?; results in {re.escape(str(workdir))}$', lines[-1])


def test_the_closing_line_names_the_best_evaluation_when_it_was_not_the_last(caplog):
  progress = console.Progress(first_step=0, num_train_steps=6, images_per_step=64)
  with caplog.at_level(logging.INFO):
    progress.evaluation(2, {'digits_classifier_fid': 50.0, 'digits_classifier_recall': 0.5})
    progress.evaluation(4, {'digits_classifier_fid': 40.0, 'digits_classifier_recall': 0.6})
    progress.evaluation(6, {'digits_classifier_fid': 45.0, 'digits_classifier_recall': 0.7})
    progress.finish(6, '/w')
    progress.evaluation(8, {'digits_classifier_fid': 30.0})
    progress.evaluation(8, {'heldout_neg_elbo': 101.5})  # a second hook at the same step (a VAE's)
    progress.finish(8, '/w')
  first, second = [r.getMessage() for r in caplog.records if r.getMessage().startswith('done:')]
  assert 'digits_classifier_fid 45 (best 40 at step 4); results in /w' in first
  assert 'digits_classifier_fid 30  heldout_neg_elbo 101.5; results in /w' in second


def _scalars(workdir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if not value.tensor.tensor_shape.dim:  # not an image
          found.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
  return found


def test_tensorboard_groups_train_eval_perf_and_health_and_logs_rates_and_kimg(quiet_run):
  workdir, _ = quiet_run
  scalars = _scalars(workdir)
  assert {tag.split('/')[0] for tag in scalars} == {'train', 'eval', 'perf', 'health'}
  for tag in ('train/d_loss', 'train/g_loss', 'train/d_acc_real', 'train/d_acc_fake', 'perf/steps_per_sec',
              'perf/images_per_sec', 'health/skipped_steps'):
    assert sorted(scalars[tag]) == [2, 4, 6, 8], tag
  assert scalars['train/lr_generator'][8] == pytest.approx(3e-4)
  assert scalars['train/lr_discriminator'][8] == pytest.approx(3e-4)
  assert scalars['perf/kimg'] == {step: pytest.approx(step * _BATCH / 1000) for step in (2, 4, 6, 8)}
  assert all(0 <= v <= 1 for tag in ('train/d_acc_real', 'train/d_acc_fake') for v in scalars[tag].values())
  assert sorted(scalars['eval/digits_classifier_fid']) == [4, 8]


def test_verbosity_brings_the_library_lines_back(tmp_path, tfds_data_dir, eval_cache):
  result = _main(tmp_path / 'run', tfds_data_dir, eval_cache, '--verbosity=1', '--config.eval.every_steps=0')
  assert result.returncode == 0, result.stderr[-3000:]
  output = result.stdout + result.stderr
  # JAX's backend lines and TFDS' info lines. (TensorFlow's C++ start-up lines depend on the CPU: oneDNN's
  # where it is on, none on some AMD EPYCs.)
  assert 'Unable to initialize backend' in output and 'dataset_builder.py' in output
  assert re.search(r'I\d{4} [\d:.]+ +\d+ console\.py:\d+\] step 8/8', output)  # absl's full prefix
