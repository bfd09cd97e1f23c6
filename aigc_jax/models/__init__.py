"""Model families, looked up by `config.model.name`; each reads its options from the `config.model` group.

Each family module has `create_gan(image_shape, *, width_multiplier, dtype, **options) -> (generator,
discriminator)`, where `options` are the `config.model` fields listed for it in `FAMILY_OPTIONS` (plus
`num_classes` for a family that takes `conditional`).
`vae.py` has `create_vae_<name>(image_shape, *, latent_dim, learned_std, width_multiplier, dtype, layers) -> VAE`.
GAN families in `LAYERED_FAMILIES`, and the VAEs, also take `layers` (`models/layers.py`): flax's, or the
CPU fast path's equivalents where `config.cpu_fast_path` applies (`aigc_jax/cpu`).
"""
from typing import Callable, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from aigc_jax.models import biggan, dcgan, mlp, sngan_resnet, vae
from aigc_jax.models.layers import Layers


class Gan(NamedTuple):
  generator: nn.Module      # z [B, latent_dim] (, labels [B] if conditional) -> images [B, H, W, C] in [-1, 1]
  discriminator: nn.Module  # images (, labels [B] if conditional) -> logits [B]
  num_classes: int = 0      # > 0: class-conditional; both networks then take `labels=` (int32 in [0, num_classes))

  @property
  def conditional(self) -> bool:
    return self.num_classes > 0


GAN_FAMILIES: dict[str, Callable[..., Gan]] = {
    'mlp': mlp.create_gan,
    'dcgan': dcgan.create_gan,
    'sngan_resnet': sngan_resnet.create_gan,
    'biggan': biggan.create_gan,
}
# `config.model` fields a family reads beyond name and width_multiplier. Fields of FAMILY_SPECIFIC_FIELDS
# a family does not list must keep their defaults (config_checks says so in one line).
FAMILY_OPTIONS: dict[str, tuple[str, ...]] = {
    'mlp': mlp.OPTIONS,
    'dcgan': dcgan.OPTIONS,
    'sngan_resnet': sngan_resnet.OPTIONS,
    'biggan': biggan.OPTIONS + ('latent_dim',),
}
# GAN families whose convolutions and dropout come from `Layers`.
LAYERED_FAMILIES = ('dcgan',)
FAMILY_SPECIFIC_FIELDS: dict[str, object] = {  # field -> its "not used" default
    'conditional': False, 'base_channels': 0, 'depth_multiplier': 1, 'attention_resolution': 0,
    'weight_init': 'default', 'hierarchical_latent': False, 'shared_embedding_dim': 0,
    'discriminator_dropout': None,
}


def _layers(config: ml_collections.ConfigDict) -> Layers:
  from aigc_jax import cpu  # pylint: disable=g-import-not-at-top  (the fast path imports models.layers)
  return cpu.model_layers(config)


def create_gan(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], num_classes: int = 0) -> Gan:
  """Builds the generator and discriminator that the `config.model` group names, for images of `image_shape`.

  `num_classes` is the dataset's class count; with `model.conditional` the networks are class-conditional
  over `model.num_classes` classes, or over the dataset's when that is 0.
  """
  model = config.model
  if model.name not in GAN_FAMILIES:
    raise ValueError(f'unknown model {model.name!r}; allowed: {", ".join(GAN_FAMILIES)}')
  options = FAMILY_OPTIONS.get(model.name, ())
  kwargs = {name: model[name] for name in options if name != 'conditional'}
  classes = 0
  if 'conditional' in options and model.conditional:
    classes = model.num_classes or num_classes
    if not classes:
      raise ValueError(f'conditional=True needs class labels, but the dataset has no class-label feature '
                       f'{config.data.label_key!r}; set config.data.label_key, or config.model.num_classes for '
                       'integer labels')
    if num_classes and classes < num_classes:
      raise ValueError(f'config.model.num_classes={classes} is fewer than the dataset\'s {num_classes} classes; '
                       f'allowed: 0 (the dataset\'s) or >= {num_classes}')
    kwargs['num_classes'] = classes
  if model.name in LAYERED_FAMILIES:
    kwargs['layers'] = _layers(config)
  # Activations run in `compute_dtype`; parameters and optimiser state stay float32 whatever it is.
  generator, discriminator = GAN_FAMILIES[model.name](
      tuple(image_shape), width_multiplier=model.width_multiplier, dtype=jnp.dtype(config.compute_dtype), **kwargs)
  return Gan(generator, discriminator, classes)


VAE_FAMILIES: dict[str, Callable[..., nn.Module]] = {
    'vae_conv': vae.create_vae_conv,
    'vae_mlp': vae.create_vae_mlp,
}


def create_vae(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], *,
               learned_std: bool) -> nn.Module:
  """The VAE that the `config.model` group names, for images of `image_shape` (see `models/vae.py`)."""
  model = config.model
  if model.name not in VAE_FAMILIES:
    raise ValueError(f'unknown model {model.name!r}; allowed: {", ".join(VAE_FAMILIES)}')
  return VAE_FAMILIES[model.name](tuple(image_shape), latent_dim=model.latent_dim, learned_std=learned_std,
                                  width_multiplier=model.width_multiplier, dtype=jnp.dtype(config.compute_dtype),
                                  layers=_layers(config))
