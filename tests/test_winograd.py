"""The CPU fast path's kernels: Winograd's stride-1 convolution against XLA's direct one (value and
gradients), and inside the polyphase and sub-pixel forms of strided convolutions. The layers built on
them, against flax's: tests/test_cpu_fast_path.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.cpu import subpixel
from aigc_jax.cpu.winograd import output_tile_for, winograd_conv, winograd_matrices

# Of the largest value: Winograd's rounding with 9-point tiles (DCGAN's 3x3 layers on 7x7 and 14x14 maps
# take F(7, 3); measured up to 1e-4), and with smaller tiles or XLA's own convolution.
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


def _assert_same_values_and_gradients(fast, plain, args, tolerance=_TOLERANCE, second_order=False):
  """`fast(*args)` computes `plain(*args)`, value and gradients (and, with `second_order`, the gradient of a
  penalty on the input gradient, as R1 takes it), to `tolerance` of the largest value."""
  expected = plain(*args)
  np.testing.assert_allclose(fast(*args), expected, atol=tolerance * float(jnp.max(jnp.abs(expected))))

  def loss(conv, x, kernel):
    value = jnp.sum(jnp.sin(conv(x, kernel)))
    if second_order:
      value += jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, kernel))))(x) ** 2)
    return value

  for a, b in zip(jax.grad(loss, (1, 2))(fast, *args), jax.grad(loss, (1, 2))(plain, *args)):
    np.testing.assert_allclose(a, b, atol=tolerance * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize('size', [28, 15, 7])
@pytest.mark.parametrize('stride1_conv', [winograd_conv, None], ids=['winograd', 'xla'])
def test_space_to_depth_strided_conv_equals_plain_in_value_and_gradients(size, stride1_conv):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 16))
  kernel = jax.random.normal(jax.random.key(1), (5, 5, 16, 24)) / 20
  plain = lambda x, k: jax.lax.conv_general_dilated(x, k, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  fast = lambda x, k: subpixel.conv_strided_space_to_depth(x, k, 2, stride1_conv or subpixel.xla_conv)
  tolerance = _NINE_POINT_TOLERANCE if stride1_conv is winograd_conv else _TOLERANCE   # 3x3 phases: F(7, 3)
  _assert_same_values_and_gradients(fast, plain, (x, kernel), tolerance, second_order=True)


def test_xla_conv_with_negative_padding_crops_and_its_gradients_stay_finite():
  # XLA:CPU's convolution reads outside its input where a low padding is negative (openxla/xla#48713): the
  # strided convolution's phase input gradient pads a 1x1 convolution by (-1, 1), and its kernel gradient came
  # out as garbage, or NaN in CI on an Intel Xeon. Freed NaN buffers around each draw make such a read show.
  dy, kernel = jax.random.normal(jax.random.key(0), (2, 3, 3, 4)), jax.random.normal(jax.random.key(1), (1, 1, 4, 16))
  padding = ((-1, 1), (-1, 1))
  cropped = lambda dy, k: jax.lax.conv_general_dilated(dy[:, 1:, 1:], k, (1, 1), ((0, 1), (0, 1)),
                                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  expected_y, expected_vjp = jax.vjp(cropped, dy, kernel)
  for draw in range(200):
    freed = [jnp.full((size,), jnp.nan) for size in (64, 256, 1024, 4096)]
    del freed
    y, vjp = jax.vjp(lambda dy, k: subpixel.xla_conv(dy, k, padding), dy, kernel)
    g = jax.random.normal(jax.random.key(draw), y.shape)
    np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-6)
    for a, b in zip(vjp(g), expected_vjp(g)):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize('channels', [3, 16])   # XLA's input gradient and the patches' weight gradient; the phases'
@pytest.mark.parametrize('kernel,stride,size', [(5, 2, 28), (4, 2, 8), (3, 3, 7)])
def test_strided_conv_with_phase_input_gradient_equals_plain(kernel, stride, size, channels):
  x = jax.random.normal(jax.random.key(0), (2, size, size, channels))
  k = jax.random.normal(jax.random.key(1), (kernel, kernel, channels, 4))
  plain = lambda x, k: jax.lax.conv_general_dilated(x, k, (stride, stride), 'SAME',
                                                    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  _assert_same_values_and_gradients(lambda x, k: subpixel.conv_strided(x, k, stride), plain, (x, k),
                                    second_order=True)


@pytest.mark.parametrize('size', [7, 14])
@pytest.mark.parametrize('stride1_conv,features', [(winograd_conv, 8), (None, 8), (None, 1)],
                         ids=['winograd', 'xla', 'xla_one_channel'])   # 16 channels in; 4 phases x features out
def test_subpixel_conv_transpose_equals_plain_in_value_and_gradient(size, stride1_conv, features):
  x = jax.random.normal(jax.random.key(0), (2, size, size, 16))
  kernel = jax.random.normal(jax.random.key(1), (5, 5, 16, features)) / 20
  plain = lambda x, k: jax.lax.conv_transpose(x, k, (2, 2), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  fast = lambda x, k: subpixel.conv_transpose_subpixel(x, k, 2, stride1_conv=stride1_conv)
  tolerance = _NINE_POINT_TOLERANCE if stride1_conv is winograd_conv else _TOLERANCE   # 3x3 phases: F(7, 3)
  _assert_same_values_and_gradients(fast, plain, (x, kernel), tolerance)


@pytest.mark.parametrize('padding', ['FULL', ((1, 1),)])
def test_winograd_conv_rejects_bad_padding(padding):
  x, kernel = jnp.zeros((1, 7, 7, 2)), jnp.zeros((3, 3, 2, 2))
  with pytest.raises(ValueError):
    winograd_conv(x, kernel, padding)
