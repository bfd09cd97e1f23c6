"""The generator EMA: update arithmetic, the start step, inside the compiled step (skips included), its own
batch statistics, and sampling from it."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import ema, gan_steps, models, sharding
from aigc_jax import state as state_lib
from tests import compiled_steps
from tests.conftest import make_tiny_config


def test_update_arithmetic_and_start_step():
  ema_params = {'w': jnp.array([1.0, 2.0]), 'b': jnp.array(np.nan)}
  params = {'w': jnp.array([3.0, 6.0]), 'b': jnp.array(4.0)}
  mixed = ema.update({'w': ema_params['w']}, {'w': params['w']}, jnp.float32(0.75))
  np.testing.assert_allclose(mixed['w'], [0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * 6])
  # Decay 0 copies exactly (even over a NaN EMA).
  copied = ema.update(ema_params, params, jnp.float32(0.0))
  jax.tree.map(np.testing.assert_array_equal, copied, params)
  decays = [float(ema.ema_decay_at(jnp.int32(t), decay=0.999, start_step=3)) for t in (1, 2, 3, 4)]
  assert decays == [0.0, 0.0, pytest.approx(0.999), pytest.approx(0.999)]
  assert float(ema.ema_decay_at(jnp.int32(1), decay=0.9, start_step=0)) == pytest.approx(0.9)


@pytest.fixture(scope='module')
def mlp_run():
  config = make_tiny_config(data_dir=None)
  config.gan.ema_decay, config.gan.ema_start_step = 0.5, 3
  family, state, step, _ = compiled_steps.compiled_train_step(config, sharding.create_mesh())
  return config, family.modules, state, step


def _batch(seed, nan=False):
  images = jax.random.uniform(jax.random.key(seed), (1, 16, 28, 28, 1), minval=-1, maxval=1)
  return {'image': images * np.nan if nan else images, 'label': jnp.zeros((1, 16), jnp.int32)}


def test_the_step_copies_before_the_start_step_then_averages_and_skips_with_the_rest(mlp_run):
  _, _, state, step = mlp_run
  state = jax.device_get(state)
  jax.tree.map(np.testing.assert_array_equal, state.generator_ema.params, state.generator.params)
  history = [state]
  for t in range(1, 5):
    state, _ = step(state, _batch(t), jax.random.key(9))
    history.append(jax.device_get(state))
  for t in (1, 2):  # before step 3: a copy
    jax.tree.map(np.testing.assert_array_equal, history[t].generator_ema.params, history[t].generator.params)
  for t in (3, 4):  # then 0.5 * previous EMA + 0.5 * params
    expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, history[t - 1].generator_ema.params,
                            history[t].generator.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 history[t].generator_ema.params, expected)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(history[t].generator_ema.params),
                                                        jax.tree.leaves(history[t].generator.params)))
  for leaf in jax.tree.leaves(history[-1].generator_ema):
    assert leaf.dtype == np.float32
  # A skipped (non-finite) step leaves the EMA where it was, like everything else.
  skipped, metrics = step(state, _batch(5, nan=True), jax.random.key(9))
  assert int(metrics['skipped']) == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(skipped.generator_ema), history[-1].generator_ema)


def test_generate_uses_the_ema_generator_when_asked(mlp_run):
  _, gan, state, _ = mlp_run
  moved = state.replace(generator_ema=state.generator_ema.replace(
      params=jax.tree.map(lambda p: p + 0.1, state.generator_ema.params)))
  z = jax.random.normal(jax.random.key(3), (4, 100))
  raw = gan_steps.generate(moved, z, gan=gan)
  averaged = gan_steps.generate(moved, z, gan=gan, use_ema=True)
  np.testing.assert_array_equal(raw, gan.generator.apply({'params': state.generator.params}, z, train=False))
  np.testing.assert_array_equal(averaged, gan.generator.apply({'params': moved.generator_ema.params}, z, train=False))
  assert not np.allclose(raw, averaged)


def test_ema_batch_statistics_are_its_own():
  """dcgan's generator has batch norm: the EMA's running statistics come from the EMA params."""
  config = make_tiny_config(data_dir=None)
  config.model.name = 'dcgan'
  gan = models.create_gan(config, (28, 28, 1))
  variables = dict(jax.jit(functools.partial(gan.generator.init, train=False))(
      jax.random.key(0), jnp.zeros((1, config.model.latent_dim))))
  params = variables.pop('params')
  # A generator that has moved away from its EMA, with running statistics of its own (D plays no part).
  state = state_lib.TrainState(
      step=jnp.int32(0), discriminator=None, skipped_steps=jnp.int32(0), consecutive_skipped=jnp.int32(0),
      generator=state_lib.NetworkState(jax.tree.map(lambda p: p * 1.5 + 0.01, params),
                                       jax.tree.map(lambda v: v + 0.3, variables), None),
      generator_ema=state_lib.NetworkState(params, variables, None))
  # One compilation: the start step (3) is compared with the state's step.
  update = jax.jit(functools.partial(gan_steps.update_ema, batch_size=16, gan=gan, latent_dim=config.model.latent_dim,
                                     techniques=gan_steps.Techniques(ema_decay=0.9, ema_start_step=3)))
  rng = jax.random.key(4)
  copied = update(state, rng).generator_ema  # after step 1
  state = state.replace(step=jnp.int32(5))
  averaged = update(state, rng).generator_ema  # after step 6
  jax.tree.map(np.testing.assert_array_equal, copied.params, state.generator.params)
  jax.tree.map(np.testing.assert_array_equal, copied.variables, state.generator.variables)
  # After the start: a training-mode pass of the new EMA params, from the EMA's previous statistics.
  z_rng, dropout_rng = jax.random.split(jax.random.fold_in(rng, gan_steps._EMA_TAG))
  _, expected = jax.jit(functools.partial(gan_steps.apply_network, gan.generator, train=True))(
      state.generator_ema, gan_steps._latents(z_rng, 16, config.model.latent_dim), rng=dropout_rng, params=averaged.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), averaged.variables, expected)
  differs = [not np.allclose(a, b) for a, b in zip(jax.tree.leaves(averaged.variables),
                                                   jax.tree.leaves(state.generator.variables))]
  assert all(differs)
