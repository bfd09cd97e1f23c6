"""Each GAN objective against its formula on hand-computed values."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import losses

REAL = jnp.array([2.0, -1.0])
FAKE = jnp.array([0.5, -3.0])


def _softplus(x):
  return math.log1p(math.exp(x))


def _sigmoid(x):
  return 1 / (1 + math.exp(-x))


# Written from the papers' formulas in probabilities where they are stated that way, computed by hand here.
EXPECTED = {
    'non_saturating': (
        -(math.log(_sigmoid(2.0)) + math.log(_sigmoid(-1.0))) / 2
        - (math.log(1 - _sigmoid(0.5)) + math.log(1 - _sigmoid(-3.0))) / 2,
        -(math.log(_sigmoid(0.5)) + math.log(_sigmoid(-3.0))) / 2),
    'minimax': (
        -(math.log(_sigmoid(2.0)) + math.log(_sigmoid(-1.0))) / 2
        - (math.log(1 - _sigmoid(0.5)) + math.log(1 - _sigmoid(-3.0))) / 2,
        (math.log(1 - _sigmoid(0.5)) + math.log(1 - _sigmoid(-3.0))) / 2),
    # relu(1 - real): [0, 2]; relu(1 + fake): [1.5, 0]
    'hinge': ((0 + 2) / 2 + (1.5 + 0) / 2, -(0.5 - 3.0) / 2),
    'wasserstein': ((0.5 - 3.0) / 2 - (2.0 - 1.0) / 2, -(0.5 - 3.0) / 2),
    # 0.5*mean((real-1)^2) = 0.5*(1+4)/2; 0.5*mean(fake^2) = 0.5*(0.25+9)/2
    'least_squares': (0.5 * 5 / 2 + 0.5 * 9.25 / 2, 0.5 * (0.25 + 16) / 2),
}


@pytest.mark.parametrize('name', sorted(losses.GAN_LOSSES))
def test_loss_matches_formula(name):
  loss = losses.get_gan_loss(name)
  want_d, want_g = EXPECTED[name]
  np.testing.assert_allclose(float(loss.discriminator(REAL, FAKE)), want_d, rtol=1e-6)
  np.testing.assert_allclose(float(loss.generator(FAKE)), want_g, rtol=1e-6)


def test_every_loss_has_an_expectation():
  assert set(EXPECTED) == set(losses.GAN_LOSSES)


def test_logistic_losses_are_stable_for_large_logits():
  big = jnp.array([200.0, -200.0])
  for name in ('non_saturating', 'minimax'):
    loss = losses.get_gan_loss(name)
    assert np.isfinite(float(loss.discriminator(big, big)))
    assert np.isfinite(float(loss.generator(big)))


def test_unknown_loss_names_the_allowed_values():
  with pytest.raises(ValueError, match='allowed: .*hinge'):
    losses.get_gan_loss('nope')
