"""The evaluator: samples from a generator over the device mesh, extracts features, and scores them.

Generation and feature extraction are one jitted program per batch, split over the mesh's `data` axis; only
features (and class probabilities) come back to the host, where `metrics` computes FID, KID, IS and
precision/recall against the real data's features. Those reference features are computed once per
dataset/split/image size/feature network and cached as `.npz` under `<cache_dir>/reference/`.

Metric names carry the feature network (`digits_classifier_fid`, `inception_fid`, ...): a digits-classifier
FID is never an Inception FID.
"""
import functools
import os
import re
from typing import Any, Callable, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from aigc_jax import ema as ema_lib
from aigc_jax import input_pipeline, steps
from aigc_jax import sharding as sharding_lib
from aigc_jax.config_errors import ConfigError
from aigc_jax.evaluation import digits_classifier, inception, metrics
from aigc_jax.models import Gan

_FLOOR_SEED = 0xF100  # the permutation that splits the real data into two halves


class FeatureNetwork(NamedTuple):
  name: str          # prefixes the metric names
  weights_id: str    # identifies architecture and weights: part of the reference cache key
  apply: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]]  # (variables, images) -> (features, logits)
  variables: Any


def cache_dir(config: ml_collections.ConfigDict) -> str:
  return os.path.expanduser(config.eval.cache_dir or '~/.cache/aigc_jax')


