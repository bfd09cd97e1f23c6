"""The evaluator, the digits classifier, the in-training hook, and the evaluate and sample CLIs, on real
offline digits with a quickly trained classifier in a temporary cache."""
import glob
import hashlib
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from aigc_jax import input_pipeline, latent_mixture, models, optimizers, state as state_lib, train
from aigc_jax import sharding as sharding_lib
from aigc_jax.config_errors import ConfigError
from aigc_jax.evaluation import digits_classifier, evaluator as evaluator_lib
from tests.conftest import REPO_ROOT, make_tiny_config

_CLASSIFIER_STEPS = 40  # a weak but real classifier: enough to test the plumbing in seconds


def _with_eval(config, cache_dir):
  config.eval.cache_dir = cache_dir
  config.eval.classifier_train_steps = _CLASSIFIER_STEPS
  config.eval.num_samples = 64
  config.eval.batch_size = 32
  config.eval.num_reference = 200
  config.eval.kid_subsets = 10
  config.eval.kid_subset_size = 50
  return config


def test_digits_classifier_trains_once_learns_and_is_reused(tfds_data_dir, eval_cache):
  first = digits_classifier.load_or_train(eval_cache, data_dir=tfds_data_dir, steps=_CLASSIFIER_STEPS)
  assert first.test_accuracy > 0.5  # chance is 0.1
  params_file, = glob.glob(os.path.join(eval_cache, 'digits_classifier', '*', 'params.msgpack'))
  written = os.stat(params_file).st_mtime_ns
  again = digits_classifier.load_or_train(eval_cache, data_dir=tfds_data_dir, steps=_CLASSIFIER_STEPS)
  assert os.stat(params_file).st_mtime_ns == written and again.test_accuracy == first.test_accuracy
  jax.tree.map(np.testing.assert_array_equal, again.params, first.params)


def test_the_published_classifier_is_loaded_not_trained_and_has_its_recorded_accuracy(tfds_data_dir, eval_cache,
                                                                                     tmp_path):
  # The default recipe's weights ship with the package: the same figures on every machine, nothing trained.
  published = digits_classifier.load_or_train(str(tmp_path), data_dir=tfds_data_dir, steps=600)
  assert not os.listdir(tmp_path)
  config = digits_classifier._digits_config(tfds_data_dir)  # pylint: disable=protected-access
  test_images = input_pipeline.real_images(config, input_pipeline.get_builder(config), 'test')
  assert digits_classifier.accuracy(published.params, *test_images) == published.test_accuracy >= 0.95
  with open(os.path.join(digits_classifier.PUBLISHED_DIR, published.recipe, 'params.msgpack'), 'rb') as f:
    assert published.fingerprint == hashlib.sha256(f.read()).hexdigest()[:12]
  other = digits_classifier.load_or_train(eval_cache, data_dir=tfds_data_dir, steps=_CLASSIFIER_STEPS)
  assert other.fingerprint != published.fingerprint and other.recipe != published.recipe


def _evaluate_fresh_state(config, devices):
  builder = train.prepare_dataset(config)
  info = input_pipeline.dataset_info(config, builder)
  gan = models.create_gan(config, info.image_shape)
  mesh = sharding_lib.create_mesh(devices)
  init, abstract = state_lib.sharded_initializer(
      mesh, gan=gan, g_tx=optimizers.create_optimizer(config, 'generator'),
      d_tx=optimizers.create_optimizer(config, 'discriminator'), image_shape=info.image_shape,
      latent_dim=config.model.latent_dim)
  evaluator = evaluator_lib.Evaluator(config, mesh=mesh, gan=gan, builder=builder, image_shape=info.image_shape,
                                      state_shardings=state_lib.shardings_of(abstract))
  return evaluator(init(jax.random.key(config.seed))), evaluator


