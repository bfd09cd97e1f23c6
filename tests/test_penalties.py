"""R1 and WGAN-GP: values and parameter gradients against finite differences, lazy R1's timing and weight,
and a non-finite penalty marks the update for skipping."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aigc_jax import gan_steps, losses, models, optimizers
from aigc_jax import state as state_lib
from tests.conftest import make_tiny_config

_SHAPE = (3, 4, 1)  # tiny images: 12 pixels


class TinyD(nn.Module):
  """A smooth float64 discriminator (tanh), so central differences are accurate to ~1e-9."""

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    x = jnp.tanh(nn.Dense(6, dtype=jnp.float64, param_dtype=jnp.float64)(x))
    x = jnp.tanh(nn.Dense(5, dtype=jnp.float64, param_dtype=jnp.float64)(x))
    return nn.Dense(1, dtype=jnp.float64, param_dtype=jnp.float64)(x)[:, 0]


@pytest.fixture
def tiny_d():
  """A tiny discriminator, its params, real and fake images, under x64."""
  with jax.enable_x64(True):
    module = TinyD()
    params = module.init(jax.random.key(0), jnp.zeros((1,) + _SHAPE, jnp.float64))['params']
    params = jax.tree.map(lambda p: p * 3.0, params)  # a less linear D
    images = jax.random.normal(jax.random.key(1), (4,) + _SHAPE, jnp.float64)
    fakes = jax.random.normal(jax.random.key(2), (4,) + _SHAPE, jnp.float64)
    yield module, params, images, fakes


def _d_fn(module, params):
  return lambda x: module.apply({'params': params}, x.astype(jnp.float64))


def _fd_input_gradient(d_single, x, eps=1e-5):
  """Central differences of a scalar function of one image, pixel by pixel (numpy float64)."""
  x = np.asarray(x, np.float64)
  grad = np.zeros_like(x)
  for index in np.ndindex(x.shape):
    step = np.zeros_like(x)
    step[index] = eps
    grad[index] = (d_single(x + step) - d_single(x - step)) / (2 * eps)
  return grad


def _fd_r1(module, params, images):
  d_fn = _d_fn(module, params)
  single = lambda x: float(d_fn(jnp.asarray(x)[None])[0])
  return np.mean([np.sum(_fd_input_gradient(single, x) ** 2) for x in np.asarray(images)])


def test_r1_equals_finite_differences(tiny_d):
  module, params, images, _ = tiny_d
  with jax.enable_x64(True):
    r1 = float(losses.r1_penalty(_d_fn(module, params), images))
    expected = _fd_r1(module, params, images)
  assert expected > 1e-3  # not a trivially flat D
  assert r1 == pytest.approx(expected, rel=1e-4)


def test_gradient_penalty_equals_finite_differences(tiny_d):
  module, params, images, fakes = tiny_d
  with jax.enable_x64(True):
    rng = jax.random.key(3)
    gp = float(losses.gradient_penalty(_d_fn(module, params), images, fakes, rng))
    # The same interpolation points the penalty draws.
    eps = np.asarray(jax.random.uniform(rng, (4, 1, 1, 1), jnp.float32), np.float64)
    points = eps * np.asarray(images) + (1 - eps) * np.asarray(fakes)
    d_fn = _d_fn(module, params)
    single = lambda x: float(d_fn(jnp.asarray(x)[None])[0])
    norms = [np.sqrt(np.sum(_fd_input_gradient(single, x) ** 2)) for x in points]
  expected = np.mean((np.asarray(norms) - 1.0) ** 2)
  assert 0 < eps.min() and eps.max() < 1 and len(set(eps.ravel())) == 4
  assert gp == pytest.approx(expected, rel=1e-4)


def test_r1_parameter_gradient_equals_finite_differences(tiny_d):
  """The double backward pass D's update takes through the penalty."""
  module, params, images, _ = tiny_d
  with jax.enable_x64(True):
    penalty = lambda p: losses.r1_penalty(_d_fn(module, p), images)
    grads = jax.grad(penalty)(params)
    kernel = np.asarray(params['Dense_0']['kernel'])
    for index in [(0, 0), (5, 3), (11, 5)]:
      eps = 1e-5
      moved = [kernel.copy(), kernel.copy()]
      moved[0][index] += eps
      moved[1][index] -= eps
      values = [float(penalty({**params, 'Dense_0': {**params['Dense_0'], 'kernel': jnp.asarray(k)}}))
                for k in moved]
      assert float(grads['Dense_0']['kernel'][index]) == pytest.approx((values[0] - values[1]) / (2 * eps),
                                                                         rel=1e-4, abs=1e-9)


