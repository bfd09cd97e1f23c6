"""Winograd's and im2col's stride-1 convolutions against XLA's direct one (value and gradients), in the
strided layers of subpixel.py, and in the DCGAN."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import models
from aigc_jax.models import dcgan, subpixel
from aigc_jax.models.im2col import conv_by_matmul, conv_col2im, conv_im2col
from aigc_jax.models.subpixel import StridedConv, SubpixelConvTranspose
from aigc_jax.models.winograd import WinogradConv, output_tile_for, winograd_conv, winograd_matrices
from configs import default

# Of the largest value: Winograd's rounding with 9-point tiles (DCGAN's 3x3 layers on 7x7 and 14x14 maps
# take F(7, 3); measured up to 1e-4), and with smaller tiles, im2col's and XLA's.
_NINE_POINT_TOLERANCE, _TOLERANCE = 2e-4, 2e-5


@pytest.mark.parametrize('m,r', [(2, 3), (4, 3), (2, 5), (4, 5), (6, 3), (7, 3), (5, 5)])
def test_matrices_compute_the_1d_correlation(m, r):
  a_t, g, b_t = winograd_matrices(m, r)
  rng = np.random.default_rng(m * 10 + r)
  d, kernel = rng.standard_normal(m + r - 1), rng.standard_normal(r)
  expected = [sum(d[i + j] * kernel[j] for j in range(r)) for i in range(m)]
  np.testing.assert_allclose(a_t @ ((g @ kernel) * (b_t @ d)), expected, rtol=1e-12, atol=1e-12)


def test_output_tile_is_the_one_with_fewest_products():
  assert output_tile_for(7, 7, 3) == 7     # one 9-point tile (81 products) against F(4, 3)'s 2x2 tiles (144)
  assert output_tile_for(7, 7, 5) == 4     # F(4, 5): 2x2 tiles of 8 (256); F(5, 5)'s would be 9 (324)
  assert output_tile_for(14, 12, 3) == 7
  assert output_tile_for(8, 8, 3) == 4     # two F(4, 3) tiles (12 points a side) fit exactly; F(7, 3) would be 18


# 7x7 and 12x10 take the folded 2-D transform, 20x18 the per-axis one; explicit, uneven and VALID padding.
@pytest.mark.parametrize('shape,r,m,padding', [
    ((2, 7, 7, 6, 5), 5, 4, 'SAME'), ((2, 20, 18, 3, 4), 5, 4, 'SAME'), ((2, 12, 10, 4, 3), 3, 4, ((1, 1), (1, 1))),
    ((2, 9, 7, 3, 2), 3, 2, ((2, 0), (0, 1))), ((1, 30, 30, 2, 3), 3, 4, 'VALID'), ((2, 7, 7, 5, 4), 5, 2, 'SAME'),
    ((4, 7, 7, 256, 32), 3, None, 'SAME'), ((4, 7, 7, 256, 32), 5, None, 'SAME'), ((2, 11, 9, 64, 8), 5, 5, 'SAME')])
def test_winograd_conv_equals_direct_in_value_and_gradient(shape, r, m, padding):
  """Up to 8-point tiles within 2e-5 of the output's largest value; 9-point tiles (F(7, 3), F(5, 5)), at
  DCGAN's 256 input channels, within 2e-4 (measured 2e-5..8e-5 here)."""
  batch, height, width, channels, features = shape
  x = jax.random.normal(jax.random.key(0), (batch, height, width, channels))
  kernel = jax.random.normal(jax.random.key(1), (r, r, channels, features)) / np.sqrt(r * r * channels)

  def direct(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        precision='highest')

  expected = direct(x, kernel)
  got = winograd_conv(x, kernel, padding, m, precision='highest')
  assert got.shape == expected.shape
  out_h, out_w = expected.shape[1:3]
  tolerance = _NINE_POINT_TOLERANCE if (m or output_tile_for(out_h, out_w, r)) + r - 1 == 9 else _TOLERANCE
  np.testing.assert_allclose(got, expected, atol=tolerance * float(jnp.max(jnp.abs(expected))))
  cotangent = jax.random.normal(jax.random.key(2), expected.shape)
  loss = lambda conv: lambda x, kernel: jnp.sum(conv(x, kernel) * cotangent)
  want = jax.grad(loss(direct), (0, 1))(x, kernel)
  have = jax.grad(loss(lambda x, k: winograd_conv(x, k, padding, m, precision='highest')), (0, 1))(x, kernel)
  for a, b in zip(have, want):
    np.testing.assert_allclose(a, b, atol=tolerance * float(jnp.max(jnp.abs(b))))


