"""The pure steps: they learn, stay finite, touch only their own network, and shard without changing results."""
import functools

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from aigc_jax import gan_steps, losses, models, optimizers, sharding
from aigc_jax import state as state_lib
from tests import compiled_steps


def _leaves_differ(a, b):
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# The ResNet families (sngan_resnet, biggan) compile several times longer: tests/test_gan_models.py runs their
# steps (through the published configs, and 1 vs 8 devices class-conditionally) at smaller sizes.
_STEP_MODELS = sorted(set(models.GAN_FAMILIES) - {'sngan_resnet', 'biggan'})


@pytest.mark.parametrize('model', _STEP_MODELS)
def test_one_step_changes_params_and_keeps_them_finite(tiny_config, model):
  tiny_config.model.name = model
  _, state, step, _ = compiled_steps.compiled_train_step(tiny_config, sharding.create_mesh())
  before = jax.device_get(state)
  (batch,) = compiled_steps.real_batches(tiny_config, 1)
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
                                     latent_dim=tiny_config.model.latent_dim)
  (batch,) = compiled_steps.real_batches(tiny_config, 1)
  loss = losses.get_gan_loss('non_saturating')
  one = jax.tree.map(lambda x: x[0], batch)
  after_d, d_metrics = gan_steps.discriminator_step(state, one, jax.random.key(1), gan=gan, loss=loss, d_tx=d_tx,
                                                latent_dim=tiny_config.model.latent_dim)
  assert not _leaves_differ(state.generator, after_d.generator)
  assert _leaves_differ(state.discriminator.params, after_d.discriminator.params)
  assert 0 < float(d_metrics['d_real_prob']) < 1
  after_g, _ = gan_steps.generator_step(state, one, jax.random.key(2), gan=gan, loss=loss, g_tx=g_tx,
                                    latent_dim=tiny_config.model.latent_dim)
  assert not _leaves_differ(state.discriminator, after_g.discriminator)
  assert _leaves_differ(state.generator.params, after_g.generator.params)


def test_n_critic_runs_that_many_discriminator_updates(tiny_config):
  tiny_config.gan.n_critic = 3
  _, state, step, _ = compiled_steps.compiled_train_step(tiny_config, sharding.create_mesh())
  (batch,) = compiled_steps.real_batches(tiny_config, 1)
  assert batch['image'].shape == (3, tiny_config.batch_size, 28, 28, 1)
  after, _ = step(state, batch, jax.random.key(1))
  # Adam's count in the discriminator's optimiser state advanced three times, the generator's once.
  d_count = [x for x in jax.tree.leaves(after.discriminator.opt_state) if x.dtype == np.int32]
  g_count = [x for x in jax.tree.leaves(after.generator.opt_state) if x.dtype == np.int32]
  assert d_count and {int(c) for c in d_count} == {3}
  assert g_count and {int(c) for c in g_count} == {1}


@pytest.mark.parametrize('model', _STEP_MODELS)
def test_sharded_over_8_devices_equals_1_device(tiny_config, model, eight_point_winograd_tiles):
  assert jax.device_count() == 8
  tiny_config.model.name = model
  batches = compiled_steps.real_batches(tiny_config, 2)
  _, one_init, one_step, _ = compiled_steps.compiled_train_step(tiny_config, sharding.create_mesh(jax.devices()[:1]))
  _, eight_init, eight_step, _ = compiled_steps.compiled_train_step(tiny_config, sharding.create_mesh(jax.devices()))
  for a, b in zip(jax.tree.leaves(jax.device_get(one_init)), jax.tree.leaves(jax.device_get(eight_init))):
    np.testing.assert_array_equal(a, b)
  # Each step starts both meshes from the same state. Carried over separately, the rounding differences
  # of one step (summation order, 1 vs 8 devices) move a few pre-activations across LeakyReLU's kink in the
  # next, which changed the dcgan's small gradient elements by up to ~5e-3 of the largest after two steps
  # (measured): chaos, not a sharding error, and it needed loose tolerances that could hide one.
  # Within a step Adam moves each parameter by about learning_rate * sign(gradient), so the few whose
  # gradient is at rounding level may move either way: those (at most 0.1 %) may differ by 2 x the rate.
  rate = tiny_config.optimizer.learning_rate
  state = jax.device_get(one_init)
  for batch in batches:
    one, one_metrics = jax.device_get(one_step(state, batch, jax.random.key(7)))
    eight, eight_metrics = jax.device_get(eight_step(state, batch, jax.random.key(7)))
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
      apart = ~np.isclose(a, b, rtol=2e-4, atol=2e-5)
      assert apart.mean() <= 1e-3 and np.all(np.abs(a - b)[apart] <= 2 * rate + 2e-5), (
          f'{apart.sum()} of {apart.size} elements differ, by up to {np.max(np.abs(a - b))}')
    for name in one_metrics:
      np.testing.assert_allclose(one_metrics[name], eight_metrics[name], rtol=2e-4, atol=2e-5)
    state = one


class _BatchNormDiscriminator(nn.Module):
  """A D whose outputs couple the samples of its batch: `gan_steps.discriminate`'s one-call path."""

  @nn.compact
  def __call__(self, images, train: bool = True):
    x = nn.Dense(8)(images.reshape(images.shape[0], -1))
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    return nn.Dense(1)(x)[:, 0]


