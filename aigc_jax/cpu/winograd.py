"""Stride-1 convolution by Winograd's minimal filtering, F(m x m, r x r): same function, fewer multiplies.

`lax.conv_general_dilated(x, kernel, (1, 1), padding)` (NHWC, HWIO) computed as Lavin & Gray (2016) do:
cut the padded input into overlapping (m+r-1)^2 tiles, transform each tile (B^T d B) and the kernel
(G g G^T), multiply the transforms point by point -- which, summed over input channels, is (m+r-1)^2
independent [tiles, C] x [C, F] matmuls -- and transform back (A^T M A) to m x m outputs per tile. For a
5x5 kernel and m=4 that is 64 multiplies per 16 outputs instead of 400: 4.8x fewer (and the padding taps
a direct convolution multiplies are never computed for small maps like DCGAN's 7x7).

Every step is a matmul, so XLA runs all of it on its GEMM kernels, and autodiff of the forward gives the
backward the same structure (the input gradient and the weight gradient are again batched matmuls between
transforms). Why: XLA:CPU's direct convolutions ran DCGAN's 7x7 256->128 5x5 layer at ~60 % of the GEMM
rate with a third of the products on padding (`benchmarks/RESULTS.md`).

Tile size: by default the one with the fewest products for the map (`output_tile_for`), up to 9 points a
side: on DCGAN's 7x7 maps one 7x7-output tile for 3x3 kernels, F(7, 3), which is 81 products per 49
outputs where F(4, 3)'s 2x2 tiles need 144 (their 8x8 outputs overshoot the map), and F(4, 5) for 5x5.

The transforms use Toom-Cook points built exactly (fractions) and applied in float32: Lavin & Gray's 0,
+-1, +-2, +-1/2 up to 8-point tiles, a searched set for 9 (`_NINE_POINT_TILE`). Against the exact
convolution, with 256 input channels, the error is ~1e-5 of the output's largest value up to 8 points
(direct float32: ~5e-7) and up to 1e-4 at 9 (RMS 2e-5; the largest seen, 9.8e-5, over a 64x7x7x128
output), well inside the TF32 rounding (2^-11 of each input) that PyTorch's convolutions use by default on
Ampere and later GPUs. The transforms magnify summation-order differences alike, so two compilations of
one model (1 vs 8 devices, other fusions) differ by as much. In bfloat16 the transforms' rounding is not
negligible, so callers keep the direct form there.

Tile transforms: for small maps (up to `_KRON_MAX_PIXELS`), both axes' transforms, padding and cropping
folded into one dense [tiles * (m+r-1)^2, H * W] matrix (one GEMM with K = H * W); larger maps apply the
two axes one after the other.
"""
import functools
from fractions import Fraction
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.cpu import subpixel

_KRON_MAX_PIXELS = 256   # 16x16 maps and smaller: the folded 2-D transform (measured faster at 7x7)


# 9-point tiles (F(7, 3), F(5, 5)): continuing Lavin & Gray's sequence with 3 gave 4e-4..7e-4 of the
# output's largest value as float32 error against the exact convolution (7x7 maps, 128-256 channels),
# RMS 7e-5..9e-5. These points gave 4e-5..7e-5, RMS 2e-5: the best of an exhaustive search over 0, three
# +-pairs and one more point from {1, 2, 3, 4, 1/2, 1/3, 1/4, 3/2, 2/3, 3/4, 4/3, 5/4, 4/5}, checked on
# other seeds, shifted (post-LeakyReLU) inputs, F(5, 5) and 14x14 maps; adding 5/3, 3/5, 5/2, 2/5, 6/5,
# 5/6, 7/4, 4/7 to the search found nothing better beyond the noise between samples. For 8 points and
# fewer the same search found Lavin & Gray's the best.
_NINE_POINT_TILE = (Fraction(0), Fraction(1, 2), Fraction(-1, 2), Fraction(4, 3), Fraction(-4, 3), Fraction(4, 5),
                    Fraction(-4, 5), Fraction(4))
# The largest tile the automatic choice takes (`output_tile_for`): its error grows quickly beyond 9 points
# (11-point F(7, 5): 2e-4 at best, 2e-3 with Lavin & Gray's points).
MAX_AUTO_TILE_POINTS = 9


