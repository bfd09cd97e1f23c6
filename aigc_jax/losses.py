"""GAN objectives on the discriminator's raw outputs (logits, or critic scores for Wasserstein).

Each objective is a pair of functions: `discriminator(real, fake)` and `generator(fake)`, both batch means.
"""
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class GanLoss(NamedTuple):
  discriminator: Callable[[jax.Array, jax.Array], jax.Array]
  generator: Callable[[jax.Array], jax.Array]
  logistic: bool  # whether sigmoid(output) is D's probability that its input is real


def _cross_entropy_d(real, fake):
  # -log sigmoid(real) - log(1 - sigmoid(fake)), written stably.
  return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


GAN_LOSSES: dict[str, GanLoss] = {
    # Goodfellow et al.'s practical objective: G maximises log D(G(z)). The seeds' binary cross-entropy.
    'non_saturating': GanLoss(_cross_entropy_d, lambda fake: jnp.mean(jax.nn.softplus(-fake)), True),
    # The original minimax objective: G minimises log(1 - D(G(z))) = -softplus(fake).
    'minimax': GanLoss(_cross_entropy_d, lambda fake: -jnp.mean(jax.nn.softplus(fake)), True),
    # Lim & Ye / Miyato et al.
    'hinge': GanLoss(lambda real, fake: jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)),
                     lambda fake: -jnp.mean(fake), False),
    # Arjovsky et al.: the critic estimates E[f(real)] - E[f(fake)]; pair with a penalty or clipping.
    'wasserstein': GanLoss(lambda real, fake: jnp.mean(fake) - jnp.mean(real),
                           lambda fake: -jnp.mean(fake), False),
    # Mao et al. (a=0, b=1, c=1).
    'least_squares': GanLoss(lambda real, fake: 0.5 * jnp.mean((real - 1.0) ** 2) + 0.5 * jnp.mean(fake ** 2),
                             lambda fake: 0.5 * jnp.mean((fake - 1.0) ** 2), False),
}


def get_gan_loss(name: str) -> GanLoss:
  if name not in GAN_LOSSES:
    raise ValueError(f'unknown loss {name!r}; allowed: {", ".join(GAN_LOSSES)}')
  return GAN_LOSSES[name]
