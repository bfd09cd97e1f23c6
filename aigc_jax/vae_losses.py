"""The VAE objective's pieces: the KL divergence of diagonal Gaussians, the reparameterised sample, and the
image likelihoods. Everything is per example (summed over latent units or pixels), in nats.

Images arrive as the models see them, float32 in [-1, 1]. What each likelihood models:

* `bernoulli`: binarised pixels. A grey value g in [0, 1] (the image mapped from [-1, 1]) becomes 1 with
  probability g (`dynamic`: a fresh draw every training step, Salakhutdinov & Murray's dynamic
  binarisation) or when g > 0.5 (`threshold`). The decoder outputs one logit per pixel; the log-likelihood
  is an exact log-probability of the binary image.
* `gaussian`: 8-bit pixels. Each pixel is rounded to the nearest of the 256 levels k/127.5 - 1 and the
  decoder's Gaussian (mean per pixel; one standard deviation, learned or fixed) is integrated over that
  level's bin of width 2/255, the outer bins reaching to -inf and +inf (the discretised Gaussian of
  PixelCNN++ / DDPM). The log-likelihood is then an exact log-probability of the 8-bit image, so the
  negative ELBO bounds -log P(image) in nats and bits per dimension are comparable with the literature.
"""
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import log_ndtr

LIKELIHOODS = ('bernoulli', 'gaussian')
BINARIZATIONS = ('dynamic', 'threshold')
PIXEL_LEVELS = 256
_BIN_WIDTH = 2.0 / (PIXEL_LEVELS - 1)


def kl_diagonal_gaussians(mean_q: jax.Array, logvar_q: jax.Array, mean_p: jax.Array | float = 0.0,
                          logvar_p: jax.Array | float = 0.0) -> jax.Array:
  """KL(q || p) of diagonal Gaussians, summed over the last axis (the prior p defaults to N(0, I))."""
  kl = 0.5 * (logvar_p - logvar_q + (jnp.exp(logvar_q) + (mean_q - mean_p) ** 2) * jnp.exp(-logvar_p) - 1.0)
  return jnp.sum(kl, axis=-1)


