"""The TensorFlow DCGAN tutorial's GAN, for any image size divisible by 4.

G: Dense (H/4)(W/4)256 (no bias) -> BN -> LeakyReLU -> ConvT 128 k5 s1 -> BN -> LReLU -> ConvT 64 k5 s2
   -> BN -> LReLU -> ConvT C k5 s2 -> tanh.
D: Conv 64 k5 s2 -> LReLU -> Dropout 0.3 -> Conv 128 k5 s2 -> LReLU -> Dropout 0.3 -> Dense 1 (`Dropout16`).
The stride-2 transposed convolutions use the equivalent sub-pixel form, and the stride-2 convolutions the
equivalent polyphase form (see `subpixel.py`). On CPU in float32 every convolution runs as matmuls
(`conv_algorithm='matmul'`): those with many channels on both sides (G's first two, D's second) by Winograd
(`winograd.py`), the two at the 1-channel image (G's last, D's first) by im2col / col2im (`im2col.py`).
Batch norm uses Keras' momentum and epsilon (0.99, 1e-3), as the tutorial does.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend.random import threefry2x32_p

from aigc_jax.models.im2col import conv_by_matmul
from aigc_jax.models.subpixel import StridedConv, SubpixelConvTranspose
from aigc_jax.models.winograd import WinogradConv, winograd_conv

_LEAKY_SLOPE = 0.3  # Keras' LeakyReLU default, which the tutorial uses.
_KERNEL = (5, 5)
# Winograd where both sides have this many channels (a transposed layer's output counted with its
# stride**2 phases); the layers at the 1-channel image, whose Winograd matmuls would be a few columns wide,
# take im2col / col2im instead.
_WINOGRAD_MIN_CHANNELS = 16
ALGORITHMS = ('auto', 'matmul', 'direct')


def resolve_conv_algorithm(algorithm: str, dtype) -> str:
  """'matmul' or 'direct' for a model's `conv_algorithm`: 'auto' is 'matmul' (Winograd and im2col) in
  float32 on CPU, where XLA's direct convolutions were measured slower for these layers
  (`benchmarks/RESULTS.md`), direct elsewhere (GPU/TPU convolutions are fast; Winograd's transforms lose
  precision in bfloat16)."""
  if algorithm not in ALGORITHMS:
    raise ValueError(f'conv_algorithm must be one of {", ".join(map(repr, ALGORITHMS))}, got {algorithm!r}')
  if algorithm == 'auto':
    return 'matmul' if jnp.dtype(dtype) == jnp.float32 and jax.default_backend() == 'cpu' else 'direct'
  return algorithm


def _stride1_conv(algorithm: str, channels_in: int, channels_out: int):
  """The `stride1_conv` of a subpixel.py layer: Winograd's or im2col's for 'matmul', None (XLA's direct
  convolution) for 'direct'."""
  if algorithm != 'matmul':
    return None
  return winograd_conv if min(channels_in, channels_out) >= _WINOGRAD_MIN_CHANNELS else conv_by_matmul


def _hash_counters(shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """Two uint32 counters per element of `shape`, distinct for every element: (index along axis 0, flat index
  over the other axes). Built from iotas, so a batch-sharded array's counters are computed where they live."""
  within = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(1, len(shape))):
    within = within + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride *= shape[axis]
  if stride > 2 ** 32:
    raise ValueError(f'dropout counters: {stride} elements per example exceed 2**32')
  return jax.lax.broadcasted_iota(jnp.uint32, shape, 0), within


