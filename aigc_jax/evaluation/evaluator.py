"""The evaluator: samples from a generator over the device mesh, extracts features, and scores them.

Generation and feature extraction are one jitted program per batch, split over the mesh's `data` axis; only
features (and class probabilities) come back to the host, where `metrics` computes FID, KID, IS and
precision/recall against the real data's features. Those reference features are computed once per
dataset/split/image size/feature network and cached as `.npz` under `<cache_dir>/reference/`.

Metric names carry the feature network (`digits_classifier_fid`, `inception_fid`, ...): a digits-classifier
FID is never an Inception FID. Beside the distribution metrics:
- `nearest_train_ratio`, when the dataset has a held-out split (`eval.heldout_split`): samples' distance to
  their nearest training image over held-out real images' distance to theirs. Well below 1 means copies.
- `rarest_class_share`, when the feature network classifies the dataset's own classes (the digits
  classifier): the share of samples in the least generated class (0.1 for ten balanced classes).
- `label_accuracy`, for class-conditional generators on such data: how often a sample drawn for class K is
  classified as K.
"""
import functools
import os
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from aigc_jax import ema as ema_lib
from aigc_jax import gan_steps, input_pipeline
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
  dataset_classes: int = 0  # > 0 when its logits are the dataset's own classes (class shares, label accuracy)
  fingerprint: str = ''     # of the weights, where weights_id alone does not pin them: in the cache key too


def cache_dir(config: ml_collections.ConfigDict) -> str:
  return os.path.expanduser(config.eval.cache_dir or '~/.cache/aigc_jax')


