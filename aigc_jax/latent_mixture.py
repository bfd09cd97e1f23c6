"""A Gaussian mixture over a VAE's latent space, fitted after training: ex-post density estimation.

A VAE's decoder learns to decode where its encoder puts the training images (the aggregate posterior
q(z) = E_x q(z | x)), and the KL term only pulls q(z) towards the prior N(0, I): regions of the prior that
q(z) leaves empty decode to blends of digits. Ghosh et al. (2020, "From variational to deterministic
autoencoders", section 4) sample from a density fitted to the training latents instead; a mixture of 10
full-covariance Gaussians is their choice. `fit` fits one (scikit-learn's EM) to posterior samples of the
training images; `sample` turns standard normal noise into draws from it, exactly and without extra noise
inputs, so every caller that feeds a generator N(0, I) latents samples the mixture unchanged.
"""
import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri

from aigc_jax.config_errors import ConfigError

SAMPLERS = ('prior', 'gmm')  # config.vae.sampler: what a VAE's samples decode


@flax.struct.dataclass
class Mixture:
  weights: jax.Array      # [K], summing to 1
  means: jax.Array        # [K, D]
  scale_trils: jax.Array  # [K, D, D]: lower Cholesky factors of the covariances


def check_fit_size(components: int, examples: int) -> None:
  """A one-line ConfigError unless `examples` latents are enough for a mixture of `components`."""
  if examples < 2 * components:
    raise ConfigError(f'config.vae.gmm_components={components} is not allowed for {examples} training images; '
                      f'allowed: at most half the images the mixture is fitted to (vae.gmm_fit_examples)')


def fit(latents: np.ndarray, components: int, seed: int) -> Mixture:
  """The maximum-likelihood mixture of `components` full-covariance Gaussians for `latents` `[N, D]` (EM from
  k-means, seeded, so the same latents give the same mixture on every process)."""
  from sklearn.mixture import GaussianMixture  # pylint: disable=g-import-not-at-top  (only VAEs that fit one)
  latents = np.asarray(latents, np.float64)
  check_fit_size(components, len(latents))
  gmm = GaussianMixture(components, covariance_type='full', reg_covar=1e-6, max_iter=200,
                        random_state=seed).fit(latents)
  return Mixture(weights=np.float32(gmm.weights_ / gmm.weights_.sum()), means=np.float32(gmm.means_),
                 scale_trils=np.float32(np.linalg.cholesky(gmm.covariances_)))


def sample(mixture: Mixture, noise: jax.Array, temperature: float = 1.0) -> jax.Array:
  """Draws `[B, D]` from `mixture`, one per row of standard normal `noise` `[B, D]` (pure; jit it).

  The first coordinate picks the component: u = Phi(noise[:, 0]) is uniform, and it falls in component k's
  interval of the cumulative weights with probability w_k. Its position inside that interval is again uniform
  and independent of k, so Phi^-1 of it is a fresh standard normal coordinate: with the other D - 1 it is
  scaled by the component's Cholesky factor (and `temperature`, as for the prior) and shifted by its mean.
  """
  mixture = jax.tree.map(jnp.asarray, mixture)
  upper = jnp.cumsum(mixture.weights)
  u = ndtr(noise[:, 0])
  k = jnp.minimum(jnp.searchsorted(upper, u, side='right'), len(upper) - 1)
  lower = jnp.where(k > 0, upper[jnp.maximum(k - 1, 0)], 0.0)
  inside = jnp.clip((u - lower) / mixture.weights[k], 1e-7, 1 - 1e-7)
  fresh = jnp.concatenate([ndtri(inside)[:, None], noise[:, 1:]], axis=1)
  return mixture.means[k] + temperature * jnp.einsum('bij,bj->bi', mixture.scale_trils[k], fresh)
