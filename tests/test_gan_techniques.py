"""Every GAN technique at once, through the real loop: R1 (lazy) + WGAN-GP + DiffAugment + EMA + FSDP +
bfloat16 on real offline digits; exact resume; the sample and evaluate paths on its sharded EMA state."""
import glob
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import gan_steps, restored_run, train
from aigc_jax.config_checks import ConfigError
from aigc_jax.evaluation import evaluator as evaluator_lib
from tests.conftest import make_tiny_config


def _all_on(data_dir):
  config = make_tiny_config(data_dir)
  config.compute_dtype = 'bfloat16'
  config.gan.r1_gamma, config.gan.r1_every = 1.0, 2     # R1 on D updates 0 and 2 of 4
  config.gan.gp_weight = 10.0
  config.gan.augment_p, config.gan.augment_policy = 0.5, 'color,translation,cutout'
  config.gan.ema_decay, config.gan.ema_start_step = 0.9, 2
  config.fsdp_devices, config.param_sharding = 2, 'fsdp'
  config.sample_every_steps = 4
  return config


@pytest.fixture(scope='module')
def all_on_run(tfds_data_dir, tmp_path_factory):
  config = _all_on(tfds_data_dir)
  workdir = str(tmp_path_factory.mktemp('all_on') / 'run')
  return config, workdir, train.train_and_evaluate(config, workdir)


def _scalars(workdir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tensor.tensor_shape.dim:  # images
          continue
        found.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
  return found


def test_every_technique_at_once_trains_logs_and_keeps_float32_state(all_on_run):
  _, workdir, state = all_on_run
  assert int(state.step) == 4 and int(state.skipped_steps) == 0
  scalars = _scalars(workdir)
  # R1 ran on D updates 0 and 2 (steps 1 and 3): each logging window of two steps has one value.
  assert sorted(scalars['train/d_r1']) == [2, 4] and all(v > 0 for v in scalars['train/d_r1'].values())
  assert sorted(scalars['train/d_gp']) == [2, 4] and all(np.isfinite(v) for v in scalars['train/d_gp'].values())
  for leaf in jax.tree.leaves((state.generator, state.discriminator, state.generator_ema)):
    assert leaf.dtype in (np.float32, np.int32), leaf.dtype  # bfloat16 compute, float32 state
  kernel = state.generator_ema.params['Dense_3']['kernel']
  assert 'fsdp' in kernel.sharding.spec and not np.array_equal(kernel, state.generator.params['Dense_3']['kernel'])


def test_resume_with_every_technique_is_exact(all_on_run, tmp_path):
  config, workdir, straight = all_on_run
  # The straight run's checkpoint after step 2 is what an interrupted run leaves: resume from it to step 4.
  resumed_dir = tmp_path / 'resumed'
  shutil.copytree(os.path.join(workdir, 'checkpoints', '2'), resumed_dir / 'checkpoints' / '2')
  resumed = train.train_and_evaluate(config, str(resumed_dir))
  assert int(resumed.step) == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed), jax.device_get(straight))


def test_turning_ema_on_or_off_on_resume_is_one_config_error(all_on_run, tmp_path):
  config, workdir, _ = all_on_run
  config = config.copy_and_resolve_references()
  config.gan.ema_decay = 0.0
  with pytest.raises(ConfigError, match='^config.gan.ema_decay=0.0 turns the generator EMA off, but the checkpoint'):
    train.train_and_evaluate(config, workdir)
  with pytest.raises(ConfigError, match='^config.gan.ema_decay=0.0 turns the generator EMA off.*allowed: ema_decay > 0, or no --config'):
    restored_run.restore(workdir, {'gan.ema_decay': 0.0})


def _mean_pool_network():
  """A tiny deterministic feature network: 4x4 mean pools as features, their first 10 as logits."""
  def apply(variables, images):
    del variables
    pooled = jax.lax.reduce_window(images, 0.0, jax.lax.add, (1, 4, 4, 1), (1, 4, 4, 1), 'VALID') / 16
    features = pooled.reshape(images.shape[0], -1)
    return features, features[:, :10]
  return evaluator_lib.FeatureNetwork('pool', 'pool-v1', apply, {})


def test_sample_and_evaluate_use_the_ema_generator_on_the_sharded_mesh(all_on_run, tmp_path):
  _, workdir, _ = all_on_run
  run = restored_run.restore(workdir, {'eval.cache_dir': str(tmp_path), 'eval.num_samples': 32,
                                       'eval.batch_size': 16, 'eval.num_reference': 64})
  assert tuple(run.mesh.devices.shape) == (4, 2)
  assert 'fsdp' in run.state.generator.params['Dense_0']['kernel'].sharding.spec
  z = jax.random.normal(jax.random.split(jax.random.key(0))[0], (8, run.config.model.latent_dim))  # sample --seed=0
  generate = lambda state, use_ema: np.clip(np.rint((np.asarray(gan_steps.generate(
      jax.device_get(state), jnp.asarray(z), gan=run.family.modules, use_ema=use_ema)) + 1) * 127.5), 0, 255).astype(np.uint8)
  images = restored_run.generate_images(run, z)
  np.testing.assert_allclose(images, generate(run.state, True), atol=1)  # EMA by default
  # The EMA generator is a different network from the raw one (so the check above can tell them apart).
  assert not np.array_equal(generate(run.state, True), generate(run.state, False))

  raw_run = restored_run.restore(workdir, {'eval.cache_dir': str(tmp_path), 'gan.sample_with_ema': False})
  np.testing.assert_allclose(restored_run.generate_images(raw_run, z), generate(run.state, False), atol=1)

  evaluator = evaluator_lib.Evaluator(run.config, mesh=run.mesh, gan=run.family.modules, builder=run.builder,
                                      image_shape=run.info.image_shape, state_shardings=run.state_shardings,
                                      network=_mean_pool_network())
  assert evaluator.uses_ema
  with_ema, _, _ = evaluator.generated_features(run.state)
  # The same latents through the EMA generator, on the host: the evaluator scored the EMA's samples.
  latents = jax.random.normal(jax.random.fold_in(jax.random.key(run.config.eval.seed), 0), (16, run.config.model.latent_dim))
  expected, _ = _mean_pool_network().apply({}, gan_steps.generate(jax.device_get(run.state), latents, gan=run.family.modules,
                                                              use_ema=True))
  np.testing.assert_allclose(with_ema[:16], expected, rtol=2e-2, atol=2e-2)
  scores = evaluator(run.state)
  assert np.isfinite(scores['pool_fid'])