# Few inputs (im2col's case), few outputs (col2im's), rectangular kernels, cropping (negative) padding.
@pytest.mark.parametrize('shape,kernel_hw,padding', [
    ((2, 14, 14, 4, 16), (3, 3), ((1, 1), (1, 1))), ((2, 14, 12, 16, 4), (3, 3), 'SAME'),
    ((2, 9, 7, 3, 5), (5, 3), ((2, 0), (-1, 1))), ((1, 8, 8, 6, 2), (3, 5), 'VALID')])
@pytest.mark.parametrize('conv', [conv_im2col, conv_col2im, conv_by_matmul])
def test_matmul_convs_equal_direct_in_value_and_gradient(shape, kernel_hw, padding, conv):
  batch, height, width, channels, features = shape
  x = jax.random.normal(jax.random.key(0), (batch, height, width, channels))
  kernel = jax.random.normal(jax.random.key(1), kernel_hw + (channels, features))

  def direct(x, kernel):
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                        precision='highest')

  expected = direct(x, kernel)
  got = conv(x, kernel, padding, precision='highest')
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, atol=1e-5 * float(jnp.max(jnp.abs(expected))))
  cotangent = jax.random.normal(jax.random.key(2), expected.shape)
  loss = lambda conv: lambda x, kernel: jnp.sum(conv(x, kernel) * cotangent)
  want = jax.grad(loss(direct), (0, 1))(x, kernel)
  have = jax.grad(loss(lambda x, k: conv(x, k, padding, precision='highest')), (0, 1))(x, kernel)
  for a, b in zip(have, want):
    np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize('padding', ['FULL', ((1, 1),)])
def test_matmul_convs_reject_bad_padding(padding):
  x, kernel = jnp.zeros((1, 7, 7, 2)), jnp.zeros((3, 3, 2, 2))
  for conv in (conv_im2col, conv_col2im):
    with pytest.raises(ValueError, match='padding'):
      conv(x, kernel, padding)


def _assert_same_values_and_gradients(fast, plain, variables, x, tolerance=_TOLERANCE):
  """`fast` computes `plain`'s function of (variables, x), to `tolerance` of the largest value."""
  expected = plain.apply(variables, x)
  np.testing.assert_allclose(fast.apply(variables, x), expected, atol=tolerance * float(jnp.max(jnp.abs(expected))))
  loss = lambda module: lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
  for a, b in zip(jax.tree.leaves(jax.grad(loss(fast), (0, 1))(variables, x)),
                  jax.tree.leaves(jax.grad(loss(plain), (0, 1))(variables, x))):
    np.testing.assert_allclose(a, b, atol=tolerance * float(jnp.max(jnp.abs(b))))


def test_winograd_layer_is_the_stride1_conv_transpose_with_its_parameters():
  x = jax.random.normal(jax.random.key(0), (3, 7, 7, 8))
  plain = nn.ConvTranspose(6, (5, 5), strides=(1, 1), padding='SAME')
  winograd = WinogradConv(6, (5, 5))
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, winograd.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, variables)
  _assert_same_values_and_gradients(winograd, plain, variables, x)
  with pytest.raises(ValueError, match='odd kernel sizes'):
    WinogradConv(6, (4, 4)).init(jax.random.key(1), x)


