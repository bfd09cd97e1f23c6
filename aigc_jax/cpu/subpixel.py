"""Strided convolutions, transposed and plain, in forms XLA:CPU runs fast; same parameters and function.

Transposed (sub-pixel form): computed as one stride-1 convolution with `stride**2` times the channels.
`conv_transpose_subpixel` computes the same function as `flax.linen.ConvTranspose(..., padding='SAME',
transpose_kernel=False)` with its kernel; only the computation differs.
A stride-s transposed convolution dilates its input with s-1 zeros between pixels and convolves; most
kernel taps then multiply zeros. Each output phase (row % s, column % s) only ever meets a fixed subset of
the kernel taps at fixed offsets of the undilated input, so one stride-1 convolution of the undilated
input, whose output channels are the phases (each phase's sub-kernel placed in the union window), followed
by depth-to-space, computes it (Shi et al.'s sub-pixel convolution). XLA:CPU's slow path for the dilated
convolution's weight gradient (over a second per DCGAN step, measured) is never taken.

Plain: `conv_strided` computes `flax.linen.Conv(..., strides=(s, s), padding='SAME')`; its input gradient
(a custom VJP) is `stride**2` stride-1 convolutions of the output gradient, one per input phase (the
sub-pixel idea run backwards), where XLA:CPU's lhs-dilated convolution was slower. The forward and, for
many input channels, the weight gradient are XLA's own. `conv_strided_space_to_depth` computes the same
convolution as one stride-1 convolution over stride x stride blocks, so a matmul algorithm can run it.
Measurements: `benchmarks/RESULTS.md`.
"""
import functools
from typing import Callable

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


def _union_window(kernel_size: int, stride: int) -> tuple[np.ndarray, tuple[int, int]]:
  """Per axis: `table[a, phase]`, the kernel tap phase `phase` applies at input offset `lo + a` of the union
  of all phases' offsets (`kernel_size`, an appended zero tap, where that phase reads nothing there), and
  the padding `(-lo, hi)` of that union window."""
  per_phase = [_phase_taps(kernel_size, stride, phase) for phase in range(stride)]
  offsets = sorted({offset for _, phase_offsets in per_phase for offset in phase_offsets})
  lo, hi = offsets[0], offsets[-1]
  table = np.full((hi - lo + 1, stride), kernel_size, np.int32)
  for phase, (taps, phase_offsets) in enumerate(per_phase):
    for tap, offset in zip(taps, phase_offsets):
      table[offset - lo, phase] = tap
  return table, (-lo, hi)


def xla_conv(x: jax.Array, kernel: jax.Array, padding, precision=None) -> jax.Array:
  """XLA's stride-1 convolution, NHWC and HWIO: the default `stride1_conv`. Negative padding crops `x` first.

  XLA:CPU's Eigen convolution reads outside its input when a low padding is negative (openxla/xla#48713, open
  as of jaxlib 0.10.2): wrong values, NaNs where that memory holds them. Sliced first, it only ever pads."""
  if not isinstance(padding, str):
    padding = stride1_padding(padding, kernel.shape[:2])
    crop = [(max(-before, 0), max(-after, 0)) for before, after in padding]
    if any(c for pair in crop for c in pair):
      (top, bottom), (left, right) = crop
      x = x[:, top:x.shape[1] - bottom, left:x.shape[2] - right]
      padding = [(max(before, 0), max(after, 0)) for before, after in padding]
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                      precision=precision)


# A stride-1 convolution (x NHWC, kernel HWIO, padding: ((top, bottom), (left, right)) or 'SAME') -> NHWC.
Stride1Conv = Callable[..., jax.Array]