def load_feature_network(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> FeatureNetwork:
  """The configured feature network with its weights (the digits classifier's published ones, or trained on
  first use for another recipe)."""
  name = config.eval.feature_network
  if name == 'digits_classifier':
    if tuple(image_shape) != digits_classifier.IMAGE_SHAPE:
      raise ConfigError(f'config.eval.feature_network=digits_classifier needs 28x28x1 digit images, but '
                        f'{config.data.name!r} gives {tuple(image_shape)}; allowed here: inception')
    trained = digits_classifier.load_or_train(cache_dir(config), data_dir=config.data.dir,
                                              steps=config.eval.classifier_train_steps)
    return FeatureNetwork(name, f'digits_classifier-{trained.recipe}', digits_classifier.apply, trained.params,
                          dataset_classes=digits_classifier.NUM_CLASSES, fingerprint=trained.fingerprint)
  path = inception.weights_path(config.eval.inception_weights)
  return FeatureNetwork(name, inception.network_id(path), inception.apply, inception.load_variables(path))


def _features_and_probs(apply_fn, variables, images):
  features, logits = apply_fn(variables, images)
  return features, jax.nn.softmax(logits.astype(np.float32))


def score(name: str, real: np.ndarray, real_stats: metrics.GaussianStats, fake: np.ndarray,
          fake_probs: np.ndarray, eval_config: ml_collections.ConfigDict, *, dataset_classes: int = 0,
          labels: np.ndarray | None = None, heldout: np.ndarray | None = None) -> dict[str, float]:
  """All metrics of `fake` features (and class probabilities) against the `real` ones, named `<name>_<metric>`.

  `dataset_classes` > 0 adds the rarest class's share of `fake` (and with `labels`, the label accuracy);
  `heldout` features of held-out real images add the nearest-training ratio (`real` being the training set).
  """
  kid, kid_stderr = metrics.kid(real, fake, num_subsets=eval_config.kid_subsets,
                                subset_size=eval_config.kid_subset_size, seed=eval_config.seed)
  inception_score, inception_score_std = metrics.inception_score(fake_probs)
  precision, recall = metrics.precision_recall(real, fake, k=eval_config.pr_k)
  values = {'fid': metrics.frechet_distance(real_stats, metrics.gaussian_stats(fake)), 'kid': kid,
            'kid_stderr': kid_stderr, 'is': inception_score, 'is_std': inception_score_std,
            'precision': precision, 'recall': recall}
  if dataset_classes:
    values['rarest_class_share'] = float(metrics.class_shares(fake_probs[:, :dataset_classes]).min())
    if labels is not None:
      values['label_accuracy'] = metrics.label_accuracy(fake_probs[:, :dataset_classes], labels)
  if heldout is not None:
    values['nearest_train_ratio'] = metrics.nearest_train_ratio(real, heldout, fake)
  return {f'{name}_{metric}': value for metric, value in values.items()}


def heldout_split(config: ml_collections.ConfigDict, builder: Any) -> str:
  """The held-out split of the nearest-training ratio: `eval.heldout_split`, where 'auto' picks test, else
  validation; '' for none, or when the reference split is not the training split."""
  choice = config.eval.heldout_split
  if config.eval.reference_split != config.data.train_split:
    return ''  # the ratio measures distance to the training images, which the reference then is not
  if choice != 'auto':
    if choice:
      input_pipeline.check_split(config, builder, 'eval.heldout_split', choice)
    return choice
  candidates = [s for s in ('test', 'validation') if s in builder.info.splits and s != config.eval.reference_split]
  return candidates[0] if candidates else ''


class Evaluator:
  """Scores a train state's generator: `evaluator(state) -> {metric name: value}`.

  The images come from `generate(state, z, labels)` (e.g. a model family's sampler; `labels` are drawn
  uniformly over `num_classes` for a class-conditional model, else None) or, without it, from `gan`'s
  generator: the EMA generator when the run has one, unless `config.gan.sample_with_ema` is False (`uses_ema`
  says which; a family's sampler is bound the same way, see `families.py`). With `sampler`, a function of
  the state that returns its `generate` (`families.sampler_for`), each scored state gets its own.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, mesh: Mesh, gan: Gan | None = None, builder: Any,
               image_shape: tuple[int, int, int], state_shardings: Any, network: FeatureNetwork | None = None,
               generate: Callable[..., jax.Array] | None = None, num_classes: int | None = None,
               sampler: Callable[[Any], Callable[..., jax.Array]] | None = None):
    if (generate is None) == (gan is None) or (generate is not None and num_classes is None):
      raise TypeError('Evaluator takes either gan=, or generate= with its num_classes= (0: unconditional)')
    self._config = config
    self._batch = config.eval.batch_size
    self._num_classes = num_classes if generate is not None else gan.num_classes
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
      generate = functools.partial(gan_steps.generate, gan=gan, use_ema=self.uses_ema)
      num_classes = gan.num_classes

    def compile_sampler(generate):
      def sample_features(state, variables, rng):
        z = jax.random.normal(rng, (self._batch, config.model.latent_dim))
        z = jax.lax.with_sharding_constraint(z, self._split)
        labels = None
        if num_classes:  # classes drawn uniformly, as BigGAN-PyTorch samples for IS/FID
          labels = gan_steps.sample_labels(jax.random.fold_in(rng, 1), self._batch, num_classes)
          labels = jax.lax.with_sharding_constraint(labels, self._split)
        sample_features, probs = features(variables, generate(state, z, labels))
        return sample_features, probs, jnp.zeros((self._batch,), jnp.int32) if labels is None else labels
      return jax.jit(sample_features, in_shardings=(state_shardings, replicated, replicated),
                     out_shardings=(self._split, self._split, self._split))
    self._sample_features = compile_sampler(generate)
    self._sampler = sampler
    self._compile_sampler = compile_sampler
    self.reference, self.reference_probs = self._split_features(
        builder, config.eval.reference_split, config.eval.num_reference)
    self.reference_stats = metrics.gaussian_stats(self.reference)
    split = heldout_split(config, builder)
    self.heldout = self._split_features(builder, split, 0)[0] if split else None

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

  def _split_features(self, builder, split: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and class probabilities of a real split, cached on disk."""
    config = self._config
    key = '-'.join([config.data.name, split, f'size{config.data.image_size}', f'n{limit}', self.network.weights_id,
                    *([self.network.fingerprint] if self.network.fingerprint else [])])
    path = os.path.join(cache_dir(config), 'reference', re.sub(r'[^A-Za-z0-9_.-]', '_', key) + '.npz')
    if os.path.exists(path):
      with np.load(path) as cached:
        return cached['features'], cached['probs']
    logging.info('computing reference features %s', path)
    images, _ = input_pipeline.real_images(config, builder, split, limit)
    features, probs = self.image_features(images)
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      stats = metrics.gaussian_stats(features)
      with open(path + '.tmp', 'wb') as f:  # write-then-rename: never half a cache file
        np.savez(f, features=features, probs=probs, mean=stats.mean, cov=stats.cov)
      os.replace(path + '.tmp', path)
    return features, probs

  def generated_features(self, state: Any, num_samples: int | None = None
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Features, class probabilities and class labels (None if unconditional) of `num_samples` (default
    `eval.num_samples`) samples from fixed latents (`eval.seed`)."""
    num_samples = num_samples or self._config.eval.num_samples
    base = jax.random.key(self._config.eval.seed)
    sample_features = self._sample_features if self._sampler is None else self._compile_sampler(self._sampler(state))
    outputs = []
    for index in range(-(-num_samples // self._batch)):
      outputs.append(self._gather(sample_features(state, self._variables, jax.random.fold_in(base, index))))
    features, probs, labels = (np.concatenate(parts)[:num_samples] for parts in zip(*outputs))
    return features, probs, labels if self._num_classes else None

  def reference_halves(self) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the two random halves of the reference data that the floor compares."""
    order = np.random.default_rng(_FLOOR_SEED).permutation(len(self.reference))
    return order[:len(order) // 2], order[len(order) // 2:]

  def score_features(self, features: np.ndarray, probs: np.ndarray, labels: np.ndarray | None = None, *,
                     against_half: bool = False) -> dict[str, float]:
    """Scores of generated features against the reference, or with `against_half` against the half of it
    that the floor uses as its reference (so that equal sample counts compare with the floor)."""
    reference, stats = self.reference, self.reference_stats
    if against_half:
      reference = self.reference[self.reference_halves()[0]]
      stats = metrics.gaussian_stats(reference)
    with_labels = labels is not None and self._num_classes == self.network.dataset_classes
    return score(self.network.name, reference, stats, features, probs, self._config.eval,
                 dataset_classes=self.network.dataset_classes, labels=labels if with_labels else None,
                 heldout=self.heldout)

  def __call__(self, state: Any, *, against_half: bool = False) -> dict[str, float]:
    """Scores of the generator's samples: `eval.num_samples` of them against the whole reference, or with
    `against_half` as many as the floor's second half against its first (see `real_halves_baseline`)."""
    num_samples = len(self.reference_halves()[1]) if against_half else None
    return self.score_features(*self.generated_features(state, num_samples), against_half=against_half)

  def noise_baseline(self, *, against_half: bool = False) -> dict[str, float]:
    """Scores of uniform noise images in [-1, 1]: the worst a generator should ever be."""
    rng = np.random.default_rng(self._config.eval.seed)
    count = len(self.reference_halves()[1]) if against_half else self._config.eval.num_samples
    noise = rng.uniform(-1, 1, (count,) + self._image_shape).astype(np.float32)
    return self.score_features(*self.image_features(noise), against_half=against_half)

  def real_halves_baseline(self) -> dict[str, float]:
    """Scores of one random half of the reference data against the other: the floor sampling noise sets."""
    first, second = self.reference_halves()
    return score(self.network.name, self.reference[first], metrics.gaussian_stats(self.reference[first]),
                 self.reference[second], self.reference_probs[second], self._config.eval,
                 dataset_classes=self.network.dataset_classes)
