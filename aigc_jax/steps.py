"""Pure training steps: `(state, batch, rng) -> (state, metrics)`.

`discriminator_step` and `generator_step` are the two GAN updates; `train_step` is one generator update
preceded by `n_critic` discriminator updates, compiled as one program. Everything model- or
objective-specific is bound with `functools.partial` before `jax.jit`, so the compiled functions take only
arrays. Randomness is a pure function of the base key and `state.step`, which makes resume exact.

Class-conditional GANs (`gan.conditional`): D sees each real image with its dataset label and each fake
with the label G made it for; G's labels are drawn uniformly over `gan.num_classes` (`sample_labels`).

Spectral normalisation's power-iteration state (`u`, `sigma` in `batch_stats`) belongs to the network it
normalises, like batch-norm statistics: D's is advanced by the discriminator step only. The generator step
runs D in training mode (one power-iteration step from D's stored `u`, as D's own forward pass does) and
discards D's updated variables; PyTorch's `spectral_norm` (Mimicry, BigGAN-PyTorch) would also store that
extra step's `u` -- an estimate of the same singular vector, a difference only in how fast it converges.

A training step any of whose updates has a non-finite loss or gradient is not applied at all: both
networks keep their params, variables and optimiser states, and the step is counted in `skipped_steps` /
`consecutive_skipped`. The last good state is therefore always the current one.
"""
from typing import Any

import jax
import jax.numpy as jnp
import optax

from aigc_jax import losses
from aigc_jax.losses import GanLoss
from aigc_jax.models import Gan
from aigc_jax.state import NetworkState, TrainState

Metrics = dict[str, jax.Array]


def apply_network(module, net: NetworkState, x: jax.Array, *, train: bool, rng: jax.Array | None = None,
                  params: Any = None, labels: jax.Array | None = None) -> tuple[jax.Array, Any]:
  """Runs `module` on `x` (and `labels`, for a class-conditional network); returns its output and its
  (in training, updated) non-param variables."""
  variables = {'params': net.params if params is None else params, **net.variables}
  rngs = {'dropout': rng} if rng is not None else None
  inputs = {} if labels is None else {'labels': labels}
  if train and net.variables:
    return module.apply(variables, x, train=True, rngs=rngs, mutable=list(net.variables), **inputs)
  return module.apply(variables, x, train=train, rngs=rngs, **inputs), net.variables


def _latents(rng: jax.Array, batch_size: int, latent_dim: int) -> jax.Array:
  return jax.random.normal(rng, (batch_size, latent_dim), jnp.float32)


def sample_labels(rng: jax.Array, batch_size: int, num_classes: int) -> jax.Array:
  """Class labels drawn uniformly from [0, num_classes), int32 `[batch_size]`."""
  return jax.random.randint(rng, (batch_size,), 0, num_classes, jnp.int32)


def _split(rng: jax.Array, gan: Gan):
  """`(z_rng, g_rng, d_rng, label_rng)`; unconditional GANs split as they always have (label_rng None)."""
  if gan.conditional:
    return tuple(jax.random.split(rng, 4))
  return (*jax.random.split(rng, 3), None)


def _fake_labels(rng: jax.Array | None, batch_size: int, gan: Gan) -> jax.Array | None:
  return sample_labels(rng, batch_size, gan.num_classes) if gan.conditional else None


