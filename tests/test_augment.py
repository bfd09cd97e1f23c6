"""DiffAugment: each operation does what it says on known inputs, off is the identity, it is
differentiable, and the probability and policy behave."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from aigc_jax import augment


def _images(seed=0, shape=(6, 8, 8, 3)):
  return jax.random.uniform(jax.random.key(seed), shape, minval=-1, maxval=1)


def test_off_is_the_identity():
  images = _images()
  assert augment.augment(images, jax.random.key(1), policy='color,translation,cutout', p=0.0) is images


def test_brightness_adds_one_offset_per_image_in_range():
  images = _images()
  offset = np.asarray(augment.brightness(images, jax.random.key(1)) - images)
  per_image = offset[:, :1, :1, :1]
  np.testing.assert_allclose(offset, np.broadcast_to(per_image, offset.shape), atol=1e-6)
  assert np.all(per_image >= -0.5) and np.all(per_image < 0.5) and np.ptp(per_image) > 0


def test_saturation_scales_the_deviation_from_the_channel_mean():
  images = _images()
  out = np.asarray(augment.saturation(images, jax.random.key(2)))
  mean = np.asarray(images).mean(-1, keepdims=True)
  np.testing.assert_allclose(out.mean(-1, keepdims=True), mean, atol=1e-5)
  factor = (out - mean) / (np.asarray(images) - mean)
  per_image = factor[:, :1, :1, :1]
  np.testing.assert_allclose(factor, np.broadcast_to(per_image, factor.shape), rtol=1e-3, atol=1e-3)
  assert np.all(per_image >= 0) and np.all(per_image < 2)
  grey = _images(shape=(2, 8, 8, 1))
  np.testing.assert_allclose(augment.saturation(grey, jax.random.key(2)), grey, atol=1e-6)  # one channel


def test_contrast_scales_the_deviation_from_the_image_mean():
  images = _images()
  out = np.asarray(augment.contrast(images, jax.random.key(3)))
  mean = np.asarray(images).mean((1, 2, 3), keepdims=True)
  np.testing.assert_allclose(out.mean((1, 2, 3), keepdims=True), mean, atol=1e-5)
  factor = ((out - mean) / (np.asarray(images) - mean))[:, :1, :1, :1]
  assert np.all(factor >= 0.5) and np.all(factor < 1.5)


def test_translation_shifts_whole_pixels_with_zero_fill():
  # One bright pixel per image at (3, 4) of a 16x16 image: max shift round(16 / 8) = 2 per axis.
  images = np.zeros((32, 16, 16, 1), np.float32)
  images[:, 3, 4, 0] = 1.0
  out = np.asarray(augment.translation(jnp.asarray(images), jax.random.key(4)))
  shifts = set()
  for image in out:
    (row,), (col,) = np.nonzero(image[..., 0] == 1.0)[0], np.nonzero(image[..., 0] == 1.0)[1]
    assert image.sum() == 1.0  # moved, not duplicated or scaled
    shifts.add((3 - row, 4 - col))  # out[i] = in[i + shift]
  assert all(abs(dy) <= 2 and abs(dx) <= 2 for dy, dx in shifts) and len(shifts) > 5
  # A pixel shifted past the border is gone, and what comes in is zero.
  edge = np.zeros((1, 16, 16, 1), np.float32)
  edge[0, :, 0, 0] = 1.0
  shifted = augment._shift(augment._shift(jnp.asarray(edge), jnp.array([0]), 1), jnp.array([-1]), 2)
  np.testing.assert_array_equal(np.asarray(shifted)[0, :, 1, 0], 1.0)
  assert np.asarray(shifted).sum() == 16
  gone = augment._shift(jnp.asarray(edge), jnp.array([1]), 2)
  assert np.asarray(gone).sum() == 0


def test_cutout_zeroes_a_clipped_square_of_half_the_size():
  mask = np.asarray(augment.cutout_mask((3, 16, 16, 1), jnp.array([8, 0, 15]), jnp.array([8, 0, 2])))[..., 0]
  # Size 8: rows/cols [offset - 4, offset + 4), clipped to the image.
  expected = np.ones((3, 16, 16), bool)
  expected[0, 4:12, 4:12] = False
  expected[1, 0:4, 0:4] = False
  expected[2, 11:16, 0:6] = False
  np.testing.assert_array_equal(mask, expected)
  images = _images(shape=(16, 16, 16, 1)) + 2.0  # never zero before the cut
  out = np.asarray(augment.cutout(images, jax.random.key(5)))
  zeros = (out == 0).sum((1, 2, 3))
  assert np.all(zeros > 0) and np.all(zeros <= 64) and np.any(zeros == 64)
  np.testing.assert_array_equal(out[out != 0], np.asarray(images)[out != 0])


def test_augment_is_differentiable():
  images = _images(shape=(3, 8, 8, 3))
  fn = lambda x: augment.augment(x, jax.random.key(6), policy='color,translation,cutout', p=1.0)
  check_grads(fn, (images,), order=1, modes=('rev',), atol=1e-2, rtol=1e-2)
  grads = jax.grad(lambda x: jnp.sum(fn(x) ** 2))(images)
  assert np.all(np.isfinite(grads)) and np.abs(grads).sum() > 0


def test_probability_applies_each_operation_to_about_that_share_of_images():
  images = _images(shape=(400, 4, 4, 3))
  out = augment.augment(images, jax.random.key(7), policy='brightness', p=0.25)
  changed = np.any(np.asarray(out) != np.asarray(images), axis=(1, 2, 3)).mean()
  assert 0.15 < changed < 0.35
  full = augment.augment(images, jax.random.key(7), policy='brightness', p=1.0)
  assert np.all(np.any(np.asarray(full) != np.asarray(images), axis=(1, 2, 3)))


def test_policy_names():
  assert augment.parse_policy('color,translation,cutout') == ('brightness', 'saturation', 'contrast',
                                                             'translation', 'cutout')
  assert augment.parse_policy(' cutout , brightness') == ('cutout', 'brightness')
  for bad in ('zoom', '', 'color,,zoom'):
    with pytest.raises(ValueError, match='allowed'):
      augment.parse_policy(bad)
