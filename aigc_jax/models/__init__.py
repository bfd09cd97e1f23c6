"""Model families, looked up by `config.model`.

Each family module has `create_gan(image_shape, *, width_multiplier, dtype) -> (generator, discriminator)`.
"""
from typing import Callable, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from aigc_jax.models import dcgan, mlp


class Gan(NamedTuple):
  generator: nn.Module      # z [B, latent_dim] -> images [B, H, W, C] in [-1, 1]
  discriminator: nn.Module  # images -> logits [B]


GAN_FAMILIES: dict[str, Callable[..., Gan]] = {
    'mlp': mlp.create_gan,
    'dcgan': dcgan.create_gan,
}


def create_gan(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> Gan:
  """Builds the generator and discriminator named by `config.model` for images of `image_shape`."""
  if config.model not in GAN_FAMILIES:
    raise ValueError(f'unknown model {config.model!r}; allowed: {", ".join(GAN_FAMILIES)}')
  # Activations run in `compute_dtype`; parameters and optimiser state stay float32 whatever it is.
  return Gan(*GAN_FAMILIES[config.model](tuple(image_shape), width_multiplier=config.width_multiplier,
                                         dtype=jnp.dtype(config.compute_dtype)))
