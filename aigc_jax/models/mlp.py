"""The tutorial articles' fully connected GAN.

G: z(100) -> Dense 256 -> 512 -> 1024 (ReLU) -> H*W*C tanh.  D: H*W*C -> Dense 512 -> 256 (ReLU) -> 1 logit,
with dropout after each hidden layer when `discriminator_dropout` > 0 (the second article's D uses 0.3).
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

OPTIONS = ('discriminator_dropout',)


class MLPGenerator(nn.Module):
  image_shape: tuple[int, int, int]
  hidden: Sequence[int] = (256, 512, 1024)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z, train: bool = True):
    del train  # No batch norm or dropout.
    x = z.astype(self.dtype)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    x = nn.Dense(math.prod(self.image_shape), dtype=self.dtype)(x)
    return jnp.tanh(x).astype(jnp.float32).reshape((z.shape[0],) + tuple(self.image_shape))


class MLPDiscriminator(nn.Module):
  hidden: Sequence[int] = (512, 256)
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, train: bool = True):
    x = images.reshape(images.shape[0], -1).astype(self.dtype)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
      if self.dropout_rate:
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return nn.Dense(1, dtype=self.dtype)(x)[:, 0].astype(jnp.float32)


def create_gan(image_shape, *, width_multiplier=1.0, dtype=jnp.float32, discriminator_dropout=None):
  width = lambda n: max(1, round(n * width_multiplier))
  return (MLPGenerator(image_shape=image_shape, hidden=tuple(width(n) for n in (256, 512, 1024)), dtype=dtype),
          MLPDiscriminator(hidden=tuple(width(n) for n in (512, 256)), dropout_rate=discriminator_dropout or 0.0,
                           dtype=dtype))