def test_the_evaluator_gives_the_same_numbers_on_1_and_8_devices(tiny_config, eval_cache):
  config = _with_eval(tiny_config, eval_cache)
  on_one, _ = _evaluate_fresh_state(config, jax.devices()[:1])
  # The reference (200 train images) and the held-out split's features: computed once, then read back.
  references = [p for p in glob.glob(os.path.join(eval_cache, 'reference', '*.npz'))
                if 'mnist5k-train-size0-n200-' in p or 'mnist5k-test-size0-n0-' in p]
  assert len(references) == 2
  written = {p: os.stat(p).st_mtime_ns for p in references}
  on_eight, evaluator = _evaluate_fresh_state(config, jax.devices())
  assert {p: os.stat(p).st_mtime_ns for p in references} == written
  assert sorted(on_one) == sorted(on_eight) == sorted(
      f'digits_classifier_{m}' for m in ('fid', 'kid', 'kid_stderr', 'is', 'is_std', 'precision', 'recall',
                                         'rarest_class_share', 'nearest_train_ratio'))
  for name in on_one:
    assert on_eight[name] == pytest.approx(on_one[name], rel=1e-4, abs=1e-6), name
  # Sanity of the scale: an untrained generator is worse than the real-data floor, better than nothing.
  floor = evaluator.real_halves_baseline()
  assert floor['digits_classifier_fid'] < on_eight['digits_classifier_fid']
  assert floor['digits_classifier_precision'] > 0.5 and floor['digits_classifier_recall'] > 0.5


@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory, tfds_data_dir, eval_cache):
  """A real short training run with the evaluation hook on."""
  config = make_tiny_config(tfds_data_dir)
  config.sample_every_steps = 100
  config.num_sample_images = 64
  config.eval.every_steps = 2
  _with_eval(config, eval_cache)
  workdir = str(tmp_path_factory.mktemp('trained') / 'run')
  train.train_and_evaluate(config, workdir)
  return workdir