def reparameterize(mean: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
  """z = mean + sigma * eps with eps ~ N(0, I): a sample of q whose gradient flows into mean and logvar."""
  return mean + jnp.exp(0.5 * logvar) * eps


def bernoulli_log_prob(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log p(targets | logits) per example, for targets in {0, 1}: t * l - softplus(l), summed over pixels."""
  log_prob = targets * logits - jax.nn.softplus(logits)
  return jnp.sum(log_prob.reshape(log_prob.shape[0], -1), axis=-1)


def _log_normal_mass(lo: jax.Array, hi: jax.Array) -> jax.Array:
  """log(Phi(hi) - Phi(lo)) for standardised bounds lo < hi (lo may be -inf, hi +inf), accurate in the tails.

  Mass to the right of zero is mirrored to the left, where log Phi has full precision; the difference is
  then log Phi(hi) + log(1 - exp(log Phi(lo) - log Phi(hi))).
  """
  flip = lo + hi > 0
  lo, hi = jnp.where(flip, -hi, lo), jnp.where(flip, -lo, hi)  # now hi is finite (only one bound is infinite)
  lo_infinite = jnp.isneginf(lo)
  # An infinite bound gets a constant, not log_ndtr(-inf), whose gradient would meet a zero cotangent as NaN.
  log_lo = jnp.where(lo_infinite, -jnp.inf, log_ndtr(jnp.where(lo_infinite, 0.0, lo)))
  log_hi = log_ndtr(hi)
  return log_hi + jnp.log(-jnp.expm1(jnp.minimum(log_lo - log_hi, -1e-30)))


def quantize(images: jax.Array) -> jax.Array:
  """Images in [-1, 1] rounded to the nearest of the 256 8-bit levels k / 127.5 - 1 (as the input pipeline
  computes them, to the bit)."""
  half = (PIXEL_LEVELS - 1) / 2
  return jnp.clip(jnp.round((images + 1.0) * half), 0, PIXEL_LEVELS - 1) / half - 1.0


def discretized_gaussian_log_prob(targets: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
  """log P(targets) per example of a Gaussian integrated over 8-bit pixel bins (targets quantised in [-1, 1]).

  Bin k covers [x - w/2, x + w/2] around its level x, w = 2/255; the bins of -1 and 1 extend to -inf and +inf.
  """
  inv_std = jnp.exp(-log_std)
  lo = jnp.where(targets <= -1.0 + _BIN_WIDTH / 2, -jnp.inf, (targets - _BIN_WIDTH / 2 - mean) * inv_std)
  hi = jnp.where(targets >= 1.0 - _BIN_WIDTH / 2, jnp.inf, (targets + _BIN_WIDTH / 2 - mean) * inv_std)
  log_prob = _log_normal_mass(lo, hi)
  return jnp.sum(log_prob.reshape(log_prob.shape[0], -1), axis=-1)


def binarize(images: jax.Array, rng: jax.Array, how: str) -> jax.Array:
  """{0, 1} pixels from images in [-1, 1]: a Bernoulli draw of the grey level (`dynamic`) or grey > 0.5."""
  grey = (images + 1.0) / 2.0
  # `+ 0 * grey` keeps a NaN pixel NaN: corrupt data then skips the step instead of turning black.
  if how == 'dynamic':
    return jax.random.bernoulli(rng, jnp.clip(grey, 0.0, 1.0)).astype(jnp.float32) + 0.0 * grey
  if how == 'threshold':
    return (grey > 0.5).astype(jnp.float32) + 0.0 * grey
  raise ValueError(f'unknown binarization {how!r}; allowed: {", ".join(BINARIZATIONS)}')


class Likelihood(NamedTuple):
  """One observation model p(x | z), given the decoder's output `loc` and its log standard deviation.

  `targets(images, rng)`: what is modelled, in [-1, 1] (binarised to {-1, 1}, or quantised to 8 bits);
  `log_prob(loc, log_std, targets)`: log p(targets | z) per example, in nats;
  `mean(loc)`: the distribution's mean as an image in [-1, 1] (reconstructions, samples).
  """
  name: str
  learned_std: bool  # the VAE carries a trained log standard deviation
  targets: Callable[[jax.Array, jax.Array], jax.Array]
  log_prob: Callable[[jax.Array, jax.Array | None, jax.Array], jax.Array]
  mean: Callable[[jax.Array], jax.Array]


def get_likelihood(name: str, *, binarization: str = 'dynamic', gaussian_std: float | None = None) -> Likelihood:
  """`bernoulli` (binarised by `binarization`) or `gaussian` (fixed `gaussian_std`, or learned if None)."""
  if name == 'bernoulli':
    if binarization not in BINARIZATIONS:
      raise ValueError(f'unknown binarization {binarization!r}; allowed: {", ".join(BINARIZATIONS)}')
    return Likelihood(
        name, False,
        targets=lambda images, rng: 2.0 * binarize(images, rng, binarization) - 1.0,
        log_prob=lambda loc, log_std, targets: bernoulli_log_prob(loc, (targets + 1.0) / 2.0),
        mean=lambda loc: 2.0 * jax.nn.sigmoid(loc) - 1.0)
  if name == 'gaussian':
    learned = gaussian_std is None
    fixed_log_std = 0.0 if learned else math.log(gaussian_std)
    return Likelihood(
        name, learned,
        targets=lambda images, rng: quantize(images),
        log_prob=lambda loc, log_std, targets: discretized_gaussian_log_prob(
            targets, loc, log_std if learned else fixed_log_std),
        mean=lambda loc: jnp.clip(loc, -1.0, 1.0))
  raise ValueError(f'unknown likelihood {name!r}; allowed: {", ".join(LIKELIHOODS)}')


def kl_weight(step: jax.Array, *, beta: float, warmup_steps: int) -> jax.Array:
  """beta times a linear warm-up from 1/warmup_steps at the first step (`step` = 0) to 1 (0 steps: none)."""
  if not warmup_steps:
    return jnp.asarray(beta, jnp.float32)
  return beta * jnp.minimum(1.0, (step + 1).astype(jnp.float32) / warmup_steps)
