"""Strided convolutions, transposed and plain, in forms XLA:CPU runs fast; same parameters and function.

Transposed (sub-pixel form): computed as `stride**2` small stride-1 convolutions.
`SubpixelConvTranspose` has the same parameters and computes the same function as
`flax.linen.ConvTranspose(..., padding='SAME', transpose_kernel=False)`; only the computation differs.
A stride-s transposed convolution dilates its input with s-1 zeros between pixels and convolves; most
kernel taps then multiply zeros. Each output phase (row % s, column % s) only ever meets a fixed subset of
the kernel taps, so we convolve the undilated input once per phase with that sub-kernel and interleave
the phases (depth-to-space). Work drops by s**2, and XLA:CPU's slow path for the dilated convolution's
weight gradient (over a second per DCGAN step, measured) is never taken.

Plain (patches form): `StridedConv` has the same parameters and function as
`flax.linen.Conv(..., strides=(s, s), padding='SAME')`, computed as one strided slice of the padded input
per kernel tap, concatenated along channels (im2col), and one matmul with the reshaped kernel. Same work;
its gradients are a matmul and pads. Inside the DCGAN train step, XLA:CPU emits the native strided
convolution's input gradient (lhs-dilated) and weight gradient (rhs-dilated) with its naive loop emitter,
not its fast convolution kernels (seen in the compiled HLO as loop-emitted `convolution`s); a stride-1
polyphase rewrite still left those gradients on the naive path inside the step; a matmul never is.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _same_padding_before(kernel_size: int, stride: int) -> int:
  """Zeros `lax.conv_transpose` puts before the dilated input for padding='SAME'."""
  if stride > kernel_size - 1:
    return kernel_size - 1
  return int(np.ceil((kernel_size + stride - 2) / 2))


def _phase_taps(kernel_size: int, stride: int, phase: int) -> tuple[list[int], list[int]]:
  """Kernel taps that reach output positions `stride*m + phase`, and the input offsets they read."""
  before = _same_padding_before(kernel_size, stride)
  taps = [t for t in range(kernel_size) if (phase + t - before) % stride == 0]
  return taps, [(phase + t - before) // stride for t in taps]


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array, stride: int, precision=None) -> jax.Array:
  """`lax.conv_transpose(x, kernel, (stride, stride), 'SAME')` for NHWC `x` and HWIO `kernel`."""
  kernel_h, kernel_w = kernel.shape[:2]
  phases = []
  for row_phase in range(stride):
    row_taps, row_offsets = _phase_taps(kernel_h, stride, row_phase)
    row = []
    for col_phase in range(stride):
      col_taps, col_offsets = _phase_taps(kernel_w, stride, col_phase)
      sub_kernel = kernel[np.ix_(row_taps, col_taps)]
      padding = [(-row_offsets[0], row_offsets[-1]), (-col_offsets[0], col_offsets[-1])]
      row.append(jax.lax.conv_general_dilated(
          x, sub_kernel, window_strides=(1, 1), padding=padding,
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=precision))
    phases.append(jnp.stack(row, axis=3))           # [B, H, W, s(col), C]
  y = jnp.stack(phases, axis=2)                     # [B, H, s(row), W, s(col), C]
  batch, height, _, width, _, channels = y.shape
  return y.reshape(batch, height * stride, width * stride, channels)


def _conv_params(module: nn.Module, x: jax.Array):
  """`x`, kernel and bias (None without one), created as flax's conv layers name and shape them."""
  kernel = module.param('kernel', module.kernel_init,
                        tuple(module.kernel_size) + (x.shape[-1], module.features), module.param_dtype)
  bias = (module.param('bias', module.bias_init, (module.features,), module.param_dtype)
          if module.use_bias else None)
  return nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)


class SubpixelConvTranspose(nn.Module):
  """Drop-in for `nn.ConvTranspose(features, (k, k), strides=(s, s), padding='SAME')`, same params."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    if self.strides[0] != self.strides[1] or any(k < s for k, s in zip(self.kernel_size, self.strides)):
      raise ValueError(f'needs equal strides no larger than the kernel, got {self.strides} '
                       f'for kernel {self.kernel_size}')
    x, kernel, bias = _conv_params(self, x)
    y = conv_transpose_subpixel(x, kernel, self.strides[0])
    return y + bias if bias is not None else y


def conv_strided_patches(x: jax.Array, kernel: jax.Array, stride: int, precision=None) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME')` for NHWC `x` and HWIO `kernel`."""
  batch, height, width, channels = x.shape
  kernel_h, kernel_w, _, features = kernel.shape
  out_h, out_w = -(-height // stride), -(-width // stride)
  pad_h = max((out_h - 1) * stride + kernel_h - height, 0)
  pad_w = max((out_w - 1) * stride + kernel_w - width, 0)
  x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
  # Tap (i, j) of output (o, p) reads padded input (stride*o + i, stride*p + j): one strided slice per tap.
  patches = jnp.concatenate(
      [x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
       for i in range(kernel_h) for j in range(kernel_w)], axis=-1)   # [B, out_h, out_w, kh*kw*C]
  y = jnp.dot(patches.reshape(-1, kernel_h * kernel_w * channels), kernel.reshape(-1, features),
              precision=precision)
  return y.reshape(batch, out_h, out_w, features)


class StridedConv(nn.Module):
  """Drop-in for `nn.Conv(features, (k, k), strides=(s, s), padding='SAME')`, same params."""
  features: int
  kernel_size: tuple[int, int]
  strides: tuple[int, int]
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Callable = nn.initializers.lecun_normal()
  bias_init: Callable = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x):
    if self.strides[0] != self.strides[1]:
      raise ValueError(f'needs equal strides, got {self.strides}')
    x, kernel, bias = _conv_params(self, x)
    y = conv_strided_patches(x, kernel, self.strides[0])
    return y + bias if bias is not None else y
