"""The residual generator and projection discriminator that `sngan_resnet` and `biggan` lay out.

Generator (Miyato et al. 2018; Brock et al. 2019): z -> Dense -> [base, base, C0] -> up-blocks -> BN -> ReLU
-> conv3x3 -> tanh. An up-block is BN -> ReLU -> 2x nearest upsample -> conv3x3 -> BN -> ReLU -> conv3x3,
plus a shortcut (upsample -> conv1x1 when the shape changes). The batch norms of the blocks are
conditional when the generator is given a condition per stage:
  * class labels alone: per-layer class embeddings give each norm's gain and bias (SNGAN-projection);
  * a vector (BigGAN's shared class embedding, and/or its chunk of z with a hierarchical latent): a
    linear map of it gives them, gain = 1 + W_g c, bias = W_b c.

Discriminator: an "optimised" first block (conv3x3 -> ReLU -> conv3x3 -> avgpool; shortcut avgpool ->
conv1x1), pre-activation residual blocks (ReLU -> conv3x3 -> ReLU -> conv3x3 [-> avgpool]; shortcut
conv1x1 [-> avgpool]), ReLU, a global sum pool h, and `Dense(1)(h)` plus, class-conditional, the
projection term <embed(y), h> (Miyato & Koyama 2018). Every weight of D is spectrally normalised.

G's layers that feed batch norm (the input layer and every block convolution) have no bias: every path from
them meets a batch norm, which cancels a per-channel constant, so their gradient is zero in exact arithmetic
and Adam would turn its rounding noise into updates of size lr. BigGAN-PyTorch and Chainer-SNGAN keep them
(the published parameter counts include them); only a bias ahead of G's self-attention reaches anything
(the attention logits' key term) and is lost here.

Spectral normalisation is flax's `nn.SpectralNorm`: one power-iteration step per training forward pass,
its vector `u` and estimate `sigma` live in the `batch_stats` collection (named `<layer>_sn`), so the
train state carries them. A stage can end in SAGAN/BigGAN self-attention at one resolution.
Module names are stable and descriptive (`block3/conv1`, `attention/theta`, `class_embedding`, ...) for
partition rules that match parameter paths.
"""
import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]
_BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1, as the reference implementations use
_BN_EPSILON = 1e-5


@dataclasses.dataclass(frozen=True)
class Layout:
  """A network's shape in multiples of the base width `ch`.

  `g_blocks`: (width multiplier, upsample) of each generator block, after `g_input` channels at
  `base x base`; `d_blocks`: (width multiplier, downsample) of each discriminator block.
  """
  base: int
  g_input: int
  g_blocks: tuple[tuple[int, bool], ...]
  d_blocks: tuple[tuple[int, bool], ...]

  def deepened(self, depth: int) -> 'Layout':
    """Each block followed by `depth - 1` more blocks of its width at its output resolution."""
    deepen = lambda blocks: tuple(b for block in blocks for b in [block] + [(block[0], False)] * (depth - 1))
    return dataclasses.replace(self, g_blocks=deepen(self.g_blocks), d_blocks=deepen(self.d_blocks))

  def g_resolutions(self) -> list[int]:
    """Output resolution of each generator block."""
    sizes, size = [], self.base
    for _, upsample in self.g_blocks:
      size *= 2 if upsample else 1
      sizes.append(size)
    return sizes

  def d_resolutions(self, image_size: int) -> list[int]:
    """Output resolution of each discriminator block."""
    sizes, size = [], image_size
    for _, downsample in self.d_blocks:
      size //= 2 if downsample else 1
      sizes.append(size)
    return sizes


def halvings(size: int) -> tuple[int, int]:
  """`(base, n)`: `size = base * 2**n` with `n` as large as keeps `base >= 4` (32 -> (4, 3), 28 -> (7, 2))."""
  base, n = size, 0
  while base % 2 == 0 and base // 2 >= 4:
    base, n = base // 2, n + 1
  return base, n


def check_attention(layout: Layout, image_size: int, resolution: int) -> None:
  """Raises ValueError unless `resolution` (0 = off) is an output resolution of both networks' blocks."""
  if not resolution:
    return
  allowed = sorted(set(layout.g_resolutions()) & set(layout.d_resolutions(image_size)))
  if resolution not in allowed:
    raise ValueError(f'attention_resolution={resolution} is not a block resolution of both networks at '
                     f'{image_size}x{image_size}; allowed: 0 (off) or {", ".join(map(str, allowed))}')


