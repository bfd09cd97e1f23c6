"""A VAE's held-out likelihood: the negative ELBO, and the negative log-likelihood by importance sampling.

`HeldoutLikelihood(state)` scores the split `vae.heldout_split` in nats per image:
- `heldout_neg_elbo` (with `_bits_per_dim`, `_reconstruction`, `_kl`): one posterior sample per image, the
  figure training reports every `vae.heldout_every_steps`;
- `heldout_nll` (with `heldout_nll_bits_per_dim`), when asked for K importance samples: the bound
  -log (1/K) sum_k p(x, z_k) / q(z_k | x) of Burda et al. (2016), which approaches -log p(x) from above as K
  grows. Published MNIST figures use K = 5,000; `evaluate` uses `vae.iwae_samples` (default 1,000).

Every image gets its own fixed keys (from `eval.seed`), and the targets are binarised or quantised once with a
fixed draw, so figures do not depend on the batch size, the device count or the evaluation's time.
"""
import functools
import math
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from scipy.special import logsumexp

from aigc_jax import sharding as sharding_lib
from aigc_jax import vae_losses, vae_steps

_HELDOUT_KEY = 0xE1B0  # folds into eval.seed for the held-out binarisation and posterior samples
_IMPORTANCE_CHUNK = 100  # importance samples per compiled call (bounds the memory of one call)


def likelihood_of(config: ml_collections.ConfigDict) -> vae_losses.Likelihood:
  """The image likelihood of `config.vae`."""
  return vae_losses.get_likelihood(config.vae.likelihood, binarization=config.vae.binarize,
                                   gaussian_std=config.vae.gaussian_std)


def heldout_targets(config: ml_collections.ConfigDict, builder: Any,
                    likelihood: vae_losses.Likelihood) -> np.ndarray:
  """The held-out split as the likelihood models it (binarised with a fixed draw, or quantised)."""
  from aigc_jax import input_pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow: only with data)
  images, _ = input_pipeline.real_images(config, builder, config.vae.heldout_split)
  key = jax.random.fold_in(jax.random.key(config.eval.seed), _HELDOUT_KEY)
  return np.asarray(jax.jit(likelihood.targets)(images, key))


class HeldoutLikelihood:
  """`heldout(state, importance_samples=0) -> scalars` over fixed held-out `targets`, in batches of
  `eval.batch_size` split over `mesh`."""

  def __init__(self, config: ml_collections.ConfigDict, targets: np.ndarray, *, mesh: Mesh, state_shardings: Any,
               vae, likelihood: vae_losses.Likelihood):
    self._targets = targets
    self._batch = config.eval.batch_size
    self._dims = math.prod(targets.shape[1:])
    self._split = sharding_lib.example_sharding(mesh)
    bind = dict(vae=vae, likelihood=likelihood, latent_dim=config.model.latent_dim)
    # Keys cross the jit boundary as raw uint32 data, so they can carry the example sharding.
    keys_in = lambda fn: lambda state, targets, keys: fn(state, targets, jax.random.wrap_key_data(keys))
    self._terms = jax.jit(keys_in(functools.partial(vae_steps.heldout_terms, **bind)),
                          in_shardings=(state_shardings, self._split, self._split),
                          out_shardings=(self._split, self._split))
    self._log_weights = jax.jit(
        keys_in(lambda state, targets, keys: vae_steps.log_importance_weights(
            state, targets, keys, samples=_IMPORTANCE_CHUNK, **bind)),
        in_shardings=(state_shardings, self._split, self._split), out_shardings=self._split)
    base = jax.random.fold_in(jax.random.key(config.eval.seed), _HELDOUT_KEY)
    self._keys = self._example_keys(jax.random.fold_in(base, 1))
    self._importance_base = jax.random.fold_in(base, 2)

  def _example_keys(self, base: jax.Array) -> np.ndarray:
    return np.asarray(jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(base, i))(
        np.arange(len(self._targets)))))

  def _global_batch(self, host: np.ndarray) -> jax.Array:
    """`host` (every process holds the same) padded to a whole batch by repeating its last row, split."""
    padded = np.concatenate([host, np.repeat(host[-1:], self._batch - len(host), axis=0)])
    return jax.make_array_from_callback(padded.shape, self._split, lambda index: padded[index])

  def _gathered(self, outputs, count: int) -> list[np.ndarray]:
    return [np.asarray(multihost_utils.process_allgather(x, tiled=True), np.float64)[:count] for x in outputs]

  def _batches(self):
    for start in range(0, len(self._targets), self._batch):
      count = min(self._batch, len(self._targets) - start)
      yield slice(start, start + count), count, self._global_batch(self._targets[start:start + count])

  def neg_elbo(self, state: Any) -> dict[str, float]:
    log_likelihood, kl = [], []
    for where, count, targets in self._batches():
      ll, k = self._gathered(self._terms(state, targets, self._global_batch(self._keys[where])), count)
      log_likelihood.append(ll)
      kl.append(k)
    log_likelihood, kl = np.concatenate(log_likelihood), np.concatenate(kl)
    neg_elbo = float(np.mean(kl - log_likelihood))
    return {'heldout_neg_elbo': neg_elbo, 'heldout_bits_per_dim': neg_elbo / (self._dims * math.log(2)),
            'heldout_reconstruction': float(np.mean(log_likelihood)), 'heldout_kl': float(np.mean(kl))}

  def importance_sampled_nll(self, state: Any, samples: int) -> dict[str, float]:
    """The K-sample importance-weighted estimate of -log p(x), K = `samples` rounded up to whole chunks of
    100, averaged over the held-out images."""
    chunks = max(1, math.ceil(samples / _IMPORTANCE_CHUNK))
    chunk_keys = [self._example_keys(jax.random.fold_in(self._importance_base, c)) for c in range(chunks)]
    log_px = []
    for where, count, targets in self._batches():
      weights = np.concatenate([self._gathered([self._log_weights(state, targets, self._global_batch(keys[where]))],
                                               count)[0] for keys in chunk_keys], axis=1)
      log_px.append(logsumexp(weights, axis=1) - math.log(weights.shape[1]))
    nll = -float(np.mean(np.concatenate(log_px)))
    return {'heldout_nll': nll, 'heldout_nll_bits_per_dim': nll / (self._dims * math.log(2)),
            'heldout_importance_samples': chunks * _IMPORTANCE_CHUNK}

  def __call__(self, state: Any, importance_samples: int = 0) -> dict[str, float]:
    scores = self.neg_elbo(state)
    if importance_samples:
      scores.update(self.importance_sampled_nll(state, importance_samples))
    return scores
