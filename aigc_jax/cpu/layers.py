"""Drop-in equivalents of flax's `Conv`, `ConvTranspose` and `Dropout` that XLA:CPU runs faster.

Each class has the flax layer's name, fields, parameters and function, so a model built with them has the
same parameter tree (flax names a child after its class: `Conv_0`, `ConvTranspose_1`, ...) and checkpoints
move between the two. Only the computation differs:

- strided convolutions, plain and transposed, in their polyphase and sub-pixel forms (`subpixel.py`);
- the stride-1 convolutions inside them, with odd kernels, by Winograd's minimal filtering where both sides
  have many channels (`winograd.py`); with few channels on one side, or even kernels, they keep XLA's;
- dropout from 16 random bits per unit, four per threefry hash, where flax draws 32 bits per unit.

They cover the forms the models use ('SAME' padding, equal strides, no dilation or groups) and refuse others
with a ValueError. `aigc_jax.cpu.fast_layers` hands them to a model; the models never import them.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend.random import threefry2x32_p

from aigc_jax.cpu import subpixel
from aigc_jax.cpu.winograd import winograd_conv

# Winograd where both sides have this many channels (a transposed layer's output counted with its
# stride**2 phases); with fewer on one side its matmuls would be a few columns wide.
WINOGRAD_MIN_CHANNELS = 16


def stride1_conv_for(kernel_size, channels_in: int, channels_out: int):
  """The stride-1 convolution algorithm for these channel counts: Winograd, or None (XLA's direct
  convolution) for few channels on one side and for even kernels, whose 'SAME' padding Conv and
  ConvTranspose place apart."""
  if any(k % 2 == 0 for k in kernel_size) or min(channels_in, channels_out) < WINOGRAD_MIN_CHANNELS:
    return None
  return winograd_conv


def _check_form(layer: nn.Module) -> int:
  """The stride of `layer`, after checking it is a form these layers compute."""
  strides = layer.strides if layer.strides is not None else (1, 1)
  strides = (strides,) * 2 if isinstance(strides, int) else tuple(strides)
  if (len(layer.kernel_size) != 2 or len(strides) != 2 or strides[0] != strides[1] or layer.padding != 'SAME'
      or any(k < s for k, s in zip(layer.kernel_size, strides))):
    raise ValueError(f'the CPU fast path computes 2-D convolutions with padding SAME and equal strides no larger '
                     f'than the kernel; got kernel {layer.kernel_size}, strides {layer.strides}, padding '
                     f'{layer.padding!r} (set config.cpu_fast_path=off for other forms)')
  return strides[0]


class _ConvFields(nn.Module):
  """The fields of flax's `Conv` and `ConvTranspose` that the models set."""
  features: int
  kernel_size: tuple[int, int]
  strides: Any = 1
  padding: Any = 'SAME'
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()


class Conv(_ConvFields):
  """`nn.Conv` with padding 'SAME': same parameters and function."""

  @nn.compact
  def __call__(self, x):
    stride = _check_form(self)
    x, kernel, bias = subpixel.conv_params(self, x)
    algorithm = stride1_conv_for(self.kernel_size, x.shape[-1], self.features)
    if stride == 1:
      y = (algorithm or subpixel.xla_conv)(x, kernel, subpixel.stride1_padding('SAME', self.kernel_size))
    elif algorithm is None:
      y = subpixel.conv_strided(x, kernel, stride)
    else:
      y = subpixel.conv_strided_space_to_depth(x, kernel, stride, algorithm)
    return y + bias if bias is not None else y


class ConvTranspose(_ConvFields):
  """`nn.ConvTranspose` with padding 'SAME' and `transpose_kernel=False`: same parameters and function."""

  @nn.compact
  def __call__(self, x):
    stride = _check_form(self)
    x, kernel, bias = subpixel.conv_params(self, x)
    if stride == 1:  # odd kernels: the transposed convolution is the same correlation as the plain one
      algorithm = stride1_conv_for(self.kernel_size, x.shape[-1], self.features)
      if algorithm is None:
        y = jax.lax.conv_transpose(x, kernel, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      else:
        y = algorithm(x, kernel, subpixel.stride1_padding('SAME', self.kernel_size))
    else:
      algorithm = stride1_conv_for(self.kernel_size, x.shape[-1], stride * stride * self.features)
      y = subpixel.conv_transpose_subpixel(x, kernel, stride, stride1_conv=algorithm)
    return y + bias if bias is not None else y


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
  """uint16 random bits of `shape`, four per threefry-2x32 hash: both of its 32-bit output words, halved.
  `jax.random.bits` XORs the two words into one, so 16-bit draws from it get two per hash, and on CPU the
  hash is most of dropout's cost. Keys of other PRNG implementations take `jax.random.bits`'s words."""
  *leading, last = shape
  if str(jax.random.key_impl(key)) != 'threefry2x32':
    words = jax.random.bits(key, tuple(leading) + (-(-last // 2),), jnp.uint32)
  else:
    key_words = jax.random.key_data(key)
    words = jnp.stack(threefry2x32_p.bind(key_words[0], key_words[1],
                                          *_hash_counters(tuple(leading) + (-(-last // 4),))), axis=-1)
  halves = jax.lax.bitcast_convert_type(words, jnp.uint16)
  return halves.reshape(tuple(leading) + (-1,))[..., :last]


class Dropout(nn.Module):
  """`nn.Dropout` (no broadcast dimensions) from 16 random bits per unit.

  A unit is kept when its 16 bits, read as an integer, are below `round(keep * 2**16)`: the keep
  probability is exact to 2**-17. Kept units are scaled by 1 / keep, as flax does. The masks differ from
  flax's for the same key; their distribution is the same."""
  rate: float
  broadcast_dims: tuple[int, ...] = ()
  deterministic: bool | None = None
  rng_collection: str = 'dropout'

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng: jax.Array | None = None):
    if self.broadcast_dims:
      raise ValueError('the CPU fast path\'s Dropout has no broadcast_dims (set config.cpu_fast_path=off)')
    deterministic = nn.merge_param('deterministic', self.deterministic, deterministic)
    if deterministic or self.rate == 0.0:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep = 1.0 - self.rate
    threshold = round(keep * 2 ** 16)
    if threshold >= 2 ** 16:
      return inputs
    bits = random_bits16(rng if rng is not None else self.make_rng(self.rng_collection), inputs.shape)
    return jnp.where(bits < threshold, inputs / jnp.asarray(keep, inputs.dtype), jnp.zeros((), inputs.dtype))
