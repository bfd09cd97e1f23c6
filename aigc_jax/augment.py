"""Differentiable augmentation of the discriminator's inputs: DiffAugment (Zhao et al., 2020).

Applied on device inside the jitted step to every image D sees, real and fake alike, in both the
discriminator and the generator update; the generator's gradient flows through it. The operations follow
the authors' `DiffAugment_pytorch.py` on NHWC images in [-1, 1]:
- `brightness`: add U[-0.5, 0.5) per image;
- `saturation`: scale each pixel's deviation from its channel mean by U[0, 2) (identity on one channel);
- `contrast`: scale the deviation from the image mean by U[0.5, 1.5);
- `translation`: shift by a whole number of pixels in [-r, r] per axis, r = round(size / 8), zero fill;
- `cutout`: zero a square of half the image size (per axis) centred anywhere in the image (clipped).
`color` is brightness, saturation and contrast in that order. The policy string lists them in the order
they apply, e.g. `color,translation,cutout` (the paper's choice with little data).

With probability `p` < 1 each operation is applied to each image independently with probability `p`
(as ADA does); `p = 1` is DiffAugment as published and `p = 0` is the identity (nothing is traced).
The randomness is all from the key passed in, which the step derives from its own key: exact resume.
"""
from typing import Callable

import jax
import jax.numpy as jnp

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _uniform(rng, images, low=0.0, high=1.0):
  return jax.random.uniform(rng, (images.shape[0], 1, 1, 1), jnp.float32, low, high).astype(images.dtype)


def brightness(images: jax.Array, rng: jax.Array) -> jax.Array:
  return images + _uniform(rng, images, -0.5, 0.5)


def saturation(images: jax.Array, rng: jax.Array) -> jax.Array:
  mean = jnp.mean(images, axis=-1, keepdims=True)
  return (images - mean) * _uniform(rng, images, 0.0, 2.0) + mean


def contrast(images: jax.Array, rng: jax.Array) -> jax.Array:
  mean = jnp.mean(images, axis=(1, 2, 3), keepdims=True)
  return (images - mean) * _uniform(rng, images, 0.5, 1.5) + mean


def _shift(images: jax.Array, shift: jax.Array, axis: int) -> jax.Array:
  """`out[b, i] = images[b, i + shift[b]]` along `axis` (1 or 2), zero where that falls outside."""
  size = images.shape[axis]
  source = jnp.arange(size)[None, :] + shift[:, None]  # [B, size]
  shape = [images.shape[0], 1, 1, 1]
  shape[axis] = size
  index = jnp.clip(source, 0, size - 1).reshape(shape)
  valid = ((source >= 0) & (source < size)).reshape(shape)
  return jnp.take_along_axis(images, index, axis=axis) * valid.astype(images.dtype)


def translation(images: jax.Array, rng: jax.Array, ratio: float = TRANSLATION_RATIO) -> jax.Array:
  batch, height, width, _ = images.shape
  h_rng, w_rng = jax.random.split(rng)
  max_h, max_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
  shift_h = jax.random.randint(h_rng, (batch,), -max_h, max_h + 1)
  shift_w = jax.random.randint(w_rng, (batch,), -max_w, max_w + 1)
  return _shift(_shift(images, shift_h, 1), shift_w, 2)


def cutout_mask(shape: tuple[int, int, int, int], offset_h: jax.Array, offset_w: jax.Array,
                ratio: float = CUTOUT_RATIO) -> jax.Array:
  """1 outside, 0 inside each image's square of `ratio` x size whose centre is at (offset_h, offset_w)."""
  _, height, width, _ = shape
  size_h, size_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
  rows = jnp.arange(height)[None, :] - (offset_h[:, None] - size_h // 2)  # [B, H]: row - top
  cols = jnp.arange(width)[None, :] - (offset_w[:, None] - size_w // 2)
  inside = (((rows >= 0) & (rows < size_h))[:, :, None]
            & ((cols >= 0) & (cols < size_w))[:, None, :])
  return jnp.logical_not(inside)[..., None]


def cutout(images: jax.Array, rng: jax.Array, ratio: float = CUTOUT_RATIO) -> jax.Array:
  batch, height, width, _ = images.shape
  h_rng, w_rng = jax.random.split(rng)
  size_h, size_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
  # The authors' offsets: a centre anywhere, so the square is clipped at the borders.
  offset_h = jax.random.randint(h_rng, (batch,), 0, height + (1 - size_h % 2))
  offset_w = jax.random.randint(w_rng, (batch,), 0, width + (1 - size_w % 2))
  return images * cutout_mask(images.shape, offset_h, offset_w, ratio).astype(images.dtype)


OPERATIONS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    'brightness': brightness, 'saturation': saturation, 'contrast': contrast,
    'translation': translation, 'cutout': cutout,
}
POLICY_NAMES: dict[str, tuple[str, ...]] = {
    'color': ('brightness', 'saturation', 'contrast'),
    **{name: (name,) for name in OPERATIONS},
}


def parse_policy(policy: str) -> tuple[str, ...]:
  """The operations of a policy string such as 'color,translation,cutout', in order; ValueError if unknown."""
  names = [name.strip() for name in policy.split(',') if name.strip()]
  unknown = [name for name in names if name not in POLICY_NAMES]
  if unknown or not names:
    raise ValueError(f'unknown augmentation {unknown[0] if unknown else policy!r}; allowed: comma-separated '
                     f'names from {", ".join(POLICY_NAMES)}')
  return tuple(op for name in names for op in POLICY_NAMES[name])


def augment(images: jax.Array, rng: jax.Array, *, policy: str, p: float) -> jax.Array:
  """DiffAugment of `images` [B, H, W, C]: each operation of `policy` applied to each image with
  probability `p`. Differentiable in `images`; `p = 0` returns `images` itself."""
  if p <= 0:
    return images
  for index, name in enumerate(parse_policy(policy)):
    op_rng, apply_rng = jax.random.split(jax.random.fold_in(rng, index))
    augmented = OPERATIONS[name](images, op_rng)
    if p < 1:
      chosen = jax.random.bernoulli(apply_rng, p, (images.shape[0], 1, 1, 1))
      augmented = jnp.where(chosen, augmented, images)
    images = augmented
  return images
