"""SNGAN's ResNet generator and discriminator (Miyato et al. 2018, "Spectral Normalization for GANs").

Layouts, with ch = `base_channels` (default 64) times `width_multiplier`, as in pfnet-research/
sngan_projection (`gen_models/resnet*.py`, `dis_models/snresnet*.py`) and Mimicry's ports:

  size <= 32 (CIFAR-10): G 4ch (256) at base 4 (28x28: base 7), one up-block per doubling, all 4ch;
                         D 2ch (128): down, down, same, same
  48 (STL-10): base 6, G 8ch -> 4ch -> 2ch -> ch; D ch, 2ch, 4ch, 8ch (each down), 16ch
  64:          base 4, G 16ch -> 8ch -> 4ch -> 2ch -> ch; D ch, 2ch, 4ch, 8ch, 16ch (each down)
  128:         base 4, G 16ch -> 16ch -> 8ch -> 4ch -> 2ch -> ch; D ch .. 16ch (each down), 16ch

Spectral norm in D only; batch norm in G. D's hidden width is its block's input width (SNGAN's "skinny"
D; BigGAN widens it). Initialisation as the Chainer code: Glorot-uniform, gain sqrt(2) on the residual
3x3 convolutions, 1 elsewhere. `conditional=True` gives the class-conditional model of Miyato & Koyama
2018 ("cGANs with projection discriminator"): per-class batch-norm gains and biases in G (starting at the
identity) and the projection discriminator.
"""
import math

import flax.linen as nn
import jax.numpy as jnp

from aigc_jax.models import resnet_gan
from aigc_jax.models.resnet_gan import Layout

# Config fields this family reads beyond width_multiplier (config_checks refuses them for other families).
OPTIONS = ('conditional', 'base_channels', 'depth_multiplier', 'attention_resolution', 'weight_init')
DEFAULT_CHANNELS = 64
_LARGE_LAYOUTS = {
    48: Layout(6, 8, ((4, True), (2, True), (1, True)), ((1, True), (2, True), (4, True), (8, True), (16, False))),
    64: Layout(4, 16, ((8, True), (4, True), (2, True), (1, True)),
               ((1, True), (2, True), (4, True), (8, True), (16, True))),
    128: Layout(4, 16, ((16, True), (8, True), (4, True), (2, True), (1, True)),
                ((1, True), (2, True), (4, True), (8, True), (16, True), (16, False))),
}


def layout(image_size: int) -> Layout:
  """The published layout for `image_size` (see the module docstring); ValueError if there is none."""
  if image_size in _LARGE_LAYOUTS:
    return _LARGE_LAYOUTS[image_size]
  base, doublings = resnet_gan.halvings(image_size)
  if image_size > 32 or doublings == 0:
    raise ValueError(f'sngan_resnet has layouts for square images of size <= 32 that halve at least once to '
                     f'>= 4 (e.g. 28, 32) and for 48, 64, 128; got {image_size}')
  return Layout(base, 4, ((4, True),) * doublings, ((2, True), (2, True), (2, False), (2, False)))


def initializers(weight_init: str):
  """`(kernel_init, residual_init)` for the config's `weight_init`."""
  if weight_init == 'default':  # Chainer's GlorotUniform(); GlorotUniform(sqrt(2)) in the residual path
    glorot = lambda gain: nn.initializers.variance_scaling(gain ** 2, 'fan_avg', 'uniform')
    return glorot(1.0), glorot(math.sqrt(2.0))
  init = resnet_gan.initializer(weight_init)
  return init, init


def create_gan(image_shape, *, width_multiplier=1.0, dtype=jnp.float32, num_classes=0, base_channels=0,
               depth_multiplier=1, attention_resolution=0, weight_init='default'):
  height, width, channels = image_shape
  if height != width:
    raise ValueError(f'sngan_resnet needs square images, got {image_shape}')
  plan = layout(height).deepened(depth_multiplier)
  resnet_gan.check_attention(plan, height, attention_resolution)
  ch = max(1, round((base_channels or DEFAULT_CHANNELS) * width_multiplier))
  kernel_init, residual_init = initializers(weight_init)
  generator = resnet_gan.ResNetGenerator(
      plan, ch, channels, num_classes=num_classes, spectral_norm=False, attention_resolution=attention_resolution,
      kernel_init=kernel_init, residual_init=residual_init, embedding_init=nn.initializers.zeros_init(),
      dtype=dtype)
  discriminator = resnet_gan.ResNetDiscriminator(
      plan, ch, num_classes=num_classes, wide=False, attention_resolution=attention_resolution,
      kernel_init=kernel_init, residual_init=residual_init, dtype=dtype)
  return generator, discriminator
