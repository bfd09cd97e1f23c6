"""Pure VAE steps (Kingma & Welling, 2014): the update on the negative ELBO, and the held-out, reconstruction,
importance-sampling and sampling functions that score and use the model.

The encoder gives q(z | x) = N(mean, diag(exp(logvar))); the decoder gives p(x | z) through the likelihood of
`vae_losses`; the prior is p(z) = N(0, I). Like the GAN steps, everything model-specific is bound with
`functools.partial` before `jax.jit`, and a step's randomness is a pure function of the base key and
`state.step`, which makes resume exact.
"""
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax

from aigc_jax import latent_mixture as latent_mixture_lib
from aigc_jax import sharding as sharding_lib
from aigc_jax import vae_losses
from aigc_jax.state import NetworkState, VaeState

Metrics = dict[str, jax.Array]


def terms(vae, params: Any, targets: jax.Array, eps: jax.Array, *,
          likelihood: vae_losses.Likelihood) -> tuple[jax.Array, jax.Array]:
  """Per-example reconstruction log-likelihood E_q[log p(x | z)] (one sample, z from `eps`) and KL(q || p)."""
  variables = {'params': params}
  mean, logvar = vae.apply(variables, targets, method='encode')
  loc, log_std = vae.apply(variables, vae_losses.reparameterize(mean, logvar, eps), method='decode')
  return likelihood.log_prob(loc, log_std, targets), vae_losses.kl_diagonal_gaussians(mean, logvar)


def train_step(state: VaeState, batch: dict[str, jax.Array], rng: jax.Array, *, vae,
               likelihood: vae_losses.Likelihood, tx: optax.GradientTransformation, latent_dim: int,
               beta: float, kl_warmup_steps: int) -> tuple[VaeState, Metrics]:
  """One update on the negative ELBO with its KL term weighted by beta (after a linear warm-up).

  `batch['image']` is `[1, B, H, W, C]` (one slice: VAEs take no critic steps). `rng` is the run's base key;
  this step's randomness (binarisation, posterior noise) is `fold_in(rng, state.step)`. The logged `elbo`
  is the true bound (KL weight 1), whatever weight the update used. A non-finite update is not applied at
  all (as in the GAN step); the step is counted in `skipped_steps`.
  """
  data_rng, eps_rng = jax.random.split(jax.random.fold_in(rng, state.step))
  targets = likelihood.targets(batch['image'][0], data_rng)
  eps = sharding_lib.constrain_to_batch(jax.random.normal(eps_rng, (targets.shape[0], latent_dim), jnp.float32))
  weight = vae_losses.kl_weight(state.step, beta=beta, warmup_steps=kl_warmup_steps)
  net = state.vae

  def loss_fn(params):
    log_likelihood, kl = terms(vae, params, targets, eps, likelihood=likelihood)
    return jnp.mean(weight * kl - log_likelihood), (log_likelihood, kl)

  (loss, (log_likelihood, kl)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
  updates, opt_state = tx.update(grads, net.opt_state, net.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  updated = state.replace(vae=NetworkState(optax.apply_updates(net.params, updates), net.variables, opt_state))
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


def _posterior_noise(keys: jax.Array, latent_dim: int, samples: int | None = None) -> jax.Array:
  """Standard normal noise from each example's own key: `[B, latent_dim]`, or `[B, samples, latent_dim]`."""
  shape = (latent_dim,) if samples is None else (samples, latent_dim)
  return jax.vmap(lambda key: jax.random.normal(key, shape, jnp.float32))(keys)


def heldout_terms(state: VaeState, targets: jax.Array, keys: jax.Array, *, vae,
                  likelihood: vae_losses.Likelihood, latent_dim: int) -> tuple[jax.Array, jax.Array]:
  """Per-example log-likelihood and KL of held-out `targets`, with one posterior sample per example from its
  own key in `keys` (so the figure does not depend on the batch size or the device count)."""
  return terms(vae, state.vae.params, targets, _posterior_noise(keys, latent_dim), likelihood=likelihood)


def log_importance_weights(state: VaeState, targets: jax.Array, keys: jax.Array, *, vae,
                           likelihood: vae_losses.Likelihood, latent_dim: int, samples: int) -> jax.Array:
  """`[B, samples]` log-weights log p(x, z_k) - log q(z_k | x), z_k ~ q(z | x), each example's from its own key.

  log p(x) >= E[logsumexp_k(w_k) - log K], the importance-weighted bound of Burda et al. (2016): K = 1 is the
  ELBO, and it tightens to log p(x) as K grows. Callers draw K in chunks (fresh keys per chunk) and combine
  all of an example's weights before the logsumexp.
  """
  params = {'params': state.vae.params}
  mean, logvar = vae.apply(params, targets, method='encode')
  eps = _posterior_noise(keys, latent_dim, samples)                        # [B, K, D]
  z = vae_losses.reparameterize(mean[:, None], logvar[:, None], eps)
  log_normal = lambda x: -0.5 * jnp.sum(x ** 2 + math.log(2 * math.pi), axis=-1)
  log_prior = log_normal(z)
  log_posterior = log_normal(eps) - 0.5 * jnp.sum(logvar, axis=-1)[:, None]

  def log_likelihood(z_k):  # one of the K samples, for every example
    loc, log_std = vae.apply(params, z_k, method='decode')
    return likelihood.log_prob(loc, log_std, targets)
  log_likelihoods = jax.lax.map(log_likelihood, jnp.swapaxes(z, 0, 1))  # [K, B]: one decoder batch at a time
  return jnp.swapaxes(log_likelihoods, 0, 1) + log_prior - log_posterior


def reconstruct(state: VaeState, targets: jax.Array, *, vae, likelihood: vae_losses.Likelihood) -> jax.Array:
  """The decoder's mean image at the posterior mean of each of `targets`."""
  variables = {'params': state.vae.params}
  mean, _ = vae.apply(variables, targets, method='encode')
  loc, _ = vae.apply(variables, mean, method='decode')
  return likelihood.mean(loc)


def generate(state: VaeState, z: jax.Array, labels: None = None, *, vae, likelihood: vae_losses.Likelihood,
             temperature: float = 1.0, latent_mixture: latent_mixture_lib.Mixture | None = None) -> jax.Array:
  """Images from standard-normal latents `z`: the decoder's mean (Bernoulli: pixel probabilities) in [-1, 1]
  at `temperature * z`, or, with a fitted `latent_mixture`, at the mixture's draw for `z` (its components'
  scales times `temperature`). Temperature 1 samples the prior (or the mixture); below 1 the latents stay
  nearer the centre, which the encoder covers densely, so samples are sharper and less varied (the
  reduced-temperature sampling of Glow, Kingma & Dhariwal 2018, and NVAE, Vahdat & Kautz 2020). The VAEs are
  unconditional: `labels` must be None."""
  if labels is not None:
    raise ValueError('the VAEs are unconditional: generate takes no labels')
  if latent_mixture is None:
    z = temperature * z
  else:
    z = latent_mixture_lib.sample(latent_mixture, z, temperature)
  loc, _ = vae.apply({'params': state.vae.params}, z, method='decode')
  return likelihood.mean(loc)


def posterior_samples(state: VaeState, targets: jax.Array, keys: jax.Array, *, vae, latent_dim: int) -> jax.Array:
  """One draw z ~ q(z | x) per example of `targets` `[B, ...]`, each from its own key: samples of the aggregate
  posterior, what a latent mixture is fitted to."""
  mean, logvar = vae.apply({'params': state.vae.params}, targets, method='encode')
  return vae_losses.reparameterize(mean, logvar, _posterior_noise(keys, latent_dim))