def _fid_by_step(workdir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  steps = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == 'eval/digits_classifier_fid':
          steps[event.step] = float(tf.make_ndarray(value.tensor))
  return steps


def test_training_writes_evaluation_scalars(trained_workdir):
  steps = _fid_by_step(trained_workdir)
  assert sorted(steps) == [2, 4] and all(np.isfinite(v) and v > 0 for v in steps.values())


def _run(module, *args):
  return subprocess.run([sys.executable, '-m', f'aigc_jax.{module}', *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=600)


def test_sample_cli_writes_npz_and_png(trained_workdir, tmp_path):
  # Sampling needs no data: image shape and classes were recorded by training; a data_dir that cannot exist
  # (under /proc) would fail any attempt to read or prepare the dataset.
  result = _run('sample', f'--workdir={trained_workdir}', '--num_samples=10', f'--output={tmp_path}/s.npz',
                '--seed=3', '--truncation=0.5', '--config.data.dir=/proc/no_such_data')
  assert result.returncode == 0, result.stderr[-2000:]
  with np.load(tmp_path / 's.npz') as data:
    images = data['images']
  assert images.dtype == np.uint8 and images.shape == (10, 28, 28, 1) and images.std() > 0
  assert 'at step 4 to' in result.stdout
  result = _run('sample', f'--workdir={trained_workdir}', '--num_samples=4', f'--output={tmp_path}/old.npz',
                '--step=2')
  assert result.returncode == 0 and 'at step 2 to' in result.stdout, result.stderr[-2000:]

  result = _run('sample', f'--workdir={trained_workdir}', '--num_samples=10', f'--output={tmp_path}/s.png')
  assert result.returncode == 0, result.stderr[-2000:]
  grid = np.asarray(Image.open(tmp_path / 's.png'))
  assert grid.shape == (2 + 3 * 30, 2 + 4 * 30)  # 10 images: 4 columns x 3 rows of 28 + 2 padding

  result = _run('sample', f'--workdir={trained_workdir}', '--num_samples=2', '--interpolate=5',
                f'--output={tmp_path}/strip.png')
  assert result.returncode == 0, result.stderr[-2000:]
  strip = np.asarray(Image.open(tmp_path / 'strip.png'))
  assert strip.shape == (2 + 2 * 30, 2 + 5 * 30)
  # The strip moves: its first and last images differ.
  assert not np.array_equal(strip[2:30, 2:30], strip[2:30, 2 + 4 * 30:30 + 4 * 30])


def test_evaluate_cli_prints_one_json_line(trained_workdir):
  result = _run('evaluate', f'--workdir={trained_workdir}', '--num_samples=32')
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1
  scores = json.loads(lines[0])
  assert scores['step'] == 4 and scores['num_samples'] == 32 and scores['num_reference'] == 200
  older = _run('evaluate', f'--workdir={trained_workdir}', '--num_samples=32', '--step=2')
  assert older.returncode == 0 and json.loads(older.stdout)['step'] == 2, older.stderr[-2000:]
  assert scores['feature_network'].startswith('digits_classifier') and 'inception_fid' not in scores
  assert np.isfinite(scores['digits_classifier_fid'])
  # Both lines are kept in the workdir, and the generator's scores are in TensorBoard at their steps.
  with open(os.path.join(trained_workdir, 'evaluations', 'evaluations.jsonl')) as f:
    kept = [json.loads(line) for line in f]
  assert kept == [scores, json.loads(older.stdout)]
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  logged = {}
  for path in glob.glob(os.path.join(trained_workdir, 'evaluations', 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == 'eval/digits_classifier_fid':
          logged[event.step] = float(tf.make_ndarray(value.tensor))
  assert logged == {4: pytest.approx(scores['digits_classifier_fid']), 2: pytest.approx(kept[1]['digits_classifier_fid'])}
  unrecorded = _run('evaluate', f'--workdir={trained_workdir}', '--num_samples=32', '--record=False')
  assert unrecorded.returncode == 0 and len(open(os.path.join(trained_workdir, 'evaluations', 'evaluations.jsonl')).readlines()) == 2


@pytest.mark.parametrize('module,args,message', [
    ('sample', ['--workdir={missing}', '--output={tmp}/x.npz'], "workdir '{missing}' does not exist"),
    ('sample', ['--workdir={empty}', '--output={tmp}/x.npz'], 'no checkpoint in workdir'),
    ('sample', ['--workdir={trained}', '--output={tmp}/x.jpg'], 'allowed: a file name ending in .npz or .png'),
    ('sample', ['--workdir={trained}', '--output={tmp}/x.npz', '--interpolate=4'], 'PNG strip'),
    ('sample', ['--workdir={trained}', '--output={tmp}/x.npz', '--label=3'], 'is unconditional'),
    ('sample', ['--workdir={trained}', '--output={tmp}/x.npz', '--step=3'],
     'has no checkpoint of step 3; allowed: 2, 4'),
    ('evaluate', ['--workdir={empty}'], 'no checkpoint in workdir'),
    ('evaluate', ['--workdir={trained}', '--config.eval.feature_network=inception',
                  '--config.eval.inception_weights={tmp}/none.pth'], 'Inception weights file not found'),
])
def test_cli_bad_input_is_one_clear_line(module, args, message, trained_workdir, tmp_path):
  (tmp_path / 'empty').mkdir()
  names = {'missing': str(tmp_path / 'missing'), 'empty': str(tmp_path / 'empty'), 'trained': trained_workdir,
           'tmp': str(tmp_path)}
  before = sorted(os.listdir(tmp_path))
  result = _run(module, *[a.format(**names) for a in args])
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and message.format(**names) in errors[0], result.stderr[-2000:]
  assert sorted(os.listdir(tmp_path)) == before


def test_vae_latent_mixture_is_fitted_once_per_scored_step(tfds_data_dir, eval_cache, tmp_path, monkeypatch):
  """A VAE that samples a latent mixture: training fits it for each step it draws grids or scores FID at, and
  that step's grids and FID share the one fit."""
  fits = []
  fit = latent_mixture.fit
  monkeypatch.setattr(latent_mixture, 'fit', lambda *args, **kwargs: fits.append(1) or fit(*args, **kwargs))
  config = _with_eval(make_tiny_config(tfds_data_dir), eval_cache)
  config.model.name = 'vae_mlp'
  config.model.latent_dim = 8
  config.vae.sampler = 'gmm'
  config.vae.gmm_components = 3
  config.eval.every_steps = 2
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  assert len(fits) == 2  # steps 2 and 4
  assert sorted(os.listdir(os.path.join(workdir, 'samples'))) == ['step_0000002.png', 'step_0000004.png']
  assert sorted(_fid_by_step(workdir)) == [2, 4]

  # Too few images for the mixture: one line, from the sample tool, and from training before any step.
  too_many = ['--config.vae.gmm_components=1000', '--config.vae.gmm_fit_examples=1500']
  result = _run('sample', f'--workdir={workdir}', '--num_samples=10', f'--output={tmp_path}/s.png', *too_many)
  assert result.returncode == 2 and not os.path.exists(tmp_path / 's.png')
  assert result.stderr.strip().splitlines()[-1].startswith(
      'error: config.vae.gmm_components=1000 is not allowed for 1500 training images'), result.stderr[-2000:]
  config.vae.gmm_components, config.vae.gmm_fit_examples = 1000, 1500
  with pytest.raises(ConfigError, match='gmm_components=1000 is not allowed'):
    train.train_and_evaluate(config, str(tmp_path / 'refused'))
  assert not os.path.exists(tmp_path / 'refused' / 'checkpoints')
