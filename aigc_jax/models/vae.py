"""Variational autoencoders: a diagonal-Gaussian encoder q(z | x) and a decoder whose output parameterises p(x | z).

`vae_conv` (images with height and width divisible by 4, e.g. 28x28x1 and 32x32x3):
  encoder: Conv 32 k4 s2 -> ReLU -> Conv 64 k4 s2 -> ReLU -> Dense 256 -> ReLU -> Dense 2*latent
  decoder: Dense 256 -> ReLU -> Dense (H/4)(W/4)64 -> ReLU -> ConvT 32 k4 s2 -> ReLU -> ConvT C k4 s2
`vae_mlp`: encoder H*W*C -> Dense 512 -> 256 (ReLU) -> 2*latent; decoder latent -> 256 -> 512 (ReLU) -> H*W*C.
There is no batch norm or dropout, so the network's only variables are its params. The decoder's output (`loc`) is per-pixel
logits (Bernoulli) or means (Gaussian). With a learned Gaussian scale the VAE also has one trained log
standard deviation shared by every pixel (Rybkin et al.'s sigma-VAE), initialised at sigma = 0.1 in [-1, 1]
units so that Adam, which moves it by about the learning rate per step, reaches typical values within a
few hundred steps. (A per-pixel scale output by the decoder, Kingma & Welling's Gaussian decoder,
overfits on mnist5k: its held-out negative ELBO was best at step 1,000 and then rose twentyfold by step
5,000 while the training ELBO kept improving.)
"""
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from aigc_jax.models.layers import Layers

_KERNEL = (4, 4)


class ConvEncoder(nn.Module):
  latent_dim: int
  widths: tuple[int, int, int] = (32, 64, 256)
  dtype: Any = jnp.float32
  layers: Layers = Layers()

  @nn.compact
  def __call__(self, images):
    x = images.astype(self.dtype)
    for width in self.widths[:2]:
      x = nn.relu(self.layers.conv(width, _KERNEL, strides=(2, 2), padding='SAME', dtype=self.dtype)(x))
    x = nn.relu(nn.Dense(self.widths[2], dtype=self.dtype)(x.reshape(x.shape[0], -1)))
    return nn.Dense(2 * self.latent_dim, dtype=self.dtype)(x).astype(jnp.float32)


class ConvDecoder(nn.Module):
  image_shape: tuple[int, int, int]
  widths: tuple[int, int, int] = (256, 64, 32)
  dtype: Any = jnp.float32
  layers: Layers = Layers()

  @nn.compact
  def __call__(self, z):
    height, width, channels = self.image_shape
    x = nn.relu(nn.Dense(self.widths[0], dtype=self.dtype)(z.astype(self.dtype)))
    x = nn.relu(nn.Dense(height // 4 * width // 4 * self.widths[1], dtype=self.dtype)(x))
    x = x.reshape(z.shape[0], height // 4, width // 4, self.widths[1])
    conv_transpose = lambda features: self.layers.conv_transpose(features, _KERNEL, strides=(2, 2), padding='SAME',
                                                                 dtype=self.dtype)
    x = nn.relu(conv_transpose(self.widths[2])(x))
    x = conv_transpose(channels)(x)
    return x.astype(jnp.float32)


class MLPEncoder(nn.Module):
  latent_dim: int
  hidden: Sequence[int] = (512, 256)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images):
    x = images.reshape(images.shape[0], -1).astype(self.dtype)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    return nn.Dense(2 * self.latent_dim, dtype=self.dtype)(x).astype(jnp.float32)


class MLPDecoder(nn.Module):
  image_shape: tuple[int, int, int]
  hidden: Sequence[int] = (256, 512)
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, z):
    x = z.astype(self.dtype)
    for width in self.hidden:
      x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    x = nn.Dense(math.prod(self.image_shape), dtype=self.dtype)(x)
    return x.astype(jnp.float32).reshape((z.shape[0],) + tuple(self.image_shape))


class VAE(nn.Module):
  """`encode(x) -> (mean, logvar)`, `decode(z) -> (loc, log_std or None)`; calling it runs both (for init)."""
  encoder: nn.Module
  decoder: nn.Module
  learned_std: bool = False
  initial_std: float = 0.1

  def setup(self):
    if self.learned_std:
      self.log_std = self.param('log_std', nn.initializers.constant(math.log(self.initial_std)), ())

  def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean, logvar = jnp.split(self.encoder(images), 2, axis=-1)
    return mean, logvar

  def decode(self, z: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    return self.decoder(z), (self.log_std if self.learned_std else None)

  def __call__(self, images: jax.Array, eps: jax.Array):
    mean, logvar = self.encode(images)
    return self.decode(mean + jnp.exp(0.5 * logvar) * eps)


def _scaled(widths, multiplier):
  return tuple(max(1, round(n * multiplier)) for n in widths)


def create_vae_conv(image_shape, *, latent_dim, learned_std=False, width_multiplier=1.0, dtype=jnp.float32,
                    layers=Layers()):
  height, width, _ = image_shape
  if height % 4 or width % 4:
    raise ValueError(f'vae_conv needs image height and width divisible by 4, got {image_shape}')
  return VAE(ConvEncoder(latent_dim, _scaled((32, 64, 256), width_multiplier), dtype, layers),
             ConvDecoder(tuple(image_shape), _scaled((256, 64, 32), width_multiplier), dtype, layers), learned_std)


def create_vae_mlp(image_shape, *, latent_dim, learned_std=False, width_multiplier=1.0, dtype=jnp.float32,
                   layers=Layers()):
  del layers  # dense layers only
  return VAE(MLPEncoder(latent_dim, _scaled((512, 256), width_multiplier), dtype),
             MLPDecoder(tuple(image_shape), _scaled((256, 512), width_multiplier), dtype), learned_std)
