"""Analytic model FLOPs of one train step, counted layer by layer from the config and the image shape.

The formula (only matmuls and convolutions count; elementwise ops, batch norm, the optimiser are left out):

* A layer's forward pass costs `F = 2 * MACs`. For a dense layer, MACs = B * n_in * n_out. For a
  convolution, MACs = B * C_in * C_out * (valid taps along H) * (valid taps along W), where the valid taps
  along an axis are the (output position, kernel tap) pairs that read a real input pixel, not padding
  (`_conv_taps`, `_conv_transpose_taps`). That is the useful work; XLA's cost analysis also counts the
  taps that multiply padding, so it reads somewhat higher for the DCGAN's 5x5 kernels on 7x7 maps.
* Its backward pass costs `F` for the weight gradient plus `F` for the input gradient, and the input
  gradient is not computed where nothing needs it: the first layer of the network the loss is
  differentiated through does not send a gradient into the data or the latents.
* One train step (see `gan_steps.train_step`), batch B, per discriminator update (`n_critic` of them):
    G forward on B latents (the fakes) + D forward on 2B (real and fake together)
    + D backward on 2B (weight gradients; input gradients for every layer but the first);
  and then one generator update:
    G forward on B + D forward on B + D backward on B, input gradients only (D's weights are not updated)
    + G backward on B (weight gradients; input gradients for every layer but the first).
  With `gan_update='simultaneous'` (one batch per step), the generator update reuses the critic update's
  forward pass: it costs only D's input gradients on the B fakes (every layer) + G backward on B, i.e. one
  G forward and one D forward on B less than the alternating step. (`gan_steps.simultaneous_update` runs that
  input-gradient pass over the fakes only when D has no batch statistics; with them, D sees real and fake
  in one call and the pass covers all 2B rows, the real rows' cotangent zero: XLA's count then includes
  the B rows of wasted work, this formula does not.)
* One VAE step (`vae_steps.train_step`), batch B: encoder forward + decoder forward on B, then the decoder
  backward (weight gradients and input gradients at every layer: the gradient reaches the latents and
  goes on into the encoder) + the encoder backward (weight gradients; input gradients for every layer
  but the first). The KL term, the likelihood and the reparameterisation are elementwise.
"""
import dataclasses
import math

import ml_collections

from aigc_jax.models import biggan, resnet_gan, sngan_resnet


@dataclasses.dataclass(frozen=True)
class Layer:
  """One matmul or convolution: its forward MACs per example."""
  name: str
  macs: int