def stride1_padding(padding, kernel_hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
  """A `Stride1Conv`'s `padding` as ((top, bottom), (left, right)): 'SAME', 'VALID' or explicit pairs
  (negative entries crop)."""
  if isinstance(padding, str):
    if padding not in ('SAME', 'VALID'):
      raise ValueError(f"padding must be 'SAME', 'VALID' or explicit pairs, got {padding!r}")
    return tuple(((k - 1) // 2, k // 2) if padding == 'SAME' else (0, 0) for k in kernel_hw)
  if len(padding) != 2 or any(len(pair) != 2 for pair in padding):
    raise ValueError(f'padding needs one (before, after) pair per spatial axis, got {padding!r}')
  return tuple(tuple(pair) for pair in padding)


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array, stride: int, precision=None,
                            stride1_conv: Stride1Conv | None = None) -> jax.Array:
  """`lax.conv_transpose(x, kernel, (stride, stride), 'SAME')` for NHWC `x` and HWIO `kernel`.

  One stride-1 convolution of the undilated input over the union of the phases' windows (3x3 for a 5x5
  kernel at stride 2), producing all `stride**2` phases as channels (each phase's taps in place, zeros
  elsewhere), then depth-to-space. One convolution with `stride**2` times the output channels keeps the
  matmul units busier than one per phase (4x faster for a 1-channel output, measured), at the cost of
  multiplying the zeros in the union window. `stride1_conv` computes that convolution (default XLA's)."""
  kernel_h, kernel_w, channels, features = kernel.shape
  table_h, padding_h = _union_window(kernel_h, stride)
  table_w, padding_w = _union_window(kernel_w, stride)
  padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))    # the zero tap at index kernel_size
  union = padded[table_h[:, None, :, None], table_w[None, :, None, :]]   # [A, B, s(row), s(col), C, F]
  union = union.transpose(0, 1, 4, 2, 3, 5).reshape(len(table_h), len(table_w), channels, stride * stride * features)
  y = (stride1_conv or xla_conv)(x, union, (padding_h, padding_w), precision=precision)
  batch, height, width, _ = y.shape
  y = y.reshape(batch, height, width, stride, stride, features).transpose(0, 1, 3, 2, 4, 5)
  return y.reshape(batch, height * stride, width * stride, features)


def conv_params(module: nn.Module, x: jax.Array):
  """`x`, kernel and bias (None without one), created as flax's conv layers name and shape them."""
  kernel = module.param('kernel', module.kernel_init,
                        tuple(module.kernel_size) + (x.shape[-1], module.features), module.param_dtype)
  bias = (module.param('bias', module.bias_init, (module.features,), module.param_dtype)
          if module.use_bias else None)
  return nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)


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
      row.append(xla_conv(dy, sub_kernel, padding, precision=precision))
    rows.append(jnp.stack(row, axis=3))               # [B, Qh, Qw, s(col), C]
  dx = jnp.stack(rows, axis=2).reshape(batch, phases_h * stride, phases_w * stride, channels)
  return dx[:, :input_hw[0], :input_hw[1]]


# Input channels from which the phase-decomposed input gradient beats XLA's own (lhs-dilated) one: it does
# for DCGAN D's 14x14x64 layer, while for its 1-channel first layer XLA's is several times faster than the
# four phase convolutions (figures in benchmarks/RESULTS.md).
_PHASE_INPUT_GRADIENT_MIN_CHANNELS = 16
# Input channels from which XLA's own weight gradient (an rhs-dilated convolution on Eigen's kernels) beats
# the im2col patches' transpose times dy: it does for that 14x14x64 layer (the patches' 25 strided slices
# and their concatenation cost more than the matmul). For the 1-channel layer the patches are tiny and the
# dcgan step is faster with them.
_NATIVE_WEIGHT_GRADIENT_MIN_CHANNELS = 16


def _conv(x, kernel, stride, precision):
  return jax.lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_strided(x: jax.Array, kernel: jax.Array, stride: int, precision=None) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME')` for NHWC `x` and HWIO `kernel`.

  Forward: XLA's own. Weight gradient: XLA's own for inputs of `_NATIVE_WEIGHT_GRADIENT_MIN_CHANNELS`
  channels or more, else the im2col patches of `x`, transposed, times `dy`. Input gradient:
  `_conv_input_gradient`'s stride-1 convolutions for inputs of `_PHASE_INPUT_GRADIENT_MIN_CHANNELS`
  channels or more, else XLA's."""
  return _conv(x, kernel, stride, precision)


