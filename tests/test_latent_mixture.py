"""The VAE's ex-post latent mixture: its sampler draws exactly from the mixture, and its fit recovers one."""
import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax import latent_mixture

_MIXTURE = latent_mixture.Mixture(
    weights=np.float32([0.2, 0.5, 0.3]),
    means=np.float32([[-20.0, 0.0], [0.0, 20.0], [20.0, -5.0]]),  # far apart: the nearest mean names the component
    scale_trils=np.float32([[[1.0, 0.0], [0.5, 0.5]], [[0.3, 0.0], [0.0, 2.0]], [[1.5, 0.0], [-1.0, 0.7]]]))


def _nearest_component(draws):
  return np.argmin(((draws[:, None] - _MIXTURE.means[None]) ** 2).sum(-1), axis=1)


def test_standard_normal_noise_becomes_draws_from_the_mixture():
  noise = jax.random.normal(jax.random.key(0), (200_000, 2))
  draws = np.asarray(jax.jit(latent_mixture.sample)(_MIXTURE, noise))
  component = _nearest_component(draws)
  np.testing.assert_allclose(np.bincount(component) / len(draws), _MIXTURE.weights, atol=0.005)
  for k in range(3):
    mine = draws[component == k]
    np.testing.assert_allclose(mine.mean(0), _MIXTURE.means[k], atol=0.03)
    covariance = _MIXTURE.scale_trils[k] @ _MIXTURE.scale_trils[k].T
    np.testing.assert_allclose(np.cov(mine.T), covariance, atol=0.04 * np.abs(covariance).max() + 0.01)


def test_temperature_scales_each_component_about_its_mean():
  noise = jax.random.normal(jax.random.key(1), (50_000, 2))
  at_one = np.asarray(latent_mixture.sample(_MIXTURE, noise))
  at_half = np.asarray(latent_mixture.sample(_MIXTURE, noise, temperature=0.5))
  component = _nearest_component(at_one)
  np.testing.assert_array_equal(_nearest_component(at_half), component)  # the same component per row
  np.testing.assert_allclose(at_half - _MIXTURE.means[component], 0.5 * (at_one - _MIXTURE.means[component]),
                             atol=1e-4)


def test_fit_recovers_a_mixture_from_its_draws_the_same_way_every_time():
  draws = np.asarray(latent_mixture.sample(_MIXTURE, jax.random.normal(jax.random.key(2), (6_000, 2))))
  fitted = latent_mixture.fit(draws, components=3, seed=0)
  order = np.argsort(fitted.means[:, 0])  # the true means are sorted by their first coordinate
  np.testing.assert_allclose(fitted.weights[order], _MIXTURE.weights, atol=0.02)
  np.testing.assert_allclose(fitted.means[order], _MIXTURE.means, atol=0.1)
  np.testing.assert_allclose(fitted.scale_trils[order], _MIXTURE.scale_trils, atol=0.1)
  again = latent_mixture.fit(draws, components=3, seed=0)
  jax.tree.map(np.testing.assert_array_equal, again, fitted)
  assert jnp.isclose(jnp.sum(fitted.weights), 1.0)
