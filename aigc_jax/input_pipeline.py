"""TFDS -> tf.data -> global `jax.Array` batches.

The global batch is cut into *streams*, one per shard of the batch axis (one per device on the data
mesh). Stream `s` reads its own even slice of the split (`tfds.even_splits(split, n)[s]`, what
`tfds.split_for_jax_process` gives a process), shuffles it with its own seed and supplies rows
`[s * b, (s + 1) * b)` of every global batch (`b = global_batch // num_streams`). Each process runs only the
streams whose rows its devices hold, concatenates them (its `global_batch // process_count` rows) and the
global batch is assembled with `jax.make_array_from_process_local_data`. So the global batches, and hence
the training run, are a function of the seed and the stream count alone: 2 processes x 4 devices see
exactly the batches 1 process x 8 devices sees, and a stream's iterator (checkpointed per stream) resumes
under any process count. Images leave tf.data as float32 in [-1, 1].

A training element holds the real batches one generator update consumes: `n_critic` discriminator batches,
so `image` is `[n_critic, local_batch, H, W, C]` and `label` is `[n_critic, local_batch]`.
"""
import dataclasses
from typing import Any, Iterator, Sequence

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.experimental import multihost_utils

import aigc_jax.datasets  # noqa: F401  (registers the offline TFDS builders)
from aigc_jax import families
from aigc_jax.datasets import image_folder
from aigc_jax.config_errors import ConfigError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the models and the trainer need to know about the data."""
  name: str
  image_shape: tuple[int, int, int]  # (height, width, channels) as the models see it
  num_classes: int
  num_train_examples: int


DATASET_INFO_FILE = 'dataset_info.json'  # written into the workdir by training: sampling needs no data


def info_record(config: ml_collections.ConfigDict, info: DatasetInfo) -> dict[str, Any]:
  """`info` as JSON, with the `config.data` fields that determine it."""
  data = config.data
  return {'dataset': data.name, 'train_split': data.train_split, 'image_size': data.image_size,
          'image_key': data.image_key, 'label_key': data.label_key, 'image_shape': list(info.image_shape),
          'num_classes': info.num_classes, 'num_train_examples': info.num_train_examples, 'name': info.name}


def info_from_record(config: ml_collections.ConfigDict, record: dict[str, Any]) -> DatasetInfo | None:
  """The DatasetInfo a run recorded, or None if it was recorded for other data than `config` names."""
  expected = info_record(config, DatasetInfo('', (), 0, 0))
  if any(record.get(field) != expected[field] for field in
         ('dataset', 'train_split', 'image_size', 'image_key', 'label_key')):
    return None
  return DatasetInfo(record['name'], tuple(record['image_shape']), record['num_classes'],
                     record['num_train_examples'])


def get_builder(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder for `config.data.name` (a TFDS name, or `folder:DIR`), prepared (built or downloaded) if
  it is not yet.

  Multi-process: process 0 prepares first and the others then find the data prepared (a shared data_dir)
  or prepare their own copy (a local one), so no two processes write the same files at once.
  """
  if image_folder.is_folder(config.data.name):
    builder = image_folder.builder(config.data.name, config.data.image_size, config.data.dir)
  else:
    builder = tfds.builder(config.data.name, data_dir=config.data.dir)
  if jax.process_count() == 1:
    builder.download_and_prepare()
    return builder
  failure = None
  if jax.process_index() == 0:
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except  (every process must reach the broadcast)
      failure = e
  if not int(multihost_utils.broadcast_one_to_all(np.int32(failure is None))):
    raise failure or RuntimeError('process 0 could not prepare the dataset (see its log)')
  if jax.process_index() != 0:
    builder.download_and_prepare()
  return builder


def check_split(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder, field: str, split: str) -> None:
  """A one-line `ConfigError` unless `split` (e.g. 'train' or 'train[:90%]') names data of the dataset."""
  try:
    builder.info.splits[split].num_examples  # pylint: disable=expression-not-assigned
  except Exception:  # tfds raises KeyError or ValueError, depending on the split string
    raise ConfigError(f'config.{field}={split!r} is not a split of {config.data.name!r}; allowed: '
                      f'{", ".join(sorted(builder.info.splits))} (or a TFDS slice of one, e.g. train[:90%])') from None


def dataset_info(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder) -> DatasetInfo:
  """Image shape (after the optional resize), class count and split size of the configured dataset."""
  features = builder.info.features
  images = sorted(name for name, feature in features.items() if isinstance(feature, tfds.features.Image))
  if config.data.image_key not in images:
    raise ConfigError(f'config.data.image_key={config.data.image_key!r} is not an image feature of '
                      f'{config.data.name!r}; '
                      f'allowed: {", ".join(images) or "none (the dataset has no image feature)"}')
  check_split(config, builder, 'data.train_split', config.data.train_split)
  height, width, channels = features[config.data.image_key].shape
  if config.data.image_size:
    height = width = config.data.image_size
  label = features[config.data.label_key] if config.data.label_key in features else None
  num_classes = getattr(label, 'num_classes', 0) or 0
  num_examples = builder.info.splits[config.data.train_split].num_examples
  return DatasetInfo(config.data.name, (height, width, channels), num_classes, num_examples)


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