@pytest.mark.parametrize('discriminator', ['dcgan', 'batch_norm'])
def test_simultaneous_update_is_the_two_tape_step(tiny_config, discriminator, eight_point_winograd_tiles):
  # dcgan: batch norm in G and dropout in D, so the keys and D's two calls (one per half, differentiated
  # apart) must match too; batch_norm: a D with batch statistics, seen in one call. With SGD at learning
  # rate 1 the update is minus the gradient, which we compare with the definition written out: D's loss
  # differentiated to D's weights (fakes held fixed), G's loss to G's weights through the same D.
  tiny_config.model.name = 'dcgan'
  image_shape = (28, 28, 1)
  gan = models.create_gan(tiny_config, image_shape)
  if discriminator == 'batch_norm':
    gan = gan._replace(discriminator=_BatchNormDiscriminator())
  sgd = optax.sgd(1.0)
  state = state_lib.init_train_state(jax.random.key(0), gan=gan, g_tx=sgd, d_tx=sgd, image_shape=image_shape,
                                     latent_dim=tiny_config.model.latent_dim)
  (batch,) = compiled_steps.real_batches(tiny_config, 1)
  one = jax.tree.map(lambda x: x[0], batch)
  loss = losses.get_gan_loss('non_saturating')
  key = jax.random.key(3)
  after, d_metrics, g_metrics = jax.jit(functools.partial(
      gan_steps.simultaneous_update, gan=gan, loss=loss, g_tx=sgd, d_tx=sgd, latent_dim=tiny_config.model.latent_dim))(
          state, one, key)

  z_rng, g_rng, d_rng, _ = gan_steps._split(key, gan)
  z = gan_steps._latents(z_rng, tiny_config.batch_size, tiny_config.model.latent_dim)
  real = one['image']

  def d_outputs(g_params, d_params):
    fake, _ = gan_steps.apply_network(gan.generator, state.generator, z, train=True, rng=g_rng, params=g_params)
    real_out, fake_out, _ = gan_steps.discriminate(gan, state.discriminator, (real, fake), d_rng,
                                               params=d_params, labels=None)
    return real_out, fake_out

  g_params, d_params = state.generator.params, state.discriminator.params
  d_grads = jax.jit(jax.grad(lambda p: loss.discriminator(*d_outputs(jax.lax.stop_gradient(g_params), p))))(d_params)
  g_grads = jax.jit(jax.grad(lambda p: loss.generator(d_outputs(p, d_params)[1])))(g_params)
  for new, old, grad in ((after.discriminator.params, d_params, d_grads), (after.generator.params, g_params, g_grads)):
    for a, b, g in zip(jax.tree.leaves(new), jax.tree.leaves(old), jax.tree.leaves(grad)):
      np.testing.assert_allclose(a, b - g, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(g_metrics['g_loss'], loss.generator(d_outputs(g_params, d_params)[1]), rtol=1e-6)
  # D's half is exactly the alternating discriminator step with the same key.
  alternating, alternating_metrics = jax.jit(functools.partial(
      gan_steps.discriminator_step, gan=gan, loss=loss, d_tx=sgd, latent_dim=tiny_config.model.latent_dim))(state, one, key)
  for a, b in zip(jax.tree.leaves(after.discriminator.params), jax.tree.leaves(alternating.discriminator.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(d_metrics['d_loss'], alternating_metrics['d_loss'], rtol=1e-6)
  # G's batch-norm statistics come from its one forward pass; D's, when it has them, from its own.
  assert _leaves_differ(state.generator.variables, after.generator.variables)
  assert gan_steps.couples_samples(state.discriminator) == (discriminator == 'batch_norm')
  for a, b in zip(jax.tree.leaves(after.discriminator.variables), jax.tree.leaves(alternating.discriminator.variables)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_simultaneous_train_step_runs_through_the_family(tiny_config):
  tiny_config.gan.update_scheme = 'simultaneous'
  tiny_config.gan.ema_decay = 0.9
  tiny_config.gan.r1_gamma, tiny_config.gan.r1_every = 1.0, 1
  _, state, step, _ = compiled_steps.compiled_train_step(tiny_config, sharding.create_mesh())
  (batch,) = compiled_steps.real_batches(tiny_config, 1)
  for _ in range(2):
    state, metrics = step(state, batch, jax.random.key(1))
  assert int(state.step) == 2
  d_count = [x for x in jax.tree.leaves(state.discriminator.opt_state) if x.dtype == np.int32]
  g_count = [x for x in jax.tree.leaves(state.generator.opt_state) if x.dtype == np.int32]
  assert {int(c) for c in d_count} == {2} and {int(c) for c in g_count} == {2}
  assert {'d_loss', 'g_loss', 'd_r1', 'd_grad_norm', 'g_grad_norm'} <= set(metrics)
  assert all(np.isfinite(v) for v in jax.device_get(metrics).values())
  assert int(metrics['skipped_steps']) == 0


def test_bfloat16_dcgan_step_keeps_float32_state(tiny_config):
  # Activations compute in bf16 (flax's layers: the CPU fast path is float32 only); params and optimiser
  # state stay float32.
  tiny_config.model.name, tiny_config.compute_dtype = 'dcgan', 'bfloat16'
  _, state, step, _ = compiled_steps.compiled_train_step(tiny_config, sharding.create_mesh())
  (batch,) = compiled_steps.real_batches(tiny_config, 1)
  after, metrics = step(state, batch, jax.random.key(1))
  assert _leaves_differ(state.discriminator.params, after.discriminator.params)
  assert {leaf.dtype for leaf in jax.tree.leaves(after.generator.params)} == {np.dtype(np.float32)}
  assert all(np.isfinite(v) for v in jax.device_get(metrics).values())
