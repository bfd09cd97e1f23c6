"""Winograd's stride-1 convolution against XLA's direct one: value and gradients, and in the DCGAN."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import models
from aigc_jax.models import dcgan
from aigc_jax.models.winograd import WinogradConv, winograd_conv, winograd_matrices
from configs import default


@pytest.mark.parametrize('m,r', [(2, 3), (4, 3), (2, 5), (4, 5), (6, 3)])
def test_matrices_compute_the_1d_correlation(m, r):
  a_t, g, b_t = winograd_matrices(m, r)
  rng = np.random.default_rng(m * 10 + r)
  d, kernel = rng.standard_normal(m + r - 1), rng.standard_normal(r)
  expected = [sum(d[i + j] * kernel[j] for j in range(r)) for i in range(m)]
  np.testing.assert_allclose(a_t @ ((g @ kernel) * (b_t @ d)), expected, rtol=1e-12, atol=1e-12)


# 7x7 and 12x10 take the folded 2-D transform, 20x18 the per-axis one; explicit, uneven and VALID padding.
@pytest.mark.parametrize('shape,r,m,padding', [
    ((2, 7, 7, 6, 5), 5, 4, 'SAME'), ((2, 20, 18, 3, 4), 5, 4, 'SAME'), ((2, 12, 10, 4, 3), 3, 4, ((1, 1), (1, 1))),
    ((2, 9, 7, 3, 2), 3, 2, ((2, 0), (0, 1))), ((1, 30, 30, 2, 3), 3, 4, 'VALID'), ((2, 7, 7, 5, 4), 5, 2, 'SAME')])
def test_winograd_conv_equals_direct_in_value_and_gradient(shape, r, m, padding):
  batch, height, width, channels, features = shape
  x = jax.random.normal(jax.random.key(0), (batch, height, width, channels))
  kernel = jax.random.normal(jax.random.key(1), (r, r, channels, features)) / np.sqrt(r * r * channels)

  def direct(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        precision='highest')

  expected = direct(x, kernel)
  got = winograd_conv(x, kernel, padding, m, precision='highest')
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=2e-5 * float(jnp.max(jnp.abs(expected))))
  cotangent = jax.random.normal(jax.random.key(2), expected.shape)
  loss = lambda conv: lambda x, kernel: jnp.sum(conv(x, kernel) * cotangent)
  want = jax.grad(loss(direct), (0, 1))(x, kernel)
  have = jax.grad(loss(lambda x, k: winograd_conv(x, k, padding, m, precision='highest')), (0, 1))(x, kernel)
  for a, b in zip(have, want):
    np.testing.assert_allclose(a, b, atol=2e-5 * float(jnp.max(jnp.abs(b))))


def test_winograd_layer_is_the_stride1_conv_transpose_with_its_parameters():
  x = jax.random.normal(jax.random.key(0), (3, 7, 7, 8))
  plain = nn.ConvTranspose(6, (5, 5), strides=(1, 1), padding='SAME')
  winograd = WinogradConv(6, (5, 5))
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, winograd.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, variables)
  expected = plain.apply(variables, x)
  np.testing.assert_allclose(winograd.apply(variables, x), expected, atol=2e-5 * float(jnp.max(jnp.abs(expected))))
  loss = lambda module: lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
  for a, b in zip(jax.tree.leaves(jax.grad(loss(winograd), (0, 1))(variables, x)),
                  jax.tree.leaves(jax.grad(loss(plain), (0, 1))(variables, x))):
    np.testing.assert_allclose(a, b, atol=2e-5 * float(jnp.max(jnp.abs(b))))
  with pytest.raises(ValueError, match='odd kernel sizes'):
    WinogradConv(6, (4, 4)).init(jax.random.key(1), x)


def test_dcgan_generator_is_the_same_function_either_way():
  config = default.get_config()
  config.model = 'dcgan'
  generator = models.create_gan(config, (28, 28, 1)).generator
  z = jax.random.normal(jax.random.key(0), (4, config.latent_dim))
  variables = generator.init(jax.random.key(1), z, train=False)
  outputs = {}
  for algorithm in ('winograd', 'direct'):
    module = generator.clone(conv_algorithm=algorithm)
    assert jax.tree.map(jnp.shape, module.init(jax.random.key(1), z, train=False)) == jax.tree.map(jnp.shape, variables)
    images, _ = module.apply(variables, z, train=True, mutable=['batch_stats'])
    grads = jax.grad(lambda p: jnp.sum(module.apply({**variables, 'params': p}, z, train=True,
                                                    mutable=['batch_stats'])[0] ** 2))(variables['params'])
    outputs[algorithm] = (images, grads)
  for a, b in zip(jax.tree.leaves(outputs['winograd']), jax.tree.leaves(outputs['direct'])):
    np.testing.assert_allclose(a, b, atol=2e-4 * max(1.0, float(jnp.max(jnp.abs(b)))))
  assert isinstance(generator, dcgan.DCGANGenerator) and generator.conv_algorithm == 'auto'
  with pytest.raises(ValueError, match="conv_algorithm must be 'auto', 'winograd' or 'direct'"):
    generator.clone(conv_algorithm='fft').init(jax.random.key(1), z)


@pytest.mark.parametrize('padding', ['FULL', ((1, 1),)])
def test_winograd_conv_rejects_bad_padding(padding):
  x, kernel = jnp.zeros((1, 7, 7, 2)), jnp.zeros((3, 3, 2, 2))
  with pytest.raises(ValueError):
    winograd_conv(x, kernel, padding)
