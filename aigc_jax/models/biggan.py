"""BigGAN (Brock et al. 2019, "Large Scale GAN Training for High Fidelity Natural Image Synthesis").

The architecture of ajbrock/BigGAN-PyTorch (`BigGAN.py`: `G_arch`, `D_arch`), ch = `base_channels`
(default 64; ImageNet 128: 96) times `width_multiplier`:

  size <= 32 (CIFAR): G 4ch at base 4 (28x28: base 7), one up-block per doubling, all 4ch;
                      D 4ch: down, down, same, same
  64:  G 16ch -> 16ch, 8ch, 4ch, 2ch;           D ch, 2ch, 4ch, 8ch (each down), 16ch
  128: G 16ch -> 16ch, 8ch, 4ch, 2ch, ch;       D ch, 2ch, 4ch, 8ch, 16ch (each down), 16ch
  256: G 16ch -> 16ch, 8ch, 8ch, 4ch, 2ch, ch;  D ch, 2ch, 4ch, 8ch, 8ch, 16ch (each down), 16ch
  512: G 16ch -> 16ch, 8ch, 8ch, 4ch, 2ch, ch, ch;  D ch, ch, 2ch, 4ch, 8ch, 8ch, 16ch (each down), 16ch

What makes it BigGAN rather than SNGAN (both built from `resnet_gan`): spectral norm in G as well as D;
a wide D (hidden width = output width); with `conditional=True`, class-conditional batch norm in every G
block and the projection discriminator; `shared_embedding_dim` > 0: one class embedding shared by all G
blocks, mapped linearly (spectrally normalised, no bias) to each norm's gain and bias; `hierarchical_latent`:
z split into one chunk for G's input layer and one per stage, concatenated with the shared embedding;
self-attention at `attention_resolution` in both networks; orthogonal initialisation by default. The
off-diagonal orthogonal regularisation of G's weights is a loss term (`config.gan.g_ortho_reg`, `gan_steps.py`).
Unconditional with `hierarchical_latent`, G's norms are conditioned on z's chunks alone (compare_gan).
"""
import jax.numpy as jnp

from aigc_jax.models import resnet_gan
from aigc_jax.models.resnet_gan import Layout

# Config fields this family reads beyond width_multiplier (config_checks refuses them for other families).
OPTIONS = ('conditional', 'base_channels', 'depth_multiplier', 'attention_resolution', 'weight_init',
           'hierarchical_latent', 'shared_embedding_dim')
DEFAULT_CHANNELS = 64
_SN_EPSILON = 1e-6  # launch_BigGAN_bs256x8.sh's --SN_eps
_T, _F = True, False
_LARGE_LAYOUTS = {
    64: Layout(4, 16, ((16, _T), (8, _T), (4, _T), (2, _T)), ((1, _T), (2, _T), (4, _T), (8, _T), (16, _F))),
    128: Layout(4, 16, ((16, _T), (8, _T), (4, _T), (2, _T), (1, _T)),
                ((1, _T), (2, _T), (4, _T), (8, _T), (16, _T), (16, _F))),
    256: Layout(4, 16, ((16, _T), (8, _T), (8, _T), (4, _T), (2, _T), (1, _T)),
                ((1, _T), (2, _T), (4, _T), (8, _T), (8, _T), (16, _T), (16, _F))),
    512: Layout(4, 16, ((16, _T), (8, _T), (8, _T), (4, _T), (2, _T), (1, _T), (1, _T)),
                ((1, _T), (1, _T), (2, _T), (4, _T), (8, _T), (8, _T), (16, _T), (16, _F))),
}


def layout(image_size: int) -> Layout:
  """BigGAN-PyTorch's layout for `image_size` (see the module docstring); ValueError if there is none."""
  if image_size in _LARGE_LAYOUTS:
    return _LARGE_LAYOUTS[image_size]
  base, doublings = resnet_gan.halvings(image_size)
  if image_size > 32 or doublings == 0:
    raise ValueError(f'biggan has layouts for square images of size <= 32 that halve at least once to >= 4 '
                     f'(e.g. 28, 32) and for 64, 128, 256, 512; got {image_size}')
  return Layout(base, 4, ((4, _T),) * doublings, ((4, _T), (4, _T), (4, _F), (4, _F)))


def create_gan(image_shape, *, width_multiplier=1.0, dtype=jnp.float32, num_classes=0, base_channels=0,
               depth_multiplier=1, attention_resolution=0, weight_init='default', hierarchical_latent=False,
               shared_embedding_dim=0, latent_dim=None):
  height, width, channels = image_shape
  if height != width:
    raise ValueError(f'biggan needs square images, got {image_shape}')
  if shared_embedding_dim and not num_classes:
    raise ValueError(f'shared_embedding_dim={shared_embedding_dim} needs a class-conditional model; '
                     'allowed: conditional=True, or shared_embedding_dim=0')
  if hierarchical_latent and num_classes and not shared_embedding_dim:
    raise ValueError('a conditional hierarchical_latent concatenates z chunks with the shared class embedding; '
                     'allowed: shared_embedding_dim > 0 (BigGAN: 128), or hierarchical_latent=False')
  plan = layout(height).deepened(depth_multiplier)
  resnet_gan.check_attention(plan, height, attention_resolution)
  if hierarchical_latent and latent_dim is not None:
    chunks = len([1 for _, upsample in plan.g_blocks if upsample]) + 1
    if latent_dim % chunks:
      raise ValueError(f'hierarchical_latent splits z into {chunks} equal chunks (input + one per stage) at '
                       f'{height}x{width}, but latent_dim={latent_dim}; allowed: a multiple of {chunks}')
  ch = max(1, round((base_channels or DEFAULT_CHANNELS) * width_multiplier))
  init = resnet_gan.initializer('orthogonal' if weight_init == 'default' else weight_init)
  generator = resnet_gan.ResNetGenerator(
      plan, ch, channels, num_classes=num_classes, shared_embedding_dim=shared_embedding_dim,
      hierarchical=hierarchical_latent, spectral_norm=True, attention_resolution=attention_resolution,
      sn_eps=_SN_EPSILON, kernel_init=init, residual_init=init, embedding_init=init, dtype=dtype)
  discriminator = resnet_gan.ResNetDiscriminator(
      plan, ch, num_classes=num_classes, wide=True, attention_resolution=attention_resolution, sn_eps=_SN_EPSILON,
      kernel_init=init, residual_init=init, dtype=dtype)
  return generator, discriminator