# Weight initialisations (`config.model.weight_init`); 'default' is each family's published one.
WEIGHT_INITS = ('default', 'orthogonal', 'normal', 'xavier_uniform')


def initializer(name: str) -> Initializer:
  """BigGAN-PyTorch's `G_init`/`D_init`: 'orthogonal' (ortho), 'normal' (N02: N(0, 0.02)), 'xavier_uniform'."""
  return {'orthogonal': nn.initializers.orthogonal(), 'normal': nn.initializers.normal(0.02),
          'xavier_uniform': nn.initializers.xavier_uniform()}[name]


def width(ch: int, multiplier: int) -> int:
  return max(1, ch * multiplier)


def apply_layer(layer: nn.Module, x: jax.Array, *, spectral_norm: bool, train: bool, eps: float) -> jax.Array:
  """`layer(x)`, with `layer`'s weights spectrally normalised when `spectral_norm`.

  In training (`train=True`) the power iteration's `u` and `sigma` are updated in `batch_stats`; in
  inference they are read only. The layer keeps its own parameter names either way.
  """
  if not spectral_norm:
    return layer(x)
  return nn.SpectralNorm(layer, epsilon=eps, name=f'{layer.name}_sn')(x, update_stats=train)


def _upsample(x: jax.Array) -> jax.Array:
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest neighbour, as F.interpolate


def _downsample(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (2, 2), strides=(2, 2))


class ConditionalBatchNorm(nn.Module):
  """Batch norm whose gain and bias come from a condition.

  `condition` None: plain batch norm with learned scale and bias. Integer labels `[B]`: per-class
  embeddings (gain = 1 + embed_g(y)). A float vector `[B, D]`: linear maps (gain = 1 + W_g c),
  spectrally normalised when `spectral_norm`.
  """
  num_classes: int = 0
  spectral_norm: bool = False
  sn_eps: float = 1e-12
  kernel_init: Initializer = nn.initializers.orthogonal()
  embedding_init: Initializer = nn.initializers.zeros_init()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, condition=None, *, train: bool):
    affine = condition is None
    x = nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, use_scale=affine,
                     use_bias=affine, dtype=self.dtype, name='bn')(x)
    if affine:
      return x
    features = x.shape[-1]
    if jnp.issubdtype(condition.dtype, jnp.integer):
      gain = nn.Embed(self.num_classes, features, embedding_init=self.embedding_init, name='gain')(condition)
      bias = nn.Embed(self.num_classes, features, embedding_init=self.embedding_init, name='bias')(condition)
    else:
      linear = lambda name: nn.Dense(features, use_bias=False, kernel_init=self.kernel_init, dtype=self.dtype,
                                     name=name)
      kw = dict(spectral_norm=self.spectral_norm, train=train, eps=self.sn_eps)
      gain = apply_layer(linear('gain'), condition.astype(self.dtype), **kw)
      bias = apply_layer(linear('bias'), condition.astype(self.dtype), **kw)
    return x * (1 + gain[:, None, None, :].astype(x.dtype)) + bias[:, None, None, :].astype(x.dtype)


