"""DCGAN (Radford, Metz & Chintala, 2016), as the TensorFlow DCGAN tutorial builds it, for any image size
divisible by 4.

Generator: project z and reshape, then transposed convolutions that double the resolution, each but the
last followed by batch norm and LeakyReLU; tanh at the output. Discriminator: strided convolutions with
LeakyReLU and dropout (the tutorial's 0.3; `discriminator_dropout` sets another rate, 0 removes it), then
one logit. Batch norm uses Keras' momentum and epsilon (0.99, 1e-3), and LeakyReLU Keras' slope 0.3, as
the tutorial does.
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from aigc_jax.models.layers import Layers

_LEAKY_SLOPE = 0.3
_KERNEL = (5, 5)
_DROPOUT_RATE = 0.3
OPTIONS = ('discriminator_dropout',)


class DCGANGenerator(nn.Module):
  image_shape: tuple[int, int, int]
  widths: tuple[int, int, int] = (256, 128, 64)
  dtype: Any = jnp.float32
  layers: Layers = Layers()

  @nn.compact
  def __call__(self, z, train: bool = True):
    height, width, channels = self.image_shape
    batch_norm = lambda x: nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-3,
                                        dtype=self.dtype)(x)
    conv_transpose = lambda features, stride: self.layers.conv_transpose(
        features, _KERNEL, strides=(stride, stride), padding='SAME', use_bias=False, dtype=self.dtype)

    x = nn.Dense(height // 4 * width // 4 * self.widths[0], use_bias=False, dtype=self.dtype)(z.astype(self.dtype))
    x = nn.leaky_relu(batch_norm(x), _LEAKY_SLOPE)
    x = x.reshape(z.shape[0], height // 4, width // 4, self.widths[0])
    x = nn.leaky_relu(batch_norm(conv_transpose(self.widths[1], 1)(x)), _LEAKY_SLOPE)   # H/4
    x = nn.leaky_relu(batch_norm(conv_transpose(self.widths[2], 2)(x)), _LEAKY_SLOPE)   # H/2
    x = conv_transpose(channels, 2)(x)                                                    # H
    return jnp.tanh(x).astype(jnp.float32)


class DCGANDiscriminator(nn.Module):
  widths: tuple[int, int] = (64, 128)
  dropout_rate: float = _DROPOUT_RATE
  dtype: Any = jnp.float32
  layers: Layers = Layers()

  @nn.compact
  def __call__(self, images, train: bool = True):
    x = images.astype(self.dtype)
    for width in self.widths:                                                             # H/2, H/4
      x = self.layers.conv(width, _KERNEL, strides=(2, 2), padding='SAME', dtype=self.dtype)(x)
      x = nn.leaky_relu(x, _LEAKY_SLOPE)
      if self.dropout_rate:
        x = self.layers.dropout(self.dropout_rate)(x, deterministic=not train)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)


def create_gan(image_shape, *, width_multiplier=1.0, dtype=jnp.float32, layers=Layers(), discriminator_dropout=None):
  height, width, _ = image_shape
  if height % 4 or width % 4:
    raise ValueError(f'dcgan needs image height and width divisible by 4, got {image_shape}')
  scaled = lambda widths: tuple(max(1, round(n * width_multiplier)) for n in widths)
  return (DCGANGenerator(image_shape=image_shape, widths=scaled((256, 128, 64)), dtype=dtype, layers=layers),
          DCGANDiscriminator(widths=scaled((64, 128)), dtype=dtype, layers=layers,
                             dropout_rate=_DROPOUT_RATE if discriminator_dropout is None else discriminator_dropout))
