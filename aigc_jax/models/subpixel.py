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
per kernel tap, concatenated along channels (im2col), and one matmul with the reshaped kernel. Same work.
Its weight gradient is the transposed matmul; its input gradient (a custom VJP) is `stride**2` stride-1
convolutions of the output gradient, one per input phase, the sub-pixel idea run backwards. Inside the DCGAN train step, XLA:CPU emits the native strided
convolution's input gradient (lhs-dilated) and weight gradient (rhs-dilated) with its naive loop emitter,
not its fast convolution kernels (seen in the compiled HLO as loop-emitted `convolution`s); a stride-1
polyphase rewrite still left those gradients on the naive path inside the step; a matmul never is.
"""
import functools
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


def _same_padding(size: int, kernel_size: int, stride: int) -> tuple[int, int]:
  """Output length and zeros before the input of a 'SAME' strided convolution along one axis."""
  out = -(-size // stride)
  return out, max((out - 1) * stride + kernel_size - size, 0) // 2


def _patches(x: jax.Array, kernel_hw: tuple[int, int], stride: int) -> jax.Array:
  """[B, out_h, out_w, kh*kw*C]: tap (i, j) of output (o, p) reads padded input (stride*o + i, stride*p + j)."""
  _, height, width, _ = x.shape
  kernel_h, kernel_w = kernel_hw
  (out_h, before_h), (out_w, before_w) = _same_padding(height, kernel_h, stride), _same_padding(width, kernel_w, stride)
  pad_h, pad_w = (out_h - 1) * stride + kernel_h - height, (out_w - 1) * stride + kernel_w - width
  x = jnp.pad(x, ((0, 0), (before_h, max(pad_h, 0) - before_h), (before_w, max(pad_w, 0) - before_w), (0, 0)))
  return jnp.concatenate([x[:, i:i + stride * (out_h - 1) + 1:stride, j:j + stride * (out_w - 1) + 1:stride]
                          for i in range(kernel_h) for j in range(kernel_w)], axis=-1)


def _input_gradient_taps(size: int, kernel_size: int, stride: int, phase: int) -> tuple[list[int], list[int]]:
  """Kernel taps through which input positions `stride*q + phase` reach the output, and the output offsets
  (from q) they reach, ascending."""
  _, before = _same_padding(size, kernel_size, stride)
  taps = [t for t in reversed(range(kernel_size)) if (phase + before - t) % stride == 0]
  return taps, [(phase + before - t) // stride for t in taps]


def _conv_input_gradient(dy: jax.Array, kernel: jax.Array, stride: int, input_hw: tuple[int, int],
                         precision=None) -> jax.Array:
  """The input gradient of the 'SAME' stride-s convolution, as s**2 stride-1 convolutions of `dy`.

  Input pixel `s*q + r` (phase r along an axis) receives `dy[q + offset] @ kernel[tap].T` from a fixed set of
  taps, so each phase is a small stride-1 convolution of the undilated `dy`; the phases are interleaved.
  """
  batch, out_h, out_w, _ = dy.shape
  kernel_h, kernel_w, channels, _ = kernel.shape
  phases_h, phases_w = -(-input_hw[0] // stride), -(-input_hw[1] // stride)
  rows = []
  for row_phase in range(stride):
    row_taps, row_offsets = _input_gradient_taps(input_hw[0], kernel_h, stride, row_phase)
    row = []
    for col_phase in range(stride):
      col_taps, col_offsets = _input_gradient_taps(input_hw[1], kernel_w, stride, col_phase)
      if not row_taps or not col_taps:  # a kernel smaller than the stride never reads this phase
        row.append(jnp.zeros((batch, phases_h, phases_w, channels), dy.dtype))
        continue
      sub_kernel = jnp.swapaxes(kernel[np.ix_(row_taps, col_taps)], 2, 3)   # [h, w, F, C]
      padding = [(-row_offsets[0], phases_h - out_h + row_offsets[-1]),
                 (-col_offsets[0], phases_w - out_w + col_offsets[-1])]
      row.append(jax.lax.conv_general_dilated(dy, sub_kernel, (1, 1), padding,
                                              dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=precision))
    rows.append(jnp.stack(row, axis=3))               # [B, Qh, Qw, s(col), C]
  dx = jnp.stack(rows, axis=2).reshape(batch, phases_h * stride, phases_w * stride, channels)
  return dx[:, :input_hw[0], :input_hw[1]]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_strided_patches(x: jax.Array, kernel: jax.Array, stride: int, precision=None) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME')` for NHWC `x` and HWIO `kernel`.

  Forward: one strided slice of the padded input per kernel tap, concatenated along channels (im2col), and
  one matmul. Weight gradient: the transposed matmul. Input gradient: `_conv_input_gradient`'s stride-1
  convolutions; the patches form's own transpose (25 interior-padded scatter-adds of the whole input for a
  5x5 kernel) costs XLA:CPU more than the matmuls around it."""
  y, _ = _conv_strided_patches_fwd(x, kernel, stride, precision)
  return y


def _conv_strided_patches_fwd(x, kernel, stride, precision):
  kernel_h, kernel_w, _, features = kernel.shape
  patches = _patches(x, (kernel_h, kernel_w), stride)
  batch, out_h, out_w, taps = patches.shape
  y = jnp.dot(patches.reshape(-1, taps), kernel.reshape(-1, features), precision=precision)
  return y.reshape(batch, out_h, out_w, features), (patches, kernel, x.shape[1:3])


def _conv_strided_patches_bwd(stride, precision, residuals, dy):
  patches, kernel, input_hw = residuals
  features = kernel.shape[-1]
  flat_dy = dy.reshape(-1, features)
  d_kernel = jnp.dot(patches.reshape(flat_dy.shape[0], -1).T, flat_dy, precision=precision).reshape(kernel.shape)
  return _conv_input_gradient(dy, kernel, stride, input_hw, precision), d_kernel


conv_strided_patches.defvjp(_conv_strided_patches_fwd, _conv_strided_patches_bwd)


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