class SelfAttention(nn.Module):
  """SAGAN's self-attention as BigGAN uses it: x + gamma * o(softmax(theta phi^T) g), gamma starting at 0,
  with phi and g max-pooled 2x2, and 1x1 convolutions without bias."""
  spectral_norm: bool = True
  sn_eps: float = 1e-12
  kernel_init: Initializer = nn.initializers.orthogonal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    batch, height, width_, channels = x.shape
    conv = lambda features, name, h: apply_layer(
        nn.Conv(features, (1, 1), use_bias=False, kernel_init=self.kernel_init, dtype=self.dtype, name=name), h,
        spectral_norm=self.spectral_norm, train=train, eps=self.sn_eps)
    pool = lambda h: nn.max_pool(h, (2, 2), strides=(2, 2))
    key_width, value_width = max(1, channels // 8), max(1, channels // 2)
    theta = conv(key_width, 'theta', x).reshape(batch, height * width_, key_width)
    phi = pool(conv(key_width, 'phi', x)).reshape(batch, -1, key_width)
    g = pool(conv(value_width, 'g', x)).reshape(batch, -1, value_width)
    attention = jax.nn.softmax(jnp.einsum('bqc,bkc->bqk', theta, phi).astype(jnp.float32), axis=-1)
    o = jnp.einsum('bqk,bkc->bqc', attention.astype(g.dtype), g).reshape(batch, height, width_, value_width)
    o = conv(channels, 'o', o)
    gamma = self.param('gamma', nn.initializers.zeros_init(), ())
    return x + gamma.astype(o.dtype) * o


class GeneratorBlock(nn.Module):
  """The residual up-block (see the module docstring); `condition` as `ConditionalBatchNorm` takes it."""
  features: int
  upsample: bool
  num_classes: int = 0
  spectral_norm: bool = False
  sn_eps: float = 1e-12
  kernel_init: Initializer = nn.initializers.orthogonal()
  residual_init: Initializer = nn.initializers.orthogonal()
  embedding_init: Initializer = nn.initializers.zeros_init()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, condition=None, *, train: bool):
    norm = lambda name: ConditionalBatchNorm(self.num_classes, self.spectral_norm, self.sn_eps, self.kernel_init,
                                             self.embedding_init, self.dtype, name=name)
    conv = lambda kernel, init, name, h: apply_layer(  # no bias: what it feeds is batch-normalised
        nn.Conv(self.features, (kernel, kernel), use_bias=False, kernel_init=init, dtype=self.dtype, name=name), h,
        spectral_norm=self.spectral_norm, train=train, eps=self.sn_eps)
    h = nn.relu(norm('bn1')(x, condition, train=train))
    if self.upsample:
      h, x = _upsample(h), _upsample(x)
    h = conv(3, self.residual_init, 'conv1', h)
    h = nn.relu(norm('bn2')(h, condition, train=train))
    h = conv(3, self.residual_init, 'conv2', h)
    if x.shape[-1] != self.features or self.upsample:
      x = conv(1, self.kernel_init, 'shortcut', x)
    return h + x


class DiscriminatorBlock(nn.Module):
  """A residual down-block: "optimised" (the first block: no leading ReLU, pool before the shortcut conv)
  or pre-activation. Hidden width: the output width if `wide` (BigGAN) or in the first block, else the
  input width (SNGAN)."""
  features: int
  downsample: bool
  preactivation: bool
  wide: bool = True
  sn_eps: float = 1e-12
  kernel_init: Initializer = nn.initializers.orthogonal()
  residual_init: Initializer = nn.initializers.orthogonal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    hidden = self.features if self.wide or not self.preactivation else x.shape[-1]
    conv = lambda features, kernel, init, name, h: apply_layer(
        nn.Conv(features, (kernel, kernel), kernel_init=init, dtype=self.dtype, name=name), h,
        spectral_norm=True, train=train, eps=self.sn_eps)
    h = nn.relu(x) if self.preactivation else x
    h = conv(hidden, 3, self.residual_init, 'conv1', h)
    h = conv(self.features, 3, self.residual_init, 'conv2', nn.relu(h))
    if self.downsample:
      h = _downsample(h)
    if x.shape[-1] != self.features or self.downsample:
      if self.preactivation:
        x = conv(self.features, 1, self.kernel_init, 'shortcut', x)
        x = _downsample(x) if self.downsample else x
      else:
        x = _downsample(x) if self.downsample else x
        x = conv(self.features, 1, self.kernel_init, 'shortcut', x)
    return h + x


