"""Stride-1 convolutions as one matmul plus shifted slices, for layers with few channels on one side.

`lax.conv_general_dilated(x, kernel, (1, 1), padding)` (NHWC, HWIO), with the k x k taps moved into a matmul:

* `conv_im2col` (few input channels): the k*k shifted windows of the padded input, side by side, are the
  patches [N, H', W', k*k*C]; one matmul with the kernel [k*k*C, F] gives the output.
* `conv_col2im` (few output channels): one matmul of the input with every tap at once, [C, k*k*F], gives a
  plane per tap; the output is the sum of those planes, each shifted by its tap's offset.

`conv_by_matmul` takes the one whose intermediate (k*k*C or k*k*F values per pixel) is smaller. Autodiff
gives both backward passes as matmuls, pads and slices too. Why: XLA:CPU's direct convolution spends its
time packing image patches when a side has 1-4 channels, as DCGAN's layers at the image do (G's last, 64 ->
4 sub-pixel phases; D's first, 4 space-to-depth channels -> 64); as matmuls both layers run about twice as
fast, forward and backward (figures in `benchmarks/RESULTS.md`). With many
channels on both sides Winograd (`winograd.py`) or the direct convolution is the better choice: the
patches or planes grow k*k-fold.
"""
from typing import Sequence

import jax
import jax.numpy as jnp

from aigc_jax.cpu.subpixel import stride1_padding


def _pad_spatial(x: jax.Array, padding) -> jax.Array:
  """Zero-pads (or, for negative amounts, crops) axes 1 and 2 of `x`."""
  config = [(0, 0, 0)] * x.ndim
  config[1], config[2] = (*padding[0], 0), (*padding[1], 0)
  return jax.lax.pad(x, jnp.zeros((), x.dtype), config)


def conv_im2col(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]] | str = 'SAME',
                precision=None) -> jax.Array:
  """The stride-1 convolution as patches [N, H', W', k_h*k_w*C] times the kernel [k_h*k_w*C, F]."""
  kernel_h, kernel_w, channels, features = kernel.shape
  padded = _pad_spatial(x, stride1_padding(padding, (kernel_h, kernel_w)))
  batch, height, width, _ = padded.shape
  out_h, out_w = height - kernel_h + 1, width - kernel_w + 1
  patches = jnp.concatenate([padded[:, i:i + out_h, j:j + out_w] for i in range(kernel_h) for j in range(kernel_w)],
                            axis=-1)
  y = jnp.matmul(patches.reshape(-1, kernel_h * kernel_w * channels),
                 kernel.reshape(kernel_h * kernel_w * channels, features).astype(x.dtype), precision=precision)
  return y.reshape(batch, out_h, out_w, features)


def conv_col2im(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]] | str = 'SAME',
                precision=None) -> jax.Array:
  """The stride-1 convolution as x [N*H*W, C] times all taps [C, k_h*k_w*F], then the shifted tap planes summed.

  Output (o, p) = sum over taps (i, j) of padded x(o + i, p + j) @ kernel[i, j] = plane (i, j) at input pixel
  (o + i - top, p + j - left): padding the planes as the input would be padded and slicing each at its
  offset reads exactly those."""
  kernel_h, kernel_w, channels, features = kernel.shape
  padding = stride1_padding(padding, (kernel_h, kernel_w))
  batch, height, width, _ = x.shape
  taps = kernel.transpose(2, 0, 1, 3).reshape(channels, kernel_h * kernel_w * features).astype(x.dtype)
  planes = jnp.matmul(x.reshape(-1, channels), taps, precision=precision)
  planes = _pad_spatial(planes.reshape(batch, height, width, kernel_h, kernel_w, features), padding)
  out_h, out_w = planes.shape[1] - kernel_h + 1, planes.shape[2] - kernel_w + 1
  return sum(planes[:, i:i + out_h, j:j + out_w, i, j] for i in range(kernel_h) for j in range(kernel_w))


def conv_by_matmul(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]] | str = 'SAME',
                   precision=None) -> jax.Array:
  """The stride-1 convolution by `conv_im2col` if it has no more input than output channels, else `conv_col2im`."""
  channels, features = kernel.shape[2:]
  return (conv_im2col if channels <= features else conv_col2im)(x, kernel, padding, precision)