def _stream_dataset(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder, stream: int,
                    num_streams: int) -> tf.data.Dataset:
  """Stream `stream` of `num_streams`: its slice of the split, seeded, infinite, `[n_critic, b, ...]`."""
  split = tfds.even_splits(config.data.train_split, n=num_streams)[stream]
  seed = config.seed * 2**20 + stream  # distinct, reproducible order per stream
  ds = builder.as_dataset(split=split, shuffle_files=True,
                          read_config=tfds.ReadConfig(shuffle_seed=seed))
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  ds = ds.map(lambda ex: _preprocess(ex, image_key=config.data.image_key, label_key=config.data.label_key,
                                     image_size=config.data.image_size),
              num_parallel_calls=tf.data.AUTOTUNE)
  # The buffer is shared out over the streams: a process holds at most `shuffle_buffer` examples.
  ds = ds.shuffle(max(1, config.data.shuffle_buffer // num_streams), seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat()
  ds = ds.batch(config.batch_size // num_streams, drop_remainder=True)
  ds = ds.batch(config.gan.n_critic, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def batch_streams(sharding: jax.sharding.Sharding, global_shape: Sequence[int]) -> tuple[int, list[int]]:
  """`(num_streams, ids)` for a training element of `global_shape` laid out by `sharding`.

  One stream per shard of the batch axis (axis 1); `ids` are the streams whose rows this process's
  devices hold, in row order (the order `make_array_from_process_local_data` expects them in).
  """
  rows = sharding.shard_shape(tuple(global_shape))[1]
  starts = {index[1].start or 0 for index in sharding.addressable_devices_indices_map(tuple(global_shape)).values()}
  return global_shape[1] // rows, [start // rows for start in sorted(starts)]


def _default_streams(process_index: int, process_count: int) -> tuple[int, list[int]]:
  """One stream per device and a contiguous block of them per process: a process's rows when the mesh
  orders devices by process, as on CPU and GPU (training takes the exact rows from the sharding instead,
  `batch_streams`)."""
  num_streams = jax.device_count()
  share = num_streams // process_count
  return num_streams, list(range(process_index * share, (process_index + 1) * share))


def create_train_dataset(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder, *,
                         process_index: int, process_count: int) -> tf.data.Dataset:
  """This process's rows of each global element, `[n_critic, global_batch // process_count, ...]`, as one
  tf.data pipeline (for inspection and throughput timing; training uses `TrainStreams`, the same rows)."""
  num_streams, ids = _default_streams(process_index, process_count)
  streams = tuple(_stream_dataset(config, builder, s, num_streams) for s in ids)
  if len(streams) == 1:
    return streams[0]
  return tf.data.Dataset.zip(streams).map(
      lambda *parts: {key: tf.concat([p[key] for p in parts], axis=1) for key in parts[0]})


class TrainStreams:
  """This process's streams, one tf.data iterator each; iterating yields its rows of each global element.

  `iterators` (`stream_<id>` -> iterator) and `layout` (where those positions fit) are what checkpoints
  save: a stream's position restores under any process count, provided the stream count is the same.
  """

  def __init__(self, config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder, *,
               num_streams: int, ids: Sequence[int]):
    self.num_streams = num_streams
    self.iterators = {f'stream_{s}': iter(_stream_dataset(config, builder, s, num_streams)) for s in ids}

  @property
  def layout(self) -> dict[str, Any]:
    return {'num_streams': self.num_streams}

  def __iter__(self) -> 'TrainStreams':
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    parts = [next(it) for it in self.iterators.values()]
    return {key: np.concatenate([np.asarray(p[key]) for p in parts], axis=1) for key in parts[0]}


def train_streams(config: ml_collections.ConfigDict, builder: tfds.core.DatasetBuilder,
                  sharding: jax.sharding.Sharding, info: 'DatasetInfo') -> TrainStreams:
  """The streams this process runs for training elements laid out by `sharding`."""
  num_streams, ids = batch_streams(sharding, global_batch_shapes(config, info)['image'].shape)
  return TrainStreams(config, builder, num_streams=num_streams, ids=ids)


def global_batch_shapes(config: ml_collections.ConfigDict,
                        info: DatasetInfo) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of one global training element (all processes together)."""
  return families.global_batch_shapes(config, info.image_shape)


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
  ds = ds.map(lambda ex: _preprocess(ex, image_key=config.data.image_key, label_key=config.data.label_key,
                                     image_size=config.data.image_size)).batch(1024)
  images, labels = zip(*((b['image'], b['label']) for b in tfds.as_numpy(ds))) or ((), ())
  if not images:
    raise ValueError(f'split {split!r} of {config.data.name!r} has no examples')
  return np.concatenate(images), np.concatenate(labels)
