"""A small CNN trained on the offline digits (`mnist5k`): a feature network that needs no download.

Its penultimate layer (128-d) gives FID/KID/precision-recall features and its softmax the Inception-Score
predictions. Scores computed with it are "digits-classifier" scores: comparable with each other, never with
Inception FID.

The default recipe's weights (600 steps from seed 0) ship with the package, in
`digits_classifier_weights/<recipe>/`: trained on one machine, so that digits-classifier figures compare
across machines (XLA's float arithmetic differs between CPUs, and so would weights trained on each). Other
recipes are trained once, deterministically from a seed, and cached as msgpack under
`<cache_dir>/digits_classifier/<recipe>/`, with their test accuracy beside them in `info.json`.
"""
import hashlib
import json
import os
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from aigc_jax import input_pipeline

IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
_RECIPE_VERSION = 1  # bump when the architecture or the training recipe changes: it keys the cache
_BATCH_SIZE = 128
_LEARNING_RATE = 1e-3


class DigitsClassifier(nn.Module):
  """Three stride-2 3x3 convolutions and two dense layers; returns (features [B, 128], logits [B, 10])."""

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = images
    for width in (32, 64, 64):
      x = nn.relu(nn.Conv(width, (3, 3), strides=2)(x))
    features = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
    return features, nn.Dense(NUM_CLASSES)(features)


PUBLISHED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'digits_classifier_weights')


class Trained(NamedTuple):
  params: Any
  test_accuracy: float
  recipe: str       # the cache key: names these weights in the scores' feature_network
  fingerprint: str  # of the weights' bytes: keys the cached reference statistics, so other weights never reuse them


def apply(params: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(features, logits) of images in [-1, 1], `[B, 28, 28, 1]`."""
  return DigitsClassifier().apply({'params': params}, images)


def _train(images: np.ndarray, labels: np.ndarray, *, steps: int, seed: int) -> Any:
  model = DigitsClassifier()
  params = model.init(jax.random.key(seed), jnp.zeros((1,) + IMAGE_SHAPE))['params']
  tx = optax.adam(_LEARNING_RATE)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      return optax.softmax_cross_entropy_with_integer_labels(apply(p, x)[1], y).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  rng = np.random.default_rng(seed)
  order = np.empty(0, np.int64)
  for _ in range(steps):
    if len(order) < _BATCH_SIZE:  # a fresh seeded permutation per epoch
      order = np.concatenate([order, rng.permutation(len(images))])
    batch, order = order[:_BATCH_SIZE], order[_BATCH_SIZE:]
    params, opt_state = step(params, opt_state, images[batch], labels[batch])
  return params


def accuracy(params: Any, images: np.ndarray, labels: np.ndarray) -> float:
  logits = jax.jit(apply)(params, images)[1]
  return float(np.mean(np.argmax(np.asarray(logits), axis=1) == labels))


def _digits_config(data_dir: str | None) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({'data': {'name': 'mnist5k', 'dir': data_dir, 'image_key': 'image',
                                             'label_key': 'label', 'image_size': 0}})


def _fingerprint(payload: bytes) -> str:
  return hashlib.sha256(payload).hexdigest()[:12]


def load_or_train(cache_dir: str, *, data_dir: str | None, steps: int, seed: int = 0) -> Trained:
  """The classifier trained for `steps` from `seed` on mnist5k's train split: the published weights of that
  recipe, else from the cache, else trained now (seconds to a minute on a CPU) and cached."""
  recipe = f'mnist5k-v{_RECIPE_VERSION}-steps{steps}-seed{seed}'
  template = jax.eval_shape(lambda: DigitsClassifier().init(jax.random.key(0), jnp.zeros((1,) + IMAGE_SHAPE)))
  for directory in (os.path.join(PUBLISHED_DIR, recipe), os.path.join(cache_dir, 'digits_classifier', recipe)):
    params_path, info_path = os.path.join(directory, 'params.msgpack'), os.path.join(directory, 'info.json')
    if os.path.exists(params_path) and os.path.exists(info_path):
      with open(params_path, 'rb') as f:
        payload = f.read()
      params = flax.serialization.from_bytes(jax.tree.map(np.zeros_like, template)['params'], payload)
      with open(info_path) as f:
        return Trained(params, json.load(f)['test_accuracy'], recipe, _fingerprint(payload))

  config = _digits_config(data_dir)
  builder = input_pipeline.get_builder(config)
  logging.info('training the digits classifier (%s) into %s', recipe, directory)
  params = _train(*input_pipeline.real_images(config, builder, 'train'), steps=steps, seed=seed)
  test_accuracy = accuracy(params, *input_pipeline.real_images(config, builder, 'test'))
  logging.info('digits classifier test accuracy: %.4f', test_accuracy)
  payload = flax.serialization.to_bytes(params)
  if jax.process_index() == 0:
    os.makedirs(directory, exist_ok=True)
    # Write-then-rename: a concurrent or interrupted run never sees half a file.
    for path, content in ((params_path, payload),
                          (info_path, json.dumps({'test_accuracy': test_accuracy, 'steps': steps, 'seed': seed,
                                                  'dataset': 'mnist5k/train'}).encode())):
      with open(path + '.tmp', 'wb') as f:
        f.write(content)
      os.replace(path + '.tmp', path)
  return Trained(params, test_accuracy, recipe, _fingerprint(payload))