def load_feature_network(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> FeatureNetwork:
  """The configured feature network with its weights (the digits classifier is trained on first use)."""
  name = config.eval.feature_network
  if name == 'digits_classifier':
    if tuple(image_shape) != digits_classifier.IMAGE_SHAPE:
      raise ConfigError(f'config.eval.feature_network=digits_classifier needs 28x28x1 digit images, but '
                        f'{config.dataset!r} gives {tuple(image_shape)}; allowed here: inception')
    trained = digits_classifier.load_or_train(cache_dir(config), data_dir=config.data_dir,
                                              steps=config.eval.classifier_train_steps)
    return FeatureNetwork(name, f'digits_classifier-{trained.recipe}', digits_classifier.apply, trained.params)
  path = inception.weights_path(config.eval.inception_weights)
  return FeatureNetwork(name, inception.network_id(path), inception.apply, inception.load_variables(path))


def _features_and_probs(apply_fn, variables, images):
  features, logits = apply_fn(variables, images)
  return features, jax.nn.softmax(logits.astype(np.float32))


def score(name: str, real: np.ndarray, real_stats: metrics.GaussianStats, fake: np.ndarray,
          fake_probs: np.ndarray, eval_config: ml_collections.ConfigDict) -> dict[str, float]:
  """All metrics of `fake` features (and class probabilities) against the `real` ones, named `<name>_<metric>`."""
  kid, kid_stderr = metrics.kid(real, fake, num_subsets=eval_config.kid_subsets,
                                subset_size=eval_config.kid_subset_size, seed=eval_config.seed)
  inception_score, inception_score_std = metrics.inception_score(fake_probs)
  precision, recall = metrics.precision_recall(real, fake, k=eval_config.pr_k)
  values = {'fid': metrics.frechet_distance(real_stats, metrics.gaussian_stats(fake)), 'kid': kid,
            'kid_stderr': kid_stderr, 'is': inception_score, 'is_std': inception_score_std,
            'precision': precision, 'recall': recall}
  return {f'{name}_{metric}': value for metric, value in values.items()}


class Evaluator:
  """Scores a train state's generator: `evaluator(state) -> {metric name: value}`.

  The images come from `generate(state, z, labels)` (e.g. a model family's sampler; `labels` are drawn
  uniformly over `num_classes` for a class-conditional model, else None) or, without it, from `gan`'s
  generator: the EMA generator when the run has one, unless `config.sample_with_ema` is False (`uses_ema`
  says which; a family's sampler is bound the same way, see `families.py`).
  """

  def __init__(self, config: ml_collections.ConfigDict, *, mesh: Mesh, gan: Gan | None = None, builder: Any,
               image_shape: tuple[int, int, int], state_shardings: Any, network: FeatureNetwork | None = None,
               generate: Callable[..., jax.Array] | None = None, num_classes: int = 0):
    self._config = config
    self._batch = config.eval.batch_size
    self._image_shape = tuple(image_shape)
    self.network = network or load_feature_network(config, image_shape)
    replicated = sharding_lib.replicated(mesh)
    self._split = sharding_lib.example_sharding(mesh)
    self.uses_ema = ema_lib.samples_from_ema(config)
    self._variables = sharding_lib.put_replicated(self.network.variables, mesh)
    features = functools.partial(_features_and_probs, self.network.apply)
    self._features = jax.jit(features, in_shardings=(replicated, self._split),
                             out_shardings=(self._split, self._split))

    if generate is None:
      generate = functools.partial(steps.generate, gan=gan, use_ema=self.uses_ema)
      num_classes = gan.num_classes

    def sample_features(state, variables, rng):
      z = jax.random.normal(rng, (self._batch, config.latent_dim))
      z = jax.lax.with_sharding_constraint(z, self._split)
      labels = None
      if num_classes:  # classes drawn uniformly, as BigGAN-PyTorch samples for IS/FID
        labels = steps.sample_labels(jax.random.fold_in(rng, 1), self._batch, num_classes)
        labels = jax.lax.with_sharding_constraint(labels, self._split)
      return features(variables, generate(state, z, labels))
    self._sample_features = jax.jit(sample_features, in_shardings=(state_shardings, replicated, replicated),
                                    out_shardings=(self._split, self._split))
    self.reference, self.reference_probs = self._reference(builder)
    self.reference_stats = metrics.gaussian_stats(self.reference)

  def _gather(self, arrays):
    # Every process gets the whole batch (one process: a plain device-to-host copy).
    return [np.asarray(multihost_utils.process_allgather(a, tiled=True)) for a in arrays]

  def image_features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Features and class probabilities of host images in [-1, 1] (every process passes the same images)."""
    outputs = []
    for start in range(0, len(images), self._batch):
      chunk = images[start:start + self._batch]
      padded = np.concatenate([chunk, np.zeros((self._batch - len(chunk),) + chunk.shape[1:], chunk.dtype)])
      batch = jax.make_array_from_callback(padded.shape, self._split, lambda index: padded[index])
      outputs.append([x[:len(chunk)] for x in self._gather(self._features(self._variables, batch))])
    return tuple(np.concatenate(parts) for parts in zip(*outputs))

  def _reference(self, builder) -> tuple[np.ndarray, np.ndarray]:
    config = self._config
    key = '-'.join([config.dataset, config.eval.reference_split, f'size{config.image_size}',
                    f'n{config.eval.num_reference}', self.network.weights_id])
    path = os.path.join(cache_dir(config), 'reference', re.sub(r'[^A-Za-z0-9_.-]', '_', key) + '.npz')
    if os.path.exists(path):
      with np.load(path) as cached:
        return cached['features'], cached['probs']
    logging.info('computing reference features %s', path)
    images, _ = input_pipeline.real_images(config, builder, config.eval.reference_split,
                                           config.eval.num_reference)
    features, probs = self.image_features(images)
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      stats = metrics.gaussian_stats(features)
      with open(path + '.tmp', 'wb') as f:  # write-then-rename: never half a cache file
        np.savez(f, features=features, probs=probs, mean=stats.mean, cov=stats.cov)
      os.replace(path + '.tmp', path)
    return features, probs

  def generated_features(self, state: Any) -> tuple[np.ndarray, np.ndarray]:
    """Features and class probabilities of `eval.num_samples` samples from fixed latents (`eval.seed`)."""
    base = jax.random.key(self._config.eval.seed)
    outputs = []
    for index in range(-(-self._config.eval.num_samples // self._batch)):
      outputs.append(self._gather(self._sample_features(state, self._variables, jax.random.fold_in(base, index))))
    return tuple(np.concatenate(parts)[:self._config.eval.num_samples] for parts in zip(*outputs))

  def score_features(self, features: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return score(self.network.name, self.reference, self.reference_stats, features, probs, self._config.eval)

  def __call__(self, state: Any) -> dict[str, float]:
    return self.score_features(*self.generated_features(state))

  def noise_baseline(self) -> dict[str, float]:
    """Scores of uniform noise images in [-1, 1]: the worst a generator should ever be."""
    rng = np.random.default_rng(self._config.eval.seed)
    noise = rng.uniform(-1, 1, (self._config.eval.num_samples,) + self._image_shape).astype(np.float32)
    return self.score_features(*self.image_features(noise))

  def real_halves_baseline(self) -> dict[str, float]:
    """Scores of one random half of the reference data against the other: the floor sampling noise sets."""
    order = np.random.default_rng(_FLOOR_SEED).permutation(len(self.reference))
    first, second = order[:len(order) // 2], order[len(order) // 2:]
    return score(self.network.name, self.reference[first], metrics.gaussian_stats(self.reference[first]),
                 self.reference[second], self.reference_probs[second], self._config.eval)
