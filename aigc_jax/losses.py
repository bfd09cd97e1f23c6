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
  # The output above which D calls its input real (D's accuracy is logged); None where the loss defines none.
  decision_threshold: float | None


def _cross_entropy_d(real, fake):
  # -log sigmoid(real) - log(1 - sigmoid(fake)), written stably.
  return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


GAN_LOSSES: dict[str, GanLoss] = {
    # Goodfellow et al.'s practical objective: G maximises log D(G(z)). The seeds' binary cross-entropy.
    'non_saturating': GanLoss(_cross_entropy_d, lambda fake: jnp.mean(jax.nn.softplus(-fake)), True, 0.0),
    # The original minimax objective: G minimises log(1 - D(G(z))) = -softplus(fake).
    'minimax': GanLoss(_cross_entropy_d, lambda fake: -jnp.mean(jax.nn.softplus(fake)), True, 0.0),
    # Lim & Ye / Miyato et al.
    'hinge': GanLoss(lambda real, fake: jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake)),
                     lambda fake: -jnp.mean(fake), False, 0.0),
    # Arjovsky et al.: the critic estimates E[f(real)] - E[f(fake)]; pair with a penalty or clipping.
    'wasserstein': GanLoss(lambda real, fake: jnp.mean(fake) - jnp.mean(real),
                           lambda fake: -jnp.mean(fake), False, None),
    # Mao et al. (a=0, b=1, c=1).
    'least_squares': GanLoss(lambda real, fake: 0.5 * jnp.mean((real - 1.0) ** 2) + 0.5 * jnp.mean(fake ** 2),
                             lambda fake: 0.5 * jnp.mean((fake - 1.0) ** 2), False, 0.5),
}


# How the two losses are minimised in a step (`gan_steps.train_step`): D, then G through the updated D; or both
# networks from one forward pass (the TensorFlow DCGAN tutorial's two-tape step).
GAN_UPDATES = ('alternating', 'simultaneous')


def discriminator_accuracy(loss: GanLoss, real: jax.Array, fake: jax.Array) -> dict[str, jax.Array]:
  """D's accuracy on real and on generated images at the loss's decision threshold ({} where it has none)."""
  if loss.decision_threshold is None:
    return {}
  return {'d_acc_real': jnp.mean((real > loss.decision_threshold).astype(jnp.float32)),
          'd_acc_fake': jnp.mean((fake < loss.decision_threshold).astype(jnp.float32))}


def get_gan_loss(name: str) -> GanLoss:
  if name not in GAN_LOSSES:
    raise ValueError(f'unknown loss {name!r}; allowed: {", ".join(GAN_LOSSES)}')
  return GAN_LOSSES[name]


# --- Penalties on the discriminator's input gradients. `d_fn` maps images [B, H, W, C] to D's raw
# outputs [B]; its gradient is taken with respect to its input, example by example (D treats the examples
# of a batch independently: no batch norm in D). The reductions are float32 (at least) whatever the compute
# dtype, as are the images the gradients are taken at. ---

def _at_least_float32(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _input_gradients(d_fn: Callable[[jax.Array], jax.Array], images: jax.Array) -> jax.Array:
  """`d D(x_i) / d x_i` for every example, [B, H, W, C], in float32 (at least)."""
  images = _at_least_float32(images)
  return _at_least_float32(jax.grad(lambda x: jnp.sum(_at_least_float32(d_fn(x))))(images))


def r1_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array) -> jax.Array:
  """Mescheder et al.'s R1: `E_x ||grad_x D(x)||^2` over real images (the caller weighs it by gamma / 2)."""
  grads = _input_gradients(d_fn, real)
  return jnp.mean(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))))


def gradient_penalty(d_fn: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     rng: jax.Array) -> jax.Array:
  """Gulrajani et al.'s WGAN-GP: `E (||grad D(x_hat)|| - 1)^2` at `x_hat = eps real + (1 - eps) fake`,
  `eps ~ U[0, 1]` per example (the caller weighs it, 10 in the paper)."""
  real, fake = _at_least_float32(real), _at_least_float32(fake)
  eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), jnp.float32).astype(real.dtype)
  interpolates = eps * real + (1.0 - eps) * fake
  grads = _input_gradients(d_fn, interpolates)
  # The small constant keeps the norm's gradient finite where the input gradient is exactly zero.
  norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))) + 1e-12)
  return jnp.mean(jnp.square(norms - 1.0))


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