def _points(count: int) -> list[Fraction]:
  """`count` finite interpolation points: Lavin & Gray's (0, +-1, +-2, +-1/2, ..., smallest magnitudes
  first), except for 9-point tiles, whose 8 were searched for float32 accuracy (`_NINE_POINT_TILE`)."""
  if count == len(_NINE_POINT_TILE):
    return list(_NINE_POINT_TILE)
  points = [Fraction(0)]
  for p in (Fraction(1), Fraction(2), Fraction(1, 2), Fraction(3), Fraction(1, 3), Fraction(4), Fraction(1, 4)):
    points += [p, -p]
  if count > len(points):
    raise ValueError(f'Winograd tiles of more than {len(points) + 1} points are not supported')
  return points[:count]


def _vandermonde(points: list[Fraction], columns: int) -> list[list[Fraction]]:
  """Rows [1, p, p^2, ...] for each point, and the point at infinity's row (the leading coefficient)."""
  rows = [[p ** j for j in range(columns)] for p in points]
  return rows + [[Fraction(int(j == columns - 1)) for j in range(columns)]]


def _inverse(matrix: list[list[Fraction]]) -> list[list[Fraction]]:
  n = len(matrix)
  rows = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(matrix)]
  for col in range(n):
    pivot = next(r for r in range(col, n) if rows[r][col] != 0)
    rows[col], rows[pivot] = rows[pivot], rows[col]
    rows[col] = [v / rows[col][col] for v in rows[col]]
    for r in range(n):
      if r != col and rows[r][col] != 0:
        factor = rows[r][col]
        rows[r] = [v - factor * w for v, w in zip(rows[r], rows[col])]
  return [row[n:] for row in rows]


