"""GAN objectives on the discriminator's raw outputs (logits, or critic scores for Wasserstein).

Each objective is a pair of functions: `discriminator(real, fake)` and `generator(fake)`, both batch means.
`orthogonal_regularization` is BigGAN's regulariser of the generator's weights.
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


def orthogonal_regularization(params) -> jax.Array:
  """BigGAN's off-diagonal orthogonal regularisation: the sum over weights W of ||W^T W * (1 - I)||_F^2.

  W is every parameter of rank >= 2 reshaped to `[fan_in, filters]` (a column per filter), so the term pushes
  filters towards pairwise orthogonality without constraining their norms (Brock et al. 2019, section 3.1;
  the paper's weight is 1e-4). Class embeddings (leaves named `embedding`) are looked up, not multiplied, and
  are left out. BigGAN-PyTorch's `utils.ortho` adds the gradient of half this sum.
  """
  total = jnp.zeros((), jnp.float32)
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if leaf.ndim < 2 or getattr(path[-1], 'key', None) == 'embedding':
      continue
    w = leaf.reshape(-1, leaf.shape[-1]).astype(jnp.float32)
    gram = w.T @ w
    total = total + jnp.sum(jnp.square(gram * (1.0 - jnp.eye(gram.shape[0], dtype=gram.dtype))))
  return total