def discriminator_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, gan: Gan,
                       loss: GanLoss, d_tx: optax.GradientTransformation,
                       latent_dim: int) -> tuple[TrainState, Metrics]:
  """One discriminator update on a real batch and as many fresh fakes."""
  real = batch['image']
  z_rng, g_rng, d_rng, label_rng = _split(rng, gan)
  fake_labels = _fake_labels(label_rng, real.shape[0], gan)
  # The generator's batch-norm statistics are updated by the generator step only.
  fake, _ = apply_network(gan.generator, state.generator, _latents(z_rng, real.shape[0], latent_dim),
                          train=True, rng=g_rng, labels=fake_labels)
  fake = jax.lax.stop_gradient(fake)
  d = state.discriminator
  # Real images with their own labels, fakes with the labels they were generated for.
  labels = None if fake_labels is None else jnp.concatenate([batch['label'], fake_labels])

  def loss_fn(params):
    # Real and fake in one pass: one larger matmul per layer instead of two.
    outputs, variables = apply_network(gan.discriminator, d, jnp.concatenate([real, fake]), train=True,
                                       rng=d_rng, params=params, labels=labels)
    real_out, fake_out = jnp.split(outputs, 2)
    return loss.discriminator(real_out, fake_out), (real_out, fake_out, variables)

  (d_loss, (real_out, fake_out, variables)), grads = jax.value_and_grad(loss_fn, has_aux=True)(d.params)
  updates, opt_state = d_tx.update(grads, d.opt_state, d.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(d_loss) & jnp.isfinite(grad_norm)  # the norm is finite iff every gradient is
  discriminator = NetworkState(optax.apply_updates(d.params, updates), variables, opt_state)
  metrics = {'d_loss': d_loss, 'd_real': jnp.mean(real_out), 'd_fake': jnp.mean(fake_out),
             'd_grad_norm': grad_norm, 'd_finite': finite}
  if loss.logistic:
    metrics.update(d_real_prob=jnp.mean(jax.nn.sigmoid(real_out)),
                   d_fake_prob=jnp.mean(jax.nn.sigmoid(fake_out)))
  return state.replace(discriminator=discriminator), metrics


def generator_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, gan: Gan,
                   loss: GanLoss, g_tx: optax.GradientTransformation, latent_dim: int,
                   g_ortho_reg: float = 0.0) -> tuple[TrainState, Metrics]:
  """One generator update through the current discriminator; `batch` sets the batch size.

  `g_ortho_reg` > 0 adds BigGAN's off-diagonal orthogonal regularisation of G's weights to its loss.
  """
  z_rng, g_rng, d_rng, label_rng = _split(rng, gan)
  z = _latents(z_rng, batch['image'].shape[0], latent_dim)
  labels = _fake_labels(label_rng, batch['image'].shape[0], gan)
  g = state.generator

  def loss_fn(params):
    fake, variables = apply_network(gan.generator, g, z, train=True, rng=g_rng, params=params, labels=labels)
    # D's updated variables (its spectral-norm state) are discarded: the discriminator step owns them.
    fake_out, _ = apply_network(gan.discriminator, state.discriminator, fake, train=True, rng=d_rng,
                                labels=labels)
    adversarial = loss.generator(fake_out)
    if not g_ortho_reg:
      return adversarial, (variables, {})
    ortho = losses.orthogonal_regularization(params)
    return adversarial + g_ortho_reg * ortho, (variables, {'g_ortho': ortho})

  (g_loss, (variables, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(g.params)
  updates, opt_state = g_tx.update(grads, g.opt_state, g.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(g_loss) & jnp.isfinite(grad_norm)
  generator = NetworkState(optax.apply_updates(g.params, updates), variables, opt_state)
  return state.replace(generator=generator), {'g_loss': g_loss, 'g_grad_norm': grad_norm,
                                              'g_finite': finite, **extra}


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, gan: Gan, loss: GanLoss,
               g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
               latent_dim: int, g_ortho_reg: float = 0.0) -> tuple[TrainState, Metrics]:
  """`n_critic` discriminator updates (one per leading slice of `batch`), then one generator update.

  `rng` is the run's base key; this step's randomness is `fold_in(rng, state.step)`.
  """
  n_critic = batch['image'].shape[0]
  rngs = jax.random.split(jax.random.fold_in(rng, state.step), n_critic + 1)

  def critic_update(carry, inputs):
    critic_batch, critic_rng = inputs
    return discriminator_step(carry, critic_batch, critic_rng, gan=gan, loss=loss, d_tx=d_tx,
                              latent_dim=latent_dim)

  updated, d_metrics = jax.lax.scan(critic_update, state, (batch, rngs[:-1]), unroll=True)
  last_batch = jax.tree.map(lambda x: x[-1], batch)
  updated, g_metrics = generator_step(updated, last_batch, rngs[-1], gan=gan, loss=loss, g_tx=g_tx,
                                      latent_dim=latent_dim, g_ortho_reg=g_ortho_reg)
  finite = jnp.all(d_metrics.pop('d_finite')) & g_metrics.pop('g_finite')
  state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  skipped = jnp.logical_not(finite).astype(jnp.int32)
  state = state.replace(step=state.step + 1, skipped_steps=state.skipped_steps + skipped,
                        consecutive_skipped=(state.consecutive_skipped + skipped) * skipped)
  metrics = {**jax.tree.map(jnp.mean, d_metrics), **g_metrics, 'skipped': skipped,
             'skipped_steps': state.skipped_steps, 'consecutive_skipped': state.consecutive_skipped}
  return state, metrics


def generate(state: TrainState, z: jax.Array, labels: jax.Array | None = None, *, gan: Gan) -> jax.Array:
  """Images from latents `z` (and, for a class-conditional GAN, int32 `labels` [B]) with the generator in
  inference mode (batch-norm running statistics, spectral-norm state read only)."""
  if (labels is None) == gan.conditional:
    raise ValueError(f'generate takes labels iff the GAN is class-conditional (num_classes={gan.num_classes})')
  images, _ = apply_network(gan.generator, state.generator, z, train=False, labels=labels)
  return images