def _conv_strided_fwd(x, kernel, stride, precision):
  return _conv(x, kernel, stride, precision), (x, kernel)


def _conv_strided_bwd(stride, precision, residuals, dy):
  x, kernel = residuals
  if x.shape[-1] >= _NATIVE_WEIGHT_GRADIENT_MIN_CHANNELS:
    (d_kernel,) = jax.vjp(lambda k: _conv(x, k, stride, precision), kernel)[1](dy)
  else:
    patches = _patches(x, kernel.shape[:2], stride)
    d_kernel = jnp.dot(patches.reshape(-1, patches.shape[-1]).T, dy.reshape(-1, dy.shape[-1]),
                       precision=precision).reshape(kernel.shape)
  if x.shape[-1] >= _PHASE_INPUT_GRADIENT_MIN_CHANNELS:
    d_x = _conv_input_gradient(dy, kernel, stride, x.shape[1:3], precision)
  else:
    (d_x,) = jax.vjp(lambda v: _conv(v, kernel, stride, precision), x)[1](dy)
  return d_x, d_kernel


conv_strided.defvjp(_conv_strided_fwd, _conv_strided_bwd)


def conv_strided_space_to_depth(x: jax.Array, kernel: jax.Array, stride: int, stride1_conv: Stride1Conv,
                                precision=None) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (stride, stride), 'SAME')` as space-to-depth and `stride1_conv`.

  Output `o` reads input rows `stride*o + t - before` (taps t < k), which lie in the stride x stride blocks
  `o + a` for a in [lo, hi]: over the block map (the input zero-padded at the end to whole blocks, which
  'SAME' would read as zeros anyway) that is a stride-1 convolution with `stride**2 * C` input channels and
  a (hi-lo+1)^2 window holding the kernel's taps in place (zeros where a block position is no tap: 6x6 for
  5x5 at stride 2). For DCGAN D's 14x14x64 -> 128 layer that window is 3x3 over 7x7x256, where Winograd
  F(7x7, 3x3) multiplies 2.7M times per image (plus its transforms) against the direct convolution's 8.4M
  useful multiply-adds (`benchmarks/RESULTS.md`)."""
  batch, height, width, channels = x.shape
  kernel_h, kernel_w, _, features = kernel.shape
  (out_h, before_h), (out_w, before_w) = _same_padding(height, kernel_h, stride), _same_padding(width, kernel_w, stride)
  lo_h, hi_h = -before_h // stride, (kernel_h - 1 - before_h) // stride
  lo_w, hi_w = -before_w // stride, (kernel_w - 1 - before_w) // stride
  x = jnp.pad(x, ((0, 0), (0, out_h * stride - height), (0, out_w * stride - width), (0, 0)))
  blocks = x.reshape(batch, out_h, stride, out_w, stride, channels).transpose(0, 1, 3, 2, 4, 5)
  blocks = blocks.reshape(batch, out_h, out_w, stride * stride * channels)
  # Window position (a, p) of an axis holds tap stride*a + p + before; the kernel padded with zeros around
  # so that every position indexes it.
  pad_h = (-(stride * lo_h + before_h), stride * (hi_h + 1) + before_h - kernel_h)
  pad_w = (-(stride * lo_w + before_w), stride * (hi_w + 1) + before_w - kernel_w)
  window = jnp.pad(kernel, (pad_h, pad_w, (0, 0), (0, 0)))
  window_h, window_w = hi_h - lo_h + 1, hi_w - lo_w + 1
  window = window.reshape(window_h, stride, window_w, stride, channels, features).transpose(0, 2, 1, 3, 4, 5)
  window = window.reshape(window_h, window_w, stride * stride * channels, features)
  return stride1_conv(blocks, window, ((-lo_h, hi_h), (-lo_w, hi_w)), precision=precision)
