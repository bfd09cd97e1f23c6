"""The pure steps: they learn, stay finite, touch only their own network, and shard without changing results."""
import functools

import jax
import numpy as np
import pytest

from aigc_jax import input_pipeline, losses, models, optimizers, sharding, steps
from aigc_jax import state as state_lib


def _compiled_step(config, mesh, image_shape):
  gan = models.create_gan(config, image_shape)
  g_tx = optimizers.create_optimizer(config, 'generator')
  d_tx = optimizers.create_optimizer(config, 'discriminator')
  init, abstract = state_lib.sharded_initializer(mesh, gan=gan, g_tx=g_tx, d_tx=d_tx, image_shape=image_shape,
                                                 latent_dim=config.latent_dim)
  shardings = state_lib.shardings_of(abstract)
  step = jax.jit(functools.partial(steps.train_step, gan=gan, loss=losses.get_gan_loss(config.loss),
                                   g_tx=g_tx, d_tx=d_tx, latent_dim=config.latent_dim),
                 in_shardings=(shardings, sharding.batch_sharding(mesh), sharding.replicated(mesh)),
                 out_shardings=(shardings, sharding.replicated(mesh)))
  return init(jax.random.key(config.seed)), step


def _real_batches(config, count):
  builder = input_pipeline.get_builder(config)
  ds = input_pipeline.create_train_dataset(config, builder, process_index=0, process_count=1)
  return [jax.tree.map(np.asarray, element) for element in ds.take(count).as_numpy_iterator()]


def _leaves_differ(a, b):
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# The ResNet families (sngan_resnet, biggan) compile several times longer: tests/test_gan_models.py runs their
# steps (through the published configs, and 1 vs 8 devices class-conditionally) at smaller sizes.
_STEP_MODELS = sorted(set(models.GAN_FAMILIES) - set(models.FAMILY_OPTIONS))


@pytest.mark.parametrize('model', _STEP_MODELS)
def test_one_step_changes_params_and_keeps_them_finite(tiny_config, model):
  tiny_config.model = model
  state, step = _compiled_step(tiny_config, sharding.create_mesh(), (28, 28, 1))
  before = jax.device_get(state)
  (batch,) = _real_batches(tiny_config, 1)
  after, metrics = step(state, batch, jax.random.key(1))
  after = jax.device_get(after)
  assert int(after.step) == 1
  assert _leaves_differ(before.generator.params, after.generator.params)
  assert _leaves_differ(before.discriminator.params, after.discriminator.params)
  for tree in (after.generator, after.discriminator):
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(tree))
  assert all(np.isfinite(value) for value in jax.device_get(metrics).values())
  if model == 'dcgan':  # batch-norm running statistics move during training
    assert _leaves_differ(before.generator.variables, after.generator.variables)


def test_discriminator_step_leaves_the_generator_alone(tiny_config):
  gan = models.create_gan(tiny_config, (28, 28, 1))
  d_tx = optimizers.create_optimizer(tiny_config, 'discriminator')
  g_tx = optimizers.create_optimizer(tiny_config, 'generator')
  state = state_lib.init_train_state(jax.random.key(0), gan=gan, g_tx=g_tx, d_tx=d_tx, image_shape=(28, 28, 1),
                                     latent_dim=tiny_config.latent_dim)
  (batch,) = _real_batches(tiny_config, 1)
  loss = losses.get_gan_loss('non_saturating')
  one = jax.tree.map(lambda x: x[0], batch)
  after_d, d_metrics = steps.discriminator_step(state, one, jax.random.key(1), gan=gan, loss=loss, d_tx=d_tx,
                                                latent_dim=tiny_config.latent_dim)
  assert not _leaves_differ(state.generator, after_d.generator)
  assert _leaves_differ(state.discriminator.params, after_d.discriminator.params)
  assert 0 < float(d_metrics['d_real_prob']) < 1
  after_g, _ = steps.generator_step(state, one, jax.random.key(2), gan=gan, loss=loss, g_tx=g_tx,
                                    latent_dim=tiny_config.latent_dim)
  assert not _leaves_differ(state.discriminator, after_g.discriminator)
  assert _leaves_differ(state.generator.params, after_g.generator.params)


def test_n_critic_runs_that_many_discriminator_updates(tiny_config):
  tiny_config.n_critic = 3
  state, step = _compiled_step(tiny_config, sharding.create_mesh(), (28, 28, 1))
  (batch,) = _real_batches(tiny_config, 1)
  assert batch['image'].shape == (3, tiny_config.batch_size, 28, 28, 1)
  after, _ = step(state, batch, jax.random.key(1))
  # Adam's count in the discriminator's optimiser state advanced three times, the generator's once.
  d_count = [x for x in jax.tree.leaves(after.discriminator.opt_state) if x.dtype == np.int32]
  g_count = [x for x in jax.tree.leaves(after.generator.opt_state) if x.dtype == np.int32]
  assert d_count and {int(c) for c in d_count} == {3}
  assert g_count and {int(c) for c in g_count} == {1}


@pytest.mark.parametrize('model', _STEP_MODELS)
def test_sharded_over_8_devices_equals_1_device(tiny_config, model):
  assert jax.device_count() == 8
  tiny_config.model = model
  batches = _real_batches(tiny_config, 2)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    state, step = _compiled_step(tiny_config, sharding.create_mesh(devices), (28, 28, 1))
    for i, batch in enumerate(batches):
      state, metrics = step(state, batch, jax.random.key(7))
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (one, one_metrics), (eight, eight_metrics) = results
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  for name in one_metrics:
    np.testing.assert_allclose(one_metrics[name], eight_metrics[name], rtol=2e-4, atol=2e-5)
