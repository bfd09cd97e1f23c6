"""TFDS -> tf.data -> global `jax.Array` batches.

Each process reads its own slice of the split (`tfds.split_for_jax_process`), batches
`global_batch // process_count` examples, and the global batch is assembled from the process-local pieces
with `jax.make_array_from_process_local_data`. Images leave tf.data as float32 in [-1, 1].

A training element holds the real batches one generator update consumes: `n_critic` discriminator batches,
so `image` is `[n_critic, local_batch, H, W, C]` and `label` is `[n_critic, local_batch]`.
"""
import dataclasses
from typing import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

import aigc_jax.datasets  # noqa: F401  (registers the offline TFDS builders)


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the models and the trainer need to know about the data."""
  name: str
  image_shape: tuple[int, int, int]  # (height, width, channels) as the models see it
  num_classes: int
  num_train_examples: int


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `config.dataset`, prepared (built or downloaded) if it is not yet."""
  builder = tfds.builder(config.dataset, data_dir=config.data_dir)
  builder.download_and_prepare()
  return builder


def dataset_info(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder) -> DatasetInfo:
  """Image shape (after the optional resize), class count and split size of the configured dataset."""
  features = builder.info.features
  height, width, channels = features[config.image_key].shape
  if config.image_size:
    height = width = config.image_size
  label = features[config.label_key] if config.label_key in features else None
  num_classes = getattr(label, 'num_classes', 0) or 0
  num_examples = builder.info.splits[config.train_split].num_examples
  return DatasetInfo(config.dataset, (height, width, channels), num_classes, num_examples)


def _preprocess(example, *, image_key, label_key, image_size):
  image = example[image_key]
  if image_size:
    # Centre square crop, then resize: the usual recipe for CelebA-like data.
    shape = tf.shape(image)
    side = tf.minimum(shape[0], shape[1])
    image = tf.image.resize_with_crop_or_pad(image, side, side)
    image = tf.image.resize(image, (image_size, image_size), antialias=True)
  image = tf.cast(image, tf.float32) / 127.5 - 1.0
  label = tf.cast(example[label_key], tf.int32) if label_key in example else tf.constant(0, tf.int32)
  return {'image': image, 'label': label}


def create_train_dataset(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder, *,
                         process_index: int, process_count: int) -> tf.data.Dataset:
  """The infinite, seeded, per-process training stream of `[n_critic, local_batch, ...]` elements."""
  local_batch = config.batch_size // process_count
  split = tfds.split_for_jax_process(config.train_split, process_index=process_index,
                                     process_count=process_count)
  # Distinct but reproducible order per process; the iterator itself is checkpointed for exact resume.
  seed = config.seed * 1_000 + process_index
  ds = builder.as_dataset(split=split, shuffle_files=True,
                          read_config=tfds.ReadConfig(shuffle_seed=seed))
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  ds = ds.map(lambda ex: _preprocess(ex, image_key=config.image_key, label_key=config.label_key,
                                     image_size=config.image_size),
              num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat()
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.batch(config.n_critic, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def global_batch_shapes(config: ml_collections.ConfigDict,
                        info: DatasetInfo) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of one global training element (all processes together)."""
  lead = (config.n_critic, config.batch_size)
  return {'image': jax.ShapeDtypeStruct(lead + info.image_shape, np.float32),
          'label': jax.ShapeDtypeStruct(lead, np.int32)}


def global_batches(local_iterator: Iterator, sharding: jax.sharding.Sharding,
                   shapes: dict[str, jax.ShapeDtypeStruct]) -> Iterator[dict[str, jax.Array]]:
  """Turns process-local numpy batches into global arrays laid out by `sharding`."""
  for local in local_iterator:
    yield {key: jax.make_array_from_process_local_data(sharding, np.asarray(local[key]),
                                                       shapes[key].shape)
           for key in shapes}


def real_images(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder, split: str,
                limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """All images of `split` (the first `limit` if > 0) in file order, as the models see them: float32
  `[N, H, W, C]` in [-1, 1], and their int32 labels. For evaluation references, so no shuffling."""
  ds = builder.as_dataset(split=split, shuffle_files=False)
  if limit:
    ds = ds.take(limit)
  ds = ds.map(lambda ex: _preprocess(ex, image_key=config.image_key, label_key=config.label_key,
                                     image_size=config.image_size)).batch(1024)
  images, labels = zip(*((b['image'], b['label']) for b in tfds.as_numpy(ds))) or ((), ())
  if not images:
    raise ValueError(f'split {split!r} of {config.dataset!r} has no examples')
  return np.concatenate(images), np.concatenate(labels)