@functools.lru_cache(maxsize=None)
def winograd_matrices(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(A^T [m, a], G [a, r], B^T [a, a]) of F(m, r), a = m + r - 1: for a length-a input d and filter g,
  the correlation `y[i] = sum_j d[i + j] g[j]` is `A^T ((G g) * (B^T d))`.

  F(m, r) is the transpose of Toom-Cook's product of polynomials of degrees m-1 and r-1: evaluate both at
  a points (V_m h, V_r g), multiply, interpolate (V_a^-1). Transposing in h gives y = V_m^T ((V_r g) *
  (V_a^-T d))."""
  alpha = m + r - 1
  points = _points(alpha - 1)
  interpolation = _inverse(_vandermonde(points, alpha))
  to_float = lambda rows: np.array([[float(v) for v in row] for row in rows])
  a_t = to_float(_vandermonde(points, m)).T
  g = to_float(_vandermonde(points, r))
  b_t = to_float(interpolation).T
  return a_t, g, b_t


@functools.lru_cache(maxsize=None)
def _axis_transforms(size: int, padding: tuple[int, int], m: int, r: int):
  """One axis's input transform [a * tiles, size] (padding folded in: padded positions are dropped) and
  output transform [out, a * tiles] (the crop of the last tile folded in); rows/columns ordered (a, tile)."""
  a_t, _, b_t = winograd_matrices(m, r)
  alpha = m + r - 1
  out = size + padding[0] + padding[1] - r + 1
  tiles = -(-out // m)
  into = np.zeros((alpha, tiles, size))
  back = np.zeros((out, alpha, tiles))
  for t in range(tiles):
    for i in range(alpha):
      pixel = t * m + i - padding[0]
      if 0 <= pixel < size:
        into[:, t, pixel] = b_t[:, i]
    for i in range(m):
      if t * m + i < out:
        back[t * m + i, :, t] = a_t[i, :]
  return into.reshape(alpha * tiles, size), back.reshape(out, alpha * tiles), tiles


def output_tile_for(out_height: int, out_width: int, r: int) -> int:
  """The output tile side m whose tiles cover an out_height x out_width output with the fewest transformed
  points (tiles * (m + r - 1)^2: the products' rows) among tiles of up to `MAX_AUTO_TILE_POINTS` points per
  side, the smaller on ties (more accurate). DCGAN's 7x7 maps: F(7, 3), one 9-point tile per side (81
  points where F(4, 3)'s 2x2 tiles have 144), and F(4, 5) (256; F(5, 5) would need 324)."""
  points = lambda m: -(-out_height // m) * -(-out_width // m) * (m + r - 1) ** 2
  return min(range(2, max(MAX_AUTO_TILE_POINTS - r + 2, 3)), key=lambda m: (points(m), m))


def winograd_conv(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]] | str = 'SAME',
                  output_tile: int | None = None, precision=None) -> jax.Array:
  """`lax.conv_general_dilated(x, kernel, (1, 1), padding, ('NHWC', 'HWIO', 'NHWC'))` by Winograd F(m, r).

  `padding`: 'SAME', 'VALID' or ((top, bottom), (left, right)); `output_tile`: m, outputs per tile side
  (None: `output_tile_for` the output's size). Square kernels only."""
  batch, height, width, channels = x.shape
  r, r_w, _, features = kernel.shape
  if r != r_w:
    raise ValueError(f'winograd_conv needs a square kernel, got {kernel.shape[:2]}')
  padding = subpixel.stride1_padding(padding, (r, r))
  m = output_tile or output_tile_for(height + sum(padding[0]) - r + 1, width + sum(padding[1]) - r + 1, r)
  alpha = m + r - 1
  into_h, back_h, tiles_h = _axis_transforms(height, padding[0], m, r)
  into_w, back_w, tiles_w = _axis_transforms(width, padding[1], m, r)
  out_h, out_w = back_h.shape[0], back_w.shape[0]
  _, g, _ = winograd_matrices(m, r)
  dtype = x.dtype
  const = lambda a: jnp.asarray(a, dtype)
  dot = functools.partial(jnp.einsum, precision=precision)

  # Kernel transform: [a*a, C, F].
  u = dot('pq,qcf->pcf', const(np.kron(g, g)), kernel.reshape(r * r, channels, features).astype(dtype))
  if height * width <= _KRON_MAX_PIXELS:
    # Rows (a, b, tile_h, tile_w) of kron(into_h, into_w), reordered from (a, tile_h, b, tile_w).
    into = np.einsum('ph,qw->pqhw', into_h, into_w).reshape(alpha, tiles_h, alpha, tiles_w, height * width)
    into = into.transpose(0, 2, 1, 3, 4).reshape(-1, height * width)
    # Pixel-major [pixels, batch * C] operands, so the transforms are plain 2-D matmuls and the layout
    # changes are these explicit transposes, which XLA fuses with the neighbouring elementwise ops. The
    # einsum form ('pq,nqc->pnc' and back) left XLA:CPU large layout copies in the dcgan step.
    pixels = x.reshape(batch, height * width, channels).transpose(1, 0, 2).reshape(height * width, -1)
    v = jnp.matmul(const(into), pixels, precision=precision)
  else:
    v = dot('ph,nhwc->pnwc', const(into_h), x)
    v = dot('qw,pnwc->pqnc', const(into_w), v)                       # [(a, th), (b, tw), n, c]
    v = v.reshape(alpha, tiles_h, alpha, tiles_w, batch, channels).transpose(0, 2, 1, 3, 4, 5)
  v = v.reshape(alpha * alpha, tiles_h * tiles_w * batch, channels)
  products = dot('kpc,kcf->kpf', v, u)                               # [a*a, tiles * n, F]
  if height * width <= _KRON_MAX_PIXELS:
    back = np.einsum('hp,wq->hwpq', back_h, back_w).reshape(out_h * out_w, alpha, tiles_h, alpha, tiles_w)
    back = back.transpose(0, 1, 3, 2, 4).reshape(out_h * out_w, -1)
    y = jnp.matmul(const(back), products.reshape(back.shape[1], -1), precision=precision)
    return y.reshape(out_h, out_w, batch, features).transpose(2, 0, 1, 3)
  products = products.reshape(alpha, alpha, tiles_h, tiles_w, batch, features).transpose(0, 2, 1, 3, 4, 5)
  products = products.reshape(alpha * tiles_h, alpha * tiles_w, batch, features)
  y = dot('hp,pqnf->hqnf', const(back_h), products)
  return dot('wq,hqnf->nhwf', const(back_w), y)