class ResNetGenerator(nn.Module):
  """`(z [B, latent_dim], labels [B] or None) -> images [B, H, W, C]` in [-1, 1].

  `num_classes` > 0 makes it class-conditional (labels required). `shared_embedding_dim` > 0: one class
  embedding shared by every block, mapped linearly to each batch norm's gain and bias (BigGAN); 0: per-layer
  class embeddings (SNGAN-projection). `hierarchical`: z is split into one chunk for the input layer and
  one per stage, and each stage's norms see [shared embedding, its chunk] (BigGAN; unconditional: the chunk).
  """
  layout: Layout
  ch: int
  channels: int
  num_classes: int = 0
  shared_embedding_dim: int = 0
  hierarchical: bool = False
  spectral_norm: bool = False
  attention_resolution: int = 0
  sn_eps: float = 1e-12
  kernel_init: Initializer = nn.initializers.orthogonal()
  residual_init: Initializer = nn.initializers.orthogonal()
  embedding_init: Initializer = nn.initializers.zeros_init()  # per-layer norm embeddings (gain = 1 + e)
  dtype: Any = jnp.float32

  def stages(self) -> list[list[int]]:
    """Indices of the blocks of each stage: an upsampling block and the same-resolution blocks after it."""
    stages = []
    for index, (_, upsample) in enumerate(self.layout.g_blocks):
      if upsample or not stages:
        stages.append([])
      stages[-1].append(index)
    return stages

  @nn.compact
  def __call__(self, z, labels=None, *, train: bool = True):
    if (labels is None) != (self.num_classes == 0):
      raise ValueError(f'this generator takes labels iff it is class-conditional (num_classes={self.num_classes})')
    stages = self.stages()
    sn = dict(spectral_norm=self.spectral_norm, train=train, eps=self.sn_eps)
    z = z.astype(self.dtype)
    chunks = jnp.split(z, len(stages) + 1, axis=-1) if self.hierarchical else [z] + [None] * len(stages)
    shared = None
    if self.num_classes and self.shared_embedding_dim:
      # Not spectrally normalised: BigGAN-PyTorch found SN on G's embedding cripples G.
      shared = nn.Embed(self.num_classes, self.shared_embedding_dim, embedding_init=self.kernel_init,
                        name='shared_embedding')(labels).astype(self.dtype)
    height = width_ = self.layout.base
    x = apply_layer(nn.Dense(height * width_ * width(self.ch, self.layout.g_input), use_bias=False,
                             kernel_init=self.kernel_init, dtype=self.dtype, name='input'), chunks[0], **sn)
    x = x.reshape(z.shape[0], height, width_, -1)
    resolutions = self.layout.g_resolutions()
    for stage, chunk in zip(stages, chunks[1:]):
      parts = [part for part in (shared, chunk) if part is not None]
      condition = jnp.concatenate(parts, -1) if parts else labels
      for index in stage:
        multiplier, upsample = self.layout.g_blocks[index]
        x = GeneratorBlock(width(self.ch, multiplier), upsample, self.num_classes, self.spectral_norm,
                           self.sn_eps, self.kernel_init, self.residual_init, self.embedding_init, self.dtype,
                           name=f'block{index}')(x, condition, train=train)
      if resolutions[stage[-1]] == self.attention_resolution:
        x = SelfAttention(self.spectral_norm, self.sn_eps, self.kernel_init, self.dtype, name='attention')(
            x, train=train)
    x = nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, dtype=self.dtype,
                     name='output_bn')(x)
    x = apply_layer(nn.Conv(self.channels, (3, 3), kernel_init=self.kernel_init, dtype=self.dtype,
                            name='output_conv'), nn.relu(x), **sn)
    return jnp.tanh(x).astype(jnp.float32)


class ResNetDiscriminator(nn.Module):
  """`(images [B, H, W, C], labels [B] or None) -> logits [B]`; projection term when `num_classes` > 0."""
  layout: Layout
  ch: int
  num_classes: int = 0
  wide: bool = True
  attention_resolution: int = 0
  sn_eps: float = 1e-12
  kernel_init: Initializer = nn.initializers.orthogonal()
  residual_init: Initializer = nn.initializers.orthogonal()
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images, labels=None, *, train: bool = True):
    if (labels is None) != (self.num_classes == 0):
      raise ValueError(f'this discriminator takes labels iff it is class-conditional '
                       f'(num_classes={self.num_classes})')
    x = images.astype(self.dtype)
    resolutions = self.layout.d_resolutions(images.shape[1])
    attended = False
    for index, (multiplier, downsample) in enumerate(self.layout.d_blocks):
      x = DiscriminatorBlock(width(self.ch, multiplier), downsample, preactivation=index > 0, wide=self.wide,
                             sn_eps=self.sn_eps, kernel_init=self.kernel_init, residual_init=self.residual_init,
                             dtype=self.dtype, name=f'block{index}')(x, train=train)
      if resolutions[index] == self.attention_resolution and not attended:
        x = SelfAttention(True, self.sn_eps, self.kernel_init, self.dtype, name='attention')(x, train=train)
        attended = True
    h = jnp.sum(nn.relu(x), axis=(1, 2))
    sn = dict(spectral_norm=True, train=train, eps=self.sn_eps)
    logits = apply_layer(nn.Dense(1, kernel_init=self.kernel_init, dtype=self.dtype, name='output'), h, **sn)[:, 0]
    if self.num_classes:
      embedded = apply_layer(nn.Embed(self.num_classes, h.shape[-1], embedding_init=self.kernel_init,
                                      name='class_embedding'), labels, **sn)
      logits = logits + jnp.sum(embedded.astype(h.dtype) * h, axis=-1)
    return logits.astype(jnp.float32)
