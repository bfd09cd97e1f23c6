"""The TFDS input pipeline on the offline digits: shapes, range, seeded order, per-process shares."""
import jax
import numpy as np

from aigc_jax import input_pipeline, sharding


def _first(config, count, process_index=0, process_count=1):
  builder = input_pipeline.get_builder(config)
  ds = input_pipeline.create_train_dataset(config, builder, process_index=process_index,
                                           process_count=process_count)
  return list(ds.take(count).as_numpy_iterator())


def test_offline_digits_are_real_mnist(tiny_config):
  builder = input_pipeline.get_builder(tiny_config)
  info = input_pipeline.dataset_info(tiny_config, builder)
  assert info.image_shape == (28, 28, 1) and info.num_classes == 10
  assert info.num_train_examples == 4_500
  assert builder.info.splits['test'].num_examples == 500
  images = np.stack([ex['image'] for ex in builder.as_dataset(split='test').take(50).as_numpy_iterator()])
  # Real digits: dark background, bright strokes, roughly 19% of pixels lit.
  assert images.dtype == np.uint8 and images.max() == 255
  assert 0.1 < np.mean(images > 128) < 0.3


def test_elements_are_n_critic_batches_in_minus_one_to_one(tiny_config):
  tiny_config.gan.n_critic = 2
  (element,) = _first(tiny_config, 1)
  assert element['image'].shape == (2, 16, 28, 28, 1) and element['image'].dtype == np.float32
  assert element['label'].shape == (2, 16) and element['label'].dtype == np.int32
  assert element['image'].min() == -1.0 and element['image'].max() == 1.0


def test_order_is_a_function_of_the_seed(tiny_config):
  a = _first(tiny_config, 3)
  b = _first(tiny_config, 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
  tiny_config.seed = 1
  c = _first(tiny_config, 1)
  assert not np.array_equal(a[0]['image'], c[0]['image'])


def test_processes_read_disjoint_shares_of_half_the_batch(tiny_config):
  tiny_config.data.shuffle_buffer = 1  # no shuffling: compare the raw shares
  shares = [_first(tiny_config, 1, process_index=i, process_count=2)[0]['image'] for i in range(2)]
  assert shares[0].shape == (1, 8, 28, 28, 1)
  assert not np.array_equal(shares[0], shares[1])


def test_global_batches_are_sharded_over_all_devices(tiny_config):
  builder = input_pipeline.get_builder(tiny_config)
  info = input_pipeline.dataset_info(tiny_config, builder)
  mesh = sharding.create_mesh()
  ds = input_pipeline.create_train_dataset(tiny_config, builder, process_index=0, process_count=1)
  shapes = input_pipeline.global_batch_shapes(tiny_config, info)
  batch = next(input_pipeline.global_batches(iter(ds.as_numpy_iterator()), sharding.batch_sharding(mesh), shapes))
  assert batch['image'].shape == (1, 16, 28, 28, 1)
  assert len(batch['image'].addressable_shards) == jax.device_count() == 8
  assert batch['image'].addressable_shards[0].data.shape == (1, 2, 28, 28, 1)
