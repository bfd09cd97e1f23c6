"""Pure training steps: `(state, batch, rng) -> (state, metrics)`.

`discriminator_step` and `generator_step` are the two GAN updates; `train_step` is one generator update
preceded by `n_critic` discriminator updates, compiled as one program. `vae_train_step` is the VAE's
update (section "VAE" at the end), with its held-out and sampling functions beside it. Everything model- or
objective-specific is bound with `functools.partial` before `jax.jit`, so the compiled functions take only
arrays. Randomness is a pure function of the base key and `state.step`, which makes resume exact.

A training step any of whose updates has a non-finite loss or gradient is not applied at all: both
networks keep their params, variables and optimiser states, and the step is counted in `skipped_steps` /
`consecutive_skipped`. The last good state is therefore always the current one.
"""
from typing import Any

import jax
import jax.numpy as jnp
import optax

from aigc_jax import vae_losses
from aigc_jax.losses import GanLoss
from aigc_jax.models import Gan
from aigc_jax.state import NetworkState, TrainState, VaeState

Metrics = dict[str, jax.Array]


def apply_network(module, net: NetworkState, x: jax.Array, *, train: bool, rng: jax.Array | None = None,
                  params: Any = None) -> tuple[jax.Array, Any]:
  """Runs `module` on `x`; returns its output and its (in training, updated) non-param variables."""
  variables = {'params': net.params if params is None else params, **net.variables}
  rngs = {'dropout': rng} if rng is not None else None
  if train and net.variables:
    return module.apply(variables, x, train=True, rngs=rngs, mutable=list(net.variables))
  return module.apply(variables, x, train=train, rngs=rngs), net.variables


def _latents(rng: jax.Array, batch_size: int, latent_dim: int) -> jax.Array:
  return jax.random.normal(rng, (batch_size, latent_dim), jnp.float32)


def discriminator_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, gan: Gan,
                       loss: GanLoss, d_tx: optax.GradientTransformation,
                       latent_dim: int) -> tuple[TrainState, Metrics]:
  """One discriminator update on a real batch and as many fresh fakes."""
  real = batch['image']
  z_rng, g_rng, d_rng = jax.random.split(rng, 3)
  # The generator's batch-norm statistics are updated by the generator step only.
  fake, _ = apply_network(gan.generator, state.generator, _latents(z_rng, real.shape[0], latent_dim),
                          train=True, rng=g_rng)
  fake = jax.lax.stop_gradient(fake)
  d = state.discriminator

  def loss_fn(params):
    # Real and fake in one pass: one larger matmul per layer instead of two.
    outputs, variables = apply_network(gan.discriminator, d, jnp.concatenate([real, fake]), train=True,
                                       rng=d_rng, params=params)
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
                   loss: GanLoss, g_tx: optax.GradientTransformation,
                   latent_dim: int) -> tuple[TrainState, Metrics]:
  """One generator update through the current discriminator; `batch` sets the batch size."""
  z_rng, g_rng, d_rng = jax.random.split(rng, 3)
  z = _latents(z_rng, batch['image'].shape[0], latent_dim)
  g = state.generator

  def loss_fn(params):
    fake, variables = apply_network(gan.generator, g, z, train=True, rng=g_rng, params=params)
    fake_out, _ = apply_network(gan.discriminator, state.discriminator, fake, train=True, rng=d_rng)
    return loss.generator(fake_out), variables

  (g_loss, variables), grads = jax.value_and_grad(loss_fn, has_aux=True)(g.params)
  updates, opt_state = g_tx.update(grads, g.opt_state, g.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(g_loss) & jnp.isfinite(grad_norm)
  generator = NetworkState(optax.apply_updates(g.params, updates), variables, opt_state)
  return state.replace(generator=generator), {'g_loss': g_loss, 'g_grad_norm': grad_norm,
                                              'g_finite': finite}


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, gan: Gan, loss: GanLoss,
               g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
               latent_dim: int) -> tuple[TrainState, Metrics]:
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
                                      latent_dim=latent_dim)
  finite = jnp.all(d_metrics.pop('d_finite')) & g_metrics.pop('g_finite')
  state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  skipped = jnp.logical_not(finite).astype(jnp.int32)
  state = state.replace(step=state.step + 1, skipped_steps=state.skipped_steps + skipped,
                        consecutive_skipped=(state.consecutive_skipped + skipped) * skipped)
  metrics = {**jax.tree.map(jnp.mean, d_metrics), **g_metrics, 'skipped': skipped,
             'skipped_steps': state.skipped_steps, 'consecutive_skipped': state.consecutive_skipped}
  return state, metrics


