"""`--config.data.name=folder:DIR`: training on a folder of one's own images, from preparation to samples."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from aigc_jax import input_pipeline, train
from aigc_jax.datasets import image_folder
from tests.conftest import REPO_ROOT, make_tiny_config, set_fields


def _write_folder(root, *, classes=('cats', 'dogs'), per_class=12, gray_only=False, broken=True):
  """Per class: RGB 40x36 PNGs and grayscale 32x32 JPEGs (none RGB when `gray_only`), one image one level
  deeper, and (`broken`) a file that is not an image."""
  rng = np.random.default_rng(0)
  for label in classes:
    os.makedirs(root / label / 'more', exist_ok=True)
    for i in range(per_class):
      if i % 3 == 0 and not gray_only:
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), np.uint8)).save(root / label / f'{i}.png')
      else:
        Image.fromarray(rng.integers(0, 256, (32, 32), np.uint8)).save(root / label / f'{i}.jpg')
    Image.fromarray(rng.integers(0, 256, (48, 48), np.uint8)).save(root / label / 'more' / 'deep.png')
  if broken:
    (root / classes[0] / 'broken.png').write_bytes(b'not a png')
  return root


def _config(tfds_data_dir, tmp_path, folder, **changes):
  config = make_tiny_config(tfds_data_dir)
  config.data.dir = str(tmp_path / 'tfds')
  config.data.name = f'folder:{folder}'
  set_fields(config, **changes)
  return config


def test_labels_channels_and_size_come_from_the_folder(tmp_path, tfds_data_dir):
  folder = _write_folder(tmp_path / 'images')
  config = _config(tfds_data_dir, tmp_path, folder)
  builder = train.prepare_dataset(config)
  info = input_pipeline.dataset_info(config, builder)
  # RGB because some images are; the most common side (the 32x32 JPEGs); two classes; the broken file left out.
  assert info.image_shape == (32, 32, 3) and info.num_classes == 2
  assert builder.info.features['label'].names == ['cats', 'dogs']
  assert info.num_train_examples == 2 * (12 + 1)
  labels = sorted(int(example['label']) for example in builder.as_dataset(split='train'))
  assert labels == [0] * 13 + [1] * 13

  resized = _config(tfds_data_dir, tmp_path, folder, image_size=24)
  assert input_pipeline.dataset_info(resized, train.prepare_dataset(resized)).image_shape == (24, 24, 3)
  gray = _write_folder(tmp_path / 'gray', classes=('a',), gray_only=True, broken=False)
  (gray / 'loose.jpg').write_bytes((gray / 'a' / '0.jpg').read_bytes())  # not every image in a subfolder
  gray_config = _config(tfds_data_dir, tmp_path, gray)
  gray_info = input_pipeline.dataset_info(gray_config, train.prepare_dataset(gray_config))
  assert gray_info.image_shape == (32, 32, 1) and gray_info.num_classes == 0


def test_a_changed_folder_is_prepared_again_and_an_unchanged_one_is_not(tmp_path, tfds_data_dir):
  folder = _write_folder(tmp_path / 'images', broken=False)
  config = _config(tfds_data_dir, tmp_path, folder)
  first = train.prepare_dataset(config)
  prepared = os.path.join(config.data.dir, 'image_folder')
  stamp = os.path.getmtime(first.data_dir)
  again = train.prepare_dataset(config)
  assert again.data_dir == first.data_dir and os.path.getmtime(again.data_dir) == stamp
  Image.fromarray(np.zeros((32, 32), np.uint8)).save(folder / 'dogs' / 'new.png')
  changed = train.prepare_dataset(config)
  assert changed.data_dir != first.data_dir and len(os.listdir(prepared)) == 2
  assert changed.info.splits['train'].num_examples == first.info.splits['train'].num_examples + 1


def test_resume_on_a_folder_is_exact(tmp_path, tfds_data_dir):
  folder = _write_folder(tmp_path / 'images', broken=False)
  config = _config(tfds_data_dir, tmp_path, folder, sample_every_steps=100)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(_with(config, num_train_steps=2), workdir)
  resumed = train.train_and_evaluate(_with(config, num_train_steps=4), workdir)
  straight = train.train_and_evaluate(_with(config, num_train_steps=4), str(tmp_path / 'straight'))
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed.generator)), jax.tree.leaves(jax.device_get(straight.generator))):
    np.testing.assert_array_equal(a, b)


def _with(config, **changes):
  config = config.copy_and_resolve_references()
  set_fields(config, **changes)
  return config


def test_train_then_sample_from_the_command_line(tmp_path, tfds_data_dir):
  folder = _write_folder(tmp_path / 'images')
  workdir = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, '-m', 'aigc_jax.main', '--config=configs/base.py', f'--workdir={workdir}',
       f'--config.data.name=folder:{folder}', f'--config.data.dir={tmp_path / "tfds"}', '--config.batch_size=16',
       '--config.model.width_multiplier=0.125', '--config.num_train_steps=2', '--config.num_sample_images=4'],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = [line for line in result.stderr.splitlines() if 'unreadable' in line]
  assert len(warnings) == 1 and warnings[0].endswith(f'skipped 1 unreadable image file(s) of 27 in {folder}: '
                                                     'cats/broken.png'), warnings
  sampled = subprocess.run([sys.executable, '-m', 'aigc_jax.sample', f'--workdir={workdir}', '--num_samples=3',
                            f'--output={tmp_path}/s.npz'], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert sampled.returncode == 0, sampled.stderr[-3000:]
  with np.load(tmp_path / 's.npz') as saved:
    assert saved['images'].shape == (3, 32, 32, 3)


@pytest.mark.parametrize('make, message', [
    (lambda tmp: tmp / 'missing', 'does not exist'),
    (lambda tmp: (tmp / 'a_file.png').write_bytes(b'x') and tmp / 'a_file.png', 'is a file, not a folder'),
    (lambda tmp: (tmp / 'empty' / 'sub').mkdir(parents=True) or tmp / 'empty', 'holds no PNG or JPEG images'),
])
def test_a_folder_without_images_is_one_line(make, message, tmp_path):
  with pytest.raises(image_folder.FolderError, match=message):
    image_folder.scan(f'folder:{make(tmp_path)}')