def _conv_taps(size: int, kernel: int, stride: int) -> int:
  """(output, tap) pairs of a 'SAME' convolution along one axis that read a real input pixel."""
  out = -(-size // stride)
  before = max((out - 1) * stride + kernel - size, 0) // 2
  return sum(0 <= o * stride + t - before < size for o in range(out) for t in range(kernel))


def _conv_transpose_taps(size: int, kernel: int, stride: int) -> int:
  """(output, tap) pairs of a 'SAME' transposed convolution along one axis that read a real input pixel: the
  input dilated by `stride` and padded as `lax.conv_transpose` pads it, then a stride-1 correlation."""
  before = kernel - 1 if stride > kernel - 1 else -(-(kernel + stride - 2) // 2)
  return sum(0 <= o + t - before < size * stride and (o + t - before) % stride == 0
             for o in range(size * stride) for t in range(kernel))


def _width(n: int, multiplier: float) -> int:
  return max(1, round(n * multiplier))  # as the model families scale their widths


def mlp_layers(config: ml_collections.ConfigDict, image_shape) -> tuple[list[Layer], list[Layer]]:
  """Generator and discriminator layers of `models/mlp.py`."""
  pixels = math.prod(image_shape)
  g_widths = [config.model.latent_dim] + [_width(n, config.model.width_multiplier) for n in (256, 512, 1024)] + [pixels]
  d_widths = [pixels] + [_width(n, config.model.width_multiplier) for n in (512, 256)] + [1]
  dense = lambda prefix, w: [Layer(f'{prefix}.dense{i}', a * b) for i, (a, b) in enumerate(zip(w, w[1:]))]
  return dense('G', g_widths), dense('D', d_widths)


def dcgan_layers(config: ml_collections.ConfigDict, image_shape) -> tuple[list[Layer], list[Layer]]:
  """Generator and discriminator layers of `models/dcgan.py` (5x5 kernels)."""
  height, width, channels = image_shape
  g1, g2, g3 = (_width(n, config.model.width_multiplier) for n in (256, 128, 64))
  d1, d2 = (_width(n, config.model.width_multiplier) for n in (64, 128))
  h4, w4 = height // 4, width // 4
  tconv = lambda name, h, w, s, c_in, c_out: Layer(
      name, _conv_transpose_taps(h, 5, s) * _conv_transpose_taps(w, 5, s) * c_in * c_out)
  conv = lambda name, h, w, c_in, c_out: Layer(name, _conv_taps(h, 5, 2) * _conv_taps(w, 5, 2) * c_in * c_out)
  generator = [Layer('G.dense', config.model.latent_dim * h4 * w4 * g1),
               tconv('G.tconv1_s1', h4, w4, 1, g1, g2),
               tconv('G.tconv2_s2', h4, w4, 2, g2, g3),
               tconv('G.tconv3_s2', 2 * h4, 2 * w4, 2, g3, channels)]
  discriminator = [conv('D.conv1_s2', height, width, channels, d1),
                   conv('D.conv2_s2', -(-height // 2), -(-width // 2), d1, d2),
                   Layer('D.dense', -(-height // 4) * -(-width // 4) * d2)]
  return generator, discriminator


def _attention(name: str, size: int, channels: int) -> list[Layer]:
  """SAGAN attention at `size` x `size`: four 1x1 convolutions and two matmuls over (size^2, size^2 / 4)."""
  keys, values, positions = max(1, channels // 8), max(1, channels // 2), size * size
  return [Layer(f'{name}.qkv', positions * channels * (2 * keys + values)),
          Layer(f'{name}.scores', positions * (positions // 4) * keys),
          Layer(f'{name}.weighted', positions * (positions // 4) * values),
          Layer(f'{name}.out', positions * values * channels)]


def resnet_gan_layers(config: ml_collections.ConfigDict, image_shape) -> tuple[list[Layer], list[Layer]]:
  """Generator and discriminator layers of `models/resnet_gan.py` as `sngan_resnet` or `biggan` lays it out
  (3x3 convolutions with 'SAME' padding; the class-conditional norms' linear maps; self-attention)."""
  family = {'sngan_resnet': sngan_resnet, 'biggan': biggan}[config.model.name]
  size, _, channels = image_shape
  plan = family.layout(size).deepened(config.model.depth_multiplier)
  ch = max(1, round((config.model.base_channels or family.DEFAULT_CHANNELS) * config.model.width_multiplier))
  width = lambda multiplier: resnet_gan.width(ch, multiplier)
  conv = lambda name, at, kernel, c_in, c_out: Layer(name, _conv_taps(at, kernel, 1) ** 2 * c_in * c_out)
  stages = sum(upsample for _, upsample in plan.g_blocks)
  hierarchical = config.model.name == 'biggan' and config.model.hierarchical_latent
  chunk = config.model.latent_dim // (stages + 1) if hierarchical else 0
  shared = config.model.name == 'biggan' and config.model.conditional
  condition = chunk + (config.model.shared_embedding_dim if shared else 0)
  at, c_in = plan.base, width(plan.g_input)
  generator = [Layer('G.input', (chunk or config.model.latent_dim) * at * at * c_in)]
  for index, (multiplier, upsample) in enumerate(plan.g_blocks):
    at, c_out = at * (2 if upsample else 1), width(multiplier)
    if condition:  # gain and bias of both norms from the condition vector
      generator.append(Layer(f'G.block{index}.norms', 2 * condition * (c_in + c_out)))
    generator += [conv(f'G.block{index}.conv1', at, 3, c_in, c_out), conv(f'G.block{index}.conv2', at, 3, c_out, c_out)]
    if c_in != c_out or upsample:
      generator.append(conv(f'G.block{index}.shortcut', at, 1, c_in, c_out))
    last_of_stage = index + 1 == len(plan.g_blocks) or plan.g_blocks[index + 1][1]
    if last_of_stage and at == config.model.attention_resolution:
      generator += _attention('G.attention', at, c_out)
    c_in = c_out
  generator.append(conv('G.output_conv', at, 3, c_in, channels))
  at, c_in, attended, discriminator = size, channels, False, []
  for index, (multiplier, downsample) in enumerate(plan.d_blocks):
    c_out = width(multiplier)
    hidden = c_out if config.model.name == 'biggan' or index == 0 else c_in
    discriminator += [conv(f'D.block{index}.conv1', at, 3, c_in, hidden),
                      conv(f'D.block{index}.conv2', at, 3, hidden, c_out)]
    after = at // 2 if downsample else at
    if c_in != c_out or downsample:  # pre-activation blocks convolve before pooling, the first block after
      discriminator.append(conv(f'D.block{index}.shortcut', at if index else after, 1, c_in, c_out))
    at, c_in = after, c_out
    if at == config.model.attention_resolution and not attended:
      discriminator += _attention('D.attention', at, c_out)
      attended = True
  discriminator.append(Layer('D.output', c_in))
  if config.model.conditional:
    discriminator.append(Layer('D.projection', c_in))
  return generator, discriminator


LAYER_COUNTERS = {'mlp': mlp_layers, 'dcgan': dcgan_layers, 'sngan_resnet': resnet_gan_layers,
                  'biggan': resnet_gan_layers}


def vae_conv_layers(config: ml_collections.ConfigDict, image_shape) -> tuple[list[Layer], list[Layer]]:
  """Encoder and decoder layers of `models/vae.py`'s `vae_conv` (4x4 kernels)."""
  height, width, channels = image_shape
  e1, e2, e3 = (_width(n, config.model.width_multiplier) for n in (32, 64, 256))
  d1, d2, d3 = (_width(n, config.model.width_multiplier) for n in (256, 64, 32))
  h2, w2, h4, w4 = -(-height // 2), -(-width // 2), -(-height // 4), -(-width // 4)
  encoder = [Layer('E.conv1_s2', _conv_taps(height, 4, 2) * _conv_taps(width, 4, 2) * channels * e1),
             Layer('E.conv2_s2', _conv_taps(h2, 4, 2) * _conv_taps(w2, 4, 2) * e1 * e2),
             Layer('E.dense1', h4 * w4 * e2 * e3),
             Layer('E.dense2', e3 * 2 * config.model.latent_dim)]
  decoder = [Layer('D.dense1', config.model.latent_dim * d1),
             Layer('D.dense2', d1 * (height // 4) * (width // 4) * d2),
             Layer('D.tconv1_s2', _conv_transpose_taps(height // 4, 4, 2) * _conv_transpose_taps(width // 4, 4, 2)
                   * d2 * d3),
             Layer('D.tconv2_s2', _conv_transpose_taps(height // 2, 4, 2) * _conv_transpose_taps(width // 2, 4, 2)
                   * d3 * channels)]
  return encoder, decoder


def vae_mlp_layers(config: ml_collections.ConfigDict, image_shape) -> tuple[list[Layer], list[Layer]]:
  """Encoder and decoder layers of `models/vae.py`'s `vae_mlp`."""
  pixels = math.prod(image_shape)
  e_widths = [pixels] + [_width(n, config.model.width_multiplier) for n in (512, 256)] + [2 * config.model.latent_dim]
  d_widths = [config.model.latent_dim] + [_width(n, config.model.width_multiplier) for n in (256, 512)] + [pixels]
  dense = lambda prefix, w: [Layer(f'{prefix}.dense{i}', a * b) for i, (a, b) in enumerate(zip(w, w[1:]))]
  return dense('E', e_widths), dense('D', d_widths)


VAE_LAYER_COUNTERS = {'vae_conv': vae_conv_layers, 'vae_mlp': vae_mlp_layers}


def _forward(layers: list[Layer]) -> int:
  return sum(2 * layer.macs for layer in layers)


def _backward(layers: list[Layer], *, weights: bool, inputs: bool) -> int:
  """Weight gradients of every layer and/or input gradients of every layer but the first."""
  return (_forward(layers) if weights else 0) + (_forward(layers[1:]) if inputs else 0)


def train_step_flops(config: ml_collections.ConfigDict, image_shape) -> int:
  """Model FLOPs of one `gan_steps.train_step` (or `vae_steps.train_step`) at `config.batch_size` (global), as in the
  module docstring."""
  if config.model.name in VAE_LAYER_COUNTERS:
    encoder, decoder = VAE_LAYER_COUNTERS[config.model.name](config, tuple(image_shape))
    return config.batch_size * (_forward(encoder) + _forward(decoder) + 2 * _forward(decoder)
                                + _backward(encoder, weights=True, inputs=True))
  generator, discriminator = LAYER_COUNTERS[config.model.name](config, tuple(image_shape))
  batch = config.batch_size
  critic_update = (batch * _forward(generator) + 2 * batch * _forward(discriminator)
                   + 2 * batch * _backward(discriminator, weights=True, inputs=True))
  # Through D into G: D's input gradient at every D layer, including the first (it reaches the fakes);
  # that costs one D forward.
  generator_update = (batch * _forward(generator) + 2 * batch * _forward(discriminator)
                      + batch * _backward(generator, weights=True, inputs=True))
  if config.gan.update_scheme == 'simultaneous':
    return critic_update + generator_update - batch * (_forward(generator) + _forward(discriminator))
  return config.gan.n_critic * critic_update + generator_update