def generate(state: TrainState, z: jax.Array, *, gan: Gan) -> jax.Array:
  """Images from latents `z` with the generator in inference mode (batch-norm running statistics)."""
  images, _ = apply_network(gan.generator, state.generator, z, train=False)
  return images


# --- VAE. ---

def vae_terms(vae, params: Any, targets: jax.Array, eps: jax.Array, *,
              likelihood: vae_losses.Likelihood) -> tuple[jax.Array, jax.Array]:
  """Per-example reconstruction log-likelihood E_q[log p(x | z)] (one sample, z from `eps`) and KL(q || p)."""
  variables = {'params': params}
  mean, logvar = vae.apply(variables, targets, method='encode')
  loc, log_std = vae.apply(variables, vae_losses.reparameterize(mean, logvar, eps), method='decode')
  return likelihood.log_prob(loc, log_std, targets), vae_losses.kl_diagonal_gaussians(mean, logvar)


def vae_train_step(state: VaeState, batch: dict[str, jax.Array], rng: jax.Array, *, vae,
                   likelihood: vae_losses.Likelihood, tx: optax.GradientTransformation, latent_dim: int,
                   beta: float, kl_warmup_steps: int) -> tuple[VaeState, Metrics]:
  """One update on the negative ELBO with its KL term weighted by beta (after a linear warm-up).

  `batch['image']` is `[1, B, H, W, C]` (one slice: VAEs take no critic steps). `rng` is the run's base key;
  this step's randomness (binarisation, posterior noise) is `fold_in(rng, state.step)`. The logged `elbo`
  is the true bound (KL weight 1), whatever weight the update used.
  """
  data_rng, eps_rng = jax.random.split(jax.random.fold_in(rng, state.step))
  targets = likelihood.targets(batch['image'][0], data_rng)
  eps = _latents(eps_rng, targets.shape[0], latent_dim)
  weight = vae_losses.kl_weight(state.step, beta=beta, warmup_steps=kl_warmup_steps)
  net = state.vae

  def loss_fn(params):
    log_likelihood, kl = vae_terms(vae, params, targets, eps, likelihood=likelihood)
    return jnp.mean(weight * kl - log_likelihood), (log_likelihood, kl)

  (loss, (log_likelihood, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
  updates, opt_state = tx.update(grads, net.opt_state, net.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updated = state.replace(vae=NetworkState(optax.apply_updates(net.params, updates), net.variables, opt_state))
  # A non-finite update is not applied at all (as in `train_step`); the step is counted.
  state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  skipped = jnp.logical_not(finite).astype(jnp.int32)
  state = state.replace(step=state.step + 1, skipped_steps=state.skipped_steps + skipped,
                        consecutive_skipped=(state.consecutive_skipped + skipped) * skipped)
  metrics = {'loss': loss, 'elbo': jnp.mean(log_likelihood - kl), 'reconstruction': jnp.mean(log_likelihood),
             'kl': jnp.mean(kl), 'kl_weight': weight, 'grad_norm': grad_norm, 'skipped': skipped,
             'skipped_steps': state.skipped_steps, 'consecutive_skipped': state.consecutive_skipped}
  if likelihood.learned_std:
    metrics['decoder_std'] = jnp.exp(net.params['log_std'])
  return state, metrics


def vae_heldout_terms(state: VaeState, targets: jax.Array, keys: jax.Array, *, vae,
                      likelihood: vae_losses.Likelihood, latent_dim: int) -> tuple[jax.Array, jax.Array]:
  """Per-example log-likelihood and KL of held-out `targets`, with one posterior sample per example from its
  own key in `keys` (so the figure does not depend on the batch size or the device count)."""
  eps = jax.vmap(lambda key: jax.random.normal(key, (latent_dim,), jnp.float32))(keys)
  return vae_terms(vae, state.vae.params, targets, eps, likelihood=likelihood)


def vae_reconstruct(state: VaeState, targets: jax.Array, *, vae, likelihood: vae_losses.Likelihood) -> jax.Array:
  """The decoder's mean image at the posterior mean of each of `targets`."""
  variables = {'params': state.vae.params}
  mean, _ = vae.apply(variables, targets, method='encode')
  loc, _ = vae.apply(variables, mean, method='decode')
  return likelihood.mean(loc)


def vae_generate(state: VaeState, z: jax.Array, *, vae, likelihood: vae_losses.Likelihood) -> jax.Array:
  """Images from prior latents `z`: the decoder's mean (Bernoulli: pixel probabilities) in [-1, 1]."""
  loc, _ = vae.apply({'params': state.vae.params}, z, method='decode')
  return likelihood.mean(loc)
