"""Model shapes on both image sizes, and the sub-pixel transposed convolution against the plain layer."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import models
from aigc_jax.models import dcgan
from aigc_jax.models.subpixel import StridedConv, SubpixelConvTranspose
from configs import default


# The ResNet families (sngan_resnet, biggan): tests/test_gan_models.py, at every resolution and less cost.
@pytest.mark.parametrize('model', sorted(set(models.GAN_FAMILIES) - set(models.FAMILY_OPTIONS)))
@pytest.mark.parametrize('image_shape', [(28, 28, 1), (32, 32, 3)])
def test_gan_shapes(model, image_shape):
  config = default.get_config()
  config.model = model
  gan = models.create_gan(config, image_shape)
  z = jnp.zeros((3, config.latent_dim))
  g_vars = gan.generator.init(jax.random.key(0), z, train=False)
  images, _ = gan.generator.apply(g_vars, z, train=True, mutable=['batch_stats'])
  assert images.shape == (3,) + image_shape
  assert images.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(images))) <= 1.0
  d_vars = gan.discriminator.init(jax.random.key(1), images, train=False)
  logits, _ = gan.discriminator.apply(d_vars, images, train=True, rngs={'dropout': jax.random.key(2)},
                                      mutable=['batch_stats'])  # spectral norm's state, where D has it
  assert logits.shape == (3,)


def test_mlp_matches_the_seed_layout():
  config = default.get_config()
  gan = models.create_gan(config, (28, 28, 1))
  g = gan.generator.init(jax.random.key(0), jnp.zeros((1, 100)))['params']
  d = gan.discriminator.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  assert [g[f'Dense_{i}']['kernel'].shape for i in range(4)] == [(100, 256), (256, 512), (512, 1024),
                                                                  (1024, 784)]
  assert [d[f'Dense_{i}']['kernel'].shape for i in range(3)] == [(784, 512), (512, 256), (256, 1)]


def test_dcgan_rejects_sizes_not_divisible_by_4():
  config = default.get_config()
  config.model = 'dcgan'
  with pytest.raises(ValueError, match='divisible by 4'):
    models.create_gan(config, (30, 30, 1))


@pytest.mark.parametrize('kernel,stride,size', [(5, 2, 7), (5, 2, 14), (4, 2, 8), (3, 2, 5), (3, 3, 4)])
def test_subpixel_conv_transpose_equals_plain_in_value_and_gradient(kernel, stride, size):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 3))
  plain = nn.ConvTranspose(4, (kernel, kernel), strides=(stride, stride), padding='SAME')
  subpixel = SubpixelConvTranspose(4, (kernel, kernel), strides=(stride, stride))
  variables = plain.init(jax.random.key(1), x)
  # Same parameter tree: a checkpoint of one loads into the other.
  assert jax.tree.map(jnp.shape, subpixel.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, variables)
  cotangent = jax.random.normal(jax.random.key(2), (2, size * stride, size * stride, 4))

  def loss(module, variables, x):
    return jnp.sum(module.apply(variables, x) * cotangent)

  np.testing.assert_allclose(subpixel.apply(variables, x), plain.apply(variables, x), atol=1e-5)
  for argnum in (1, 2):  # weights and input
    g_plain = jax.grad(loss, argnums=argnum)(plain, variables, x)
    g_sub = jax.grad(loss, argnums=argnum)(subpixel, variables, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5), g_sub, g_plain)


# 3 input channels take XLA's input gradient and the im2col weight gradient, 16 the phase-decomposed input
# gradient and XLA's weight gradient (subpixel.py).
@pytest.mark.parametrize('channels', [3, 16])
@pytest.mark.parametrize('kernel,stride,size', [(5, 2, 28), (5, 2, 14), (5, 2, 7), (4, 2, 8), (3, 2, 5), (3, 3, 7)])
def test_strided_conv_equals_plain_in_value_and_gradient(kernel, stride, size, channels):
  x = jax.random.normal(jax.random.key(0), (2, size, size, channels))
  plain = nn.Conv(4, (kernel, kernel), strides=(stride, stride), padding='SAME')
  strided = StridedConv(4, (kernel, kernel), strides=(stride, stride))
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, strided.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, variables)
  out_size = -(-size // stride)
  cotangent = jax.random.normal(jax.random.key(2), (2, out_size, out_size, 4))

  def loss(module, variables, x):
    return jnp.sum(module.apply(variables, x) * cotangent)

  np.testing.assert_allclose(strided.apply(variables, x), plain.apply(variables, x), atol=1e-5)
  for argnum in (1, 2):  # weights and input
    g_plain = jax.grad(loss, argnums=argnum)(plain, variables, x)
    g_strided = jax.grad(loss, argnums=argnum)(strided, variables, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-5), g_strided, g_plain)


@pytest.mark.parametrize('channels', [3, 16])
def test_strided_conv_second_order_gradient_equals_plain(channels):
  # R1 and WGAN-GP differentiate D's input gradient with respect to D's weights: the custom input
  # gradient must itself differentiate like the plain convolution's.
  x = jax.random.normal(jax.random.key(0), (2, 14, 14, channels))
  plain = nn.Conv(4, (5, 5), strides=(2, 2), padding='SAME')
  strided = StridedConv(4, (5, 5), strides=(2, 2))
  variables = plain.init(jax.random.key(1), x)

  def penalty(module, variables):
    input_grad = jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply(variables, x))))(x)
    return jnp.sum(input_grad ** 2)

  np.testing.assert_allclose(penalty(strided, variables), penalty(plain, variables), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4),
               jax.grad(penalty, argnums=1)(strided, variables), jax.grad(penalty, argnums=1)(plain, variables))


def test_dcgan_discriminator_keeps_the_plain_conv_parameter_names():
  # A checkpoint written before the convolutions changed form still loads: same tree, same shapes.
  config = default.get_config()
  config.model = 'dcgan'
  params = models.create_gan(config, (28, 28, 1)).discriminator.init(
      jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  assert {name: params[name]['kernel'].shape for name in params} == {
      'Conv_0': (5, 5, 1, 64), 'Conv_1': (5, 5, 64, 128), 'Dense_0': (6272, 1)}


@pytest.mark.parametrize('impl', ['threefry2x32', 'rbg'])
def test_random_bits16_are_uniform_and_independent_across_the_hash_words(impl):
  # threefry keys take four draws per hash (both words, split in halves); other keys jax.random.bits' words.
  key = jax.random.key(0, impl=impl)
  bits = np.asarray(dcgan.random_bits16(key, (512, 3, 37)), np.int64)
  assert bits.shape == (512, 3, 37) and bits.dtype == np.int64
  # Each position within a hash (last index mod 4) is uniform on [0, 2**16): mean and the top bit's rate
  # within 5 standard errors (~14k draws per position).
  for position in range(4):
    draws = bits[..., position::4]
    assert abs(draws.mean() / 2 ** 16 - 0.5) < 5 * np.sqrt(1 / 12 / draws.size)
    assert abs((draws >= 2 ** 15).mean() - 0.5) < 5 * np.sqrt(0.25 / draws.size)
  # The halves of one hash are not related (their correlation is noise), and examples differ.
  flat = bits[..., :36].reshape(-1, 4).astype(float)
  correlation = np.corrcoef(flat.T)
  assert np.abs(correlation - np.eye(4)).max() < 5 / np.sqrt(len(flat))
  assert len({row.tobytes() for row in bits.reshape(512, -1)}) == 512
  assert not np.array_equal(bits, np.asarray(dcgan.random_bits16(jax.random.key(1, impl=impl), (512, 3, 37))))


def test_dropout16_keeps_units_at_the_rate_and_scales_them():
  x = jnp.ones((64, 8, 8, 33))  # an odd channel count: the last 16-bit half of a word is unused
  dropout = dcgan.Dropout16(0.3)
  y = dropout.apply({}, x, rngs={'dropout': jax.random.key(0)})
  kept = np.asarray(y != 0)
  # 135,168 units: the kept fraction is within 4 standard errors of 0.7.
  assert abs(kept.mean() - 0.7) < 4 * np.sqrt(0.7 * 0.3 / kept.size)
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.7, rtol=1e-6)
  # Every channel and every example drops units (the bits are not shared across the last axis).
  assert kept.mean(axis=(0, 1, 2)).min() > 0.5 and kept.mean(axis=(0, 1, 2)).max() < 0.9
  other = dropout.apply({}, x, rngs={'dropout': jax.random.key(1)})
  assert not np.array_equal(np.asarray(other != 0), kept)
  grad = jax.grad(lambda x: jnp.sum(dropout.apply({}, x, rngs={'dropout': jax.random.key(0)})))(x)
  np.testing.assert_allclose(grad, np.where(kept, 1 / 0.7, 0.0), rtol=1e-6)
  assert dcgan.Dropout16(0.3, deterministic=True).apply({}, x) is x
  assert not np.any(dcgan.Dropout16(1.0).apply({}, x, rngs={'dropout': jax.random.key(0)}))
