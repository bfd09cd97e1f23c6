"""Model families, looked up by `config.model`.

Each GAN family module has `create_gan(image_shape, *, width_multiplier, dtype) -> (generator, discriminator)`;
`vae.py` has `create_vae_<name>(image_shape, *, latent_dim, learned_std, width_multiplier, dtype) -> VAE`.
"""
from typing import Callable, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from aigc_jax.models import dcgan, mlp, vae


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


VAE_FAMILIES: dict[str, Callable[..., nn.Module]] = {
    'vae_conv': vae.create_vae_conv,
    'vae_mlp': vae.create_vae_mlp,
}


def create_vae(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], *,
               learned_std: bool) -> nn.Module:
  """The VAE named by `config.model` for images of `image_shape` (see `models/vae.py`)."""
  if config.model not in VAE_FAMILIES:
    raise ValueError(f'unknown model {config.model!r}; allowed: {", ".join(VAE_FAMILIES)}')
  return VAE_FAMILIES[config.model](tuple(image_shape), latent_dim=config.latent_dim, learned_std=learned_std,
                                    width_multiplier=config.width_multiplier,
                                    dtype=jnp.dtype(config.compute_dtype))