@pytest.fixture(scope='module')
def mlp_setup():
  config = make_tiny_config(data_dir=None)
  gan = models.create_gan(config, (28, 28, 1))
  d_tx = optax.sgd(1.0)  # the update is minus the gradient: the tests compare gradients
  state = state_lib.init_train_state(jax.random.key(0), gan=gan, g_tx=optimizers.create_optimizer(config, 'generator'),
                                     d_tx=d_tx, image_shape=(28, 28, 1), latent_dim=config.model.latent_dim)
  batch = {'image': jax.random.uniform(jax.random.key(1), (8, 28, 28, 1), minval=-1, maxval=1),
           'label': jnp.zeros((8,), jnp.int32)}
  return config, gan, d_tx, state, batch


def _d_step(mlp_setup, techniques, d_update):
  """One discriminator update's parameter change (minus the gradient) and its metrics."""
  config, gan, d_tx, state, batch = mlp_setup
  step = jax.jit(functools.partial(gan_steps.discriminator_step, gan=gan, loss=losses.get_gan_loss('hinge'), d_tx=d_tx,
                                   latent_dim=config.model.latent_dim, techniques=techniques))
  after, metrics = step(state, batch, jax.random.key(5), d_update=jnp.int32(d_update))
  delta = jax.tree.map(lambda new, old: new - old, after.discriminator.params, state.discriminator.params)
  return delta, metrics


def test_lazy_r1_applies_every_k_updates_weighted_by_k(mlp_setup):
  plain, _ = _d_step(mlp_setup, gan_steps.Techniques(), 0)
  every_1, metrics_1 = _d_step(mlp_setup, gan_steps.Techniques(r1_gamma=8.0, r1_every=1), 7)
  lazy_on, metrics_on = _d_step(mlp_setup, gan_steps.Techniques(r1_gamma=2.0, r1_every=4), 8)
  lazy_off, metrics_off = _d_step(mlp_setup, gan_steps.Techniques(r1_gamma=2.0, r1_every=4), 9)
  assert bool(metrics_on['d_r1_applied']) and not bool(metrics_off['d_r1_applied'])
  assert float(metrics_on['d_r1']) == pytest.approx(float(metrics_1['d_r1']), rel=1e-6)
  assert float(metrics_on['d_r1']) > 0
  # Update 8 of every-4 with gamma 2 is the every-update penalty with gamma 2 * 4; update 9 is no penalty.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), lazy_on, every_1)
  jax.tree.map(np.testing.assert_array_equal, lazy_off, plain)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(every_1), jax.tree.leaves(plain)))


def test_a_non_finite_penalty_marks_the_update_not_finite(mlp_setup):
  _, metrics = _d_step(mlp_setup, gan_steps.Techniques(gp_weight=10.0), 0)
  assert bool(metrics['d_finite']) and np.isfinite(float(metrics['d_gp']))
  _, metrics = _d_step(mlp_setup, gan_steps.Techniques(gp_weight=float('inf')), 0)
  # The adversarial loss itself is finite: the penalty alone makes the update skipped.
  assert np.isfinite(float(metrics['d_loss'])) and not bool(metrics['d_finite'])