def random_bits16(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """uint16 random bits of `shape`, four per threefry-2x32 hash: both of its 32-bit output words, split in
  halves. `jax.random.bits` XORs the two words into one, so 16-bit draws from it get two per hash, and on
  CPU the hash is most of dropout's cost (measured). Keys of other PRNG implementations take
  `jax.random.bits`'s 32-bit words, two draws each."""
  *leading, last = shape
  if str(jax.random.key_impl(key)) != 'threefry2x32':
    words = jax.random.bits(key, tuple(leading) + (-(-last // 2),), jnp.uint32)
  else:
    key_words = jax.random.key_data(key)
    words = jnp.stack(threefry2x32_p.bind(key_words[0], key_words[1],
                                          *_hash_counters(tuple(leading) + (-(-last // 4),))), axis=-1)
  halves = jax.lax.bitcast_convert_type(words, jnp.uint16)
  return halves.reshape(tuple(leading) + (-1,))[..., :last]


class Dropout16(nn.Module):
  """`nn.Dropout` that draws 16 random bits per unit instead of 32, four units per threefry hash.

  A unit is kept when its 16 bits, read as an integer, are below `round(keep * 2**16)`: the keep
  probability is exact to 2**-17 (0.7 -> 0.699997). On CPU, threefry's hashes are most of dropout's cost
  (a DCGAN b256 step without dropout was ~20 ms, ~7 %, faster), and this takes a quarter as many as
  `nn.Dropout` and half as many as two per hash (`random_bits16`; the masks of one step's D calls, measured:
  21-25 ms at two per hash, 7-10 ms at four). Kept units are scaled by 1 / keep, as flax does."""
  rate: float
  deterministic: bool = False

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate == 0.0:
      return x
    if self.rate == 1.0:
      return jnp.zeros_like(x)
    keep = 1.0 - self.rate
    threshold = round(keep * 2 ** 16)
    if threshold >= 2 ** 16:
      return x
    # Bits shaped like x, so the batch axis (and its sharding) leads.
    bits = random_bits16(self.make_rng('dropout'), x.shape)
    return jnp.where(bits < threshold, x / jnp.asarray(keep, x.dtype), jnp.zeros((), x.dtype))


def _batch_norm(train: bool, dtype):
  return nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3, dtype=dtype)


class DCGANGenerator(nn.Module):
  image_shape: tuple[int, int, int]
  widths: tuple[int, int, int] = (256, 128, 64)
  dtype: Any = jnp.float32
  # 'matmul', 'direct' or 'auto' (`resolve_conv_algorithm`): same parameters and function either way.
  conv_algorithm: str = 'auto'

  def _stride1_conv_transpose(self, algorithm, features):
    if algorithm == 'matmul':
      return WinogradConv(features, _KERNEL, use_bias=False, dtype=self.dtype, name='ConvTranspose_0')
    return nn.ConvTranspose(features, _KERNEL, strides=(1, 1), padding='SAME', use_bias=False, dtype=self.dtype,
                            name='ConvTranspose_0')

  @nn.compact
  def __call__(self, z, train: bool = True):
    algorithm = resolve_conv_algorithm(self.conv_algorithm, self.dtype)
    height, width, channels = self.image_shape
    base_h, base_w = height // 4, width // 4
    x = nn.Dense(base_h * base_w * self.widths[0], use_bias=False, dtype=self.dtype)(z.astype(self.dtype))
    x = nn.leaky_relu(_batch_norm(train, self.dtype)(x), _LEAKY_SLOPE)
    x = x.reshape(z.shape[0], base_h, base_w, self.widths[0])
    x = self._stride1_conv_transpose(algorithm, self.widths[1])(x)
    x = nn.leaky_relu(_batch_norm(train, self.dtype)(x), _LEAKY_SLOPE)
    upsample = lambda x, features: SubpixelConvTranspose(
        features, _KERNEL, strides=(2, 2), use_bias=False, dtype=self.dtype,
        stride1_conv=_stride1_conv(algorithm, x.shape[-1], 4 * features))(x)   # 4 phases at stride 2
    x = upsample(x, self.widths[2])
    x = nn.leaky_relu(_batch_norm(train, self.dtype)(x), _LEAKY_SLOPE)
    x = upsample(x, channels)
    return jnp.tanh(x).astype(jnp.float32)


class DCGANDiscriminator(nn.Module):
  widths: tuple[int, int] = (64, 128)
  dropout_rate: float = 0.3
  dtype: Any = jnp.float32
  conv_algorithm: str = 'auto'   # as the generator's

  @nn.compact
  def __call__(self, images, train: bool = True):
    algorithm = resolve_conv_algorithm(self.conv_algorithm, self.dtype)
    x = images.astype(self.dtype)
    for i, width in enumerate(self.widths):
      # nn.Conv's function and parameter names, computed in a faster equivalent form (see `subpixel.py`).
      x = StridedConv(width, _KERNEL, strides=(2, 2), dtype=self.dtype, name=f'Conv_{i}',
                      stride1_conv=_stride1_conv(algorithm, x.shape[-1], width))(x)
      x = nn.leaky_relu(x, _LEAKY_SLOPE)
      x = Dropout16(self.dropout_rate, deterministic=not train)(x)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)


def create_gan(image_shape, *, width_multiplier=1.0, dtype=jnp.float32):
  height, width, _ = image_shape
  if height % 4 or width % 4:
    raise ValueError(f'dcgan needs image height and width divisible by 4, got {image_shape}')
  scaled = lambda widths: tuple(max(1, round(n * width_multiplier)) for n in widths)
  return (DCGANGenerator(image_shape=image_shape, widths=scaled((256, 128, 64)), dtype=dtype),
          DCGANDiscriminator(widths=scaled((64, 128)), dtype=dtype))