@pytest.mark.parametrize('network', ['generator', 'discriminator'])
def test_dcgan_networks_are_the_same_function_either_way(network):
  # 'matmul' runs G's stride-1 and first sub-pixel layer and D's second layer by Winograd, G's last and D's
  # first layer by col2im / im2col (dcgan.py).
  config = default.get_config()
  config.model = 'dcgan'
  module = getattr(models.create_gan(config, (28, 28, 1)), network)
  x = (jax.random.normal(jax.random.key(0), (4, config.latent_dim)) if network == 'generator'
       else jax.random.uniform(jax.random.key(0), (4, 28, 28, 1), minval=-1, maxval=1))
  variables = module.init(jax.random.key(1), x, train=False)
  rngs = {'dropout': jax.random.key(2)}
  outputs = {}
  for algorithm in ('matmul', 'direct'):
    clone = module.clone(conv_algorithm=algorithm)
    assert jax.tree.map(jnp.shape, clone.init(jax.random.key(1), x, train=False)) == jax.tree.map(jnp.shape, variables)
    forward = lambda p, x: clone.apply({**variables, 'params': p}, x, train=True, rngs=rngs, mutable=['batch_stats'])[0]
    outputs[algorithm] = (forward(variables['params'], x),
                          jax.grad(lambda p, x: jnp.sum(jnp.sin(forward(p, x))), (0, 1))(variables['params'], x))
  for a, b in zip(jax.tree.leaves(outputs['matmul']), jax.tree.leaves(outputs['direct'])):
    np.testing.assert_allclose(a, b, atol=2e-4 * max(1.0, float(jnp.max(jnp.abs(b)))))
  expected_type = dcgan.DCGANGenerator if network == 'generator' else dcgan.DCGANDiscriminator
  assert isinstance(module, expected_type) and module.conv_algorithm == 'auto'
  with pytest.raises(ValueError, match="conv_algorithm must be one of 'auto', 'matmul', 'direct', got 'fft'"):
    module.clone(conv_algorithm='fft').init(jax.random.key(1), x)


@pytest.mark.parametrize('size', [28, 14, 15, 7])
@pytest.mark.parametrize('stride1_conv', [winograd_conv, conv_by_matmul, None], ids=['winograd', 'im2col', 'xla'])
def test_space_to_depth_strided_conv_equals_plain_in_value_and_gradients(size, stride1_conv):
  # Includes the second-order gradient R1 and WGAN-GP take (D's input gradient, differentiated in D's weights).
  x = jax.random.normal(jax.random.key(0), (2, size, size, 16))
  plain = nn.Conv(24, (5, 5), strides=(2, 2), padding='SAME')
  s2d = StridedConv(24, (5, 5), strides=(2, 2), stride1_conv=stride1_conv or subpixel._xla_conv)
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, s2d.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, variables)
  expected = plain.apply(variables, x)
  tolerance = _NINE_POINT_TOLERANCE if stride1_conv is winograd_conv else _TOLERANCE   # 3x3 phases: F(7, 3)
  np.testing.assert_allclose(s2d.apply(variables, x), expected, atol=tolerance * float(jnp.max(jnp.abs(expected))))

  def penalty(module, variables, x):
    input_grad = jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply(variables, x))))(x)
    return jnp.sum(jnp.sin(module.apply(variables, x))) + jnp.sum(input_grad ** 2)

  for a, b in zip(jax.tree.leaves(jax.grad(penalty, (1, 2))(s2d, variables, x)),
                  jax.tree.leaves(jax.grad(penalty, (1, 2))(plain, variables, x))):
    np.testing.assert_allclose(a, b, atol=tolerance * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize('size', [7, 14])
@pytest.mark.parametrize('stride1_conv,features', [(winograd_conv, 8), (conv_by_matmul, 8), (conv_by_matmul, 1)],
                         ids=['winograd', 'im2col', 'col2im'])   # 16 channels in; 4 phases x features out
def test_fast_subpixel_conv_transpose_equals_plain_in_value_and_gradient(size, stride1_conv, features):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 16))
  plain = nn.ConvTranspose(features, (5, 5), strides=(2, 2), padding='SAME')
  fast = SubpixelConvTranspose(features, (5, 5), strides=(2, 2), stride1_conv=stride1_conv)
  variables = plain.init(jax.random.key(1), x)
  tolerance = _NINE_POINT_TOLERANCE if stride1_conv is winograd_conv else _TOLERANCE   # 3x3 phases: F(7, 3)
  _assert_same_values_and_gradients(fast, plain, variables, x, tolerance)


@pytest.mark.parametrize('padding', ['FULL', ((1, 1),)])
def test_winograd_conv_rejects_bad_padding(padding):
  x, kernel = jnp.zeros((1, 7, 7, 2)), jnp.zeros((3, 3, 2, 2))
  with pytest.raises(ValueError):
    winograd_conv(x, kernel, padding)
