"""`--config.data.name=folder:DIR`: a folder of your own PNG and JPEG images, as a TFDS dataset.

The folder is searched recursively. When every image sits in a first-level subfolder, the subfolder names
are the class labels (sorted; for conditional models); otherwise there are none. Images are stored at one
shape: grayscale when every image is, RGB otherwise; centre-cropped to a square and resized to
`image_size`, or to the most common size among the images when `image_size` is 0.

The folder is prepared once, through TFDS's builder machinery, under `data_dir/image_folder/<key>/`, where
the key hashes the folder's path, its file list with each file's size, and the stored shape: a later run
with the same folder starts at once, and a changed folder is prepared afresh. From there it is read like any
TFDS dataset (one `train` split), so the data order is seeded and exact resume holds.

Unreadable files are skipped, with one warning that counts them and names the first few.
"""
import collections
import dataclasses
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from aigc_jax.datasets.offline import OfflineBuilder

PREFIX = 'folder:'
EXTENSIONS = ('.png', '.jpg', '.jpeg')
VERSION = tfds.core.Version('1.0.0')
_NAMED_UNREADABLE = 3  # how many unreadable files the warning names


class FolderError(ValueError):
  """The folder cannot be a dataset (missing, not a directory, no images); the message is one line."""


def is_folder(dataset: str) -> bool:
  return dataset.startswith(PREFIX)


@dataclasses.dataclass(frozen=True)
class Scan:
  """What a folder holds: image paths (relative, sorted), their byte sizes, their class names (or None)."""
  root: str
  files: tuple[str, ...]
  sizes: tuple[int, ...]
  classes: tuple[str, ...] | None

  def label(self, relative: str) -> int:
    return self.classes.index(relative.split(os.sep, 1)[0])


def scan(dataset: str) -> Scan:
  """Lists the images of `folder:DIR`; `FolderError` if there are none."""
  root = os.path.abspath(os.path.expanduser(dataset[len(PREFIX):]))
  if not dataset[len(PREFIX):]:
    raise FolderError(f'config.data.name={dataset!r} names no folder; allowed: folder:DIR, e.g. folder:~/my_images')
  if not os.path.exists(root):
    raise FolderError(f'config.data.name={dataset!r}: {root!r} does not exist; allowed: folder:DIR with a folder '
                      'of PNG or JPEG images')
  if not os.path.isdir(root):
    raise FolderError(f'config.data.name={dataset!r}: {root!r} is a file, not a folder; allowed: folder:DIR')
  files = []
  for directory, subdirectories, names in os.walk(root, followlinks=True):
    subdirectories.sort()
    files += [os.path.relpath(os.path.join(directory, name), root) for name in sorted(names)
              if name.lower().endswith(EXTENSIONS) and not name.startswith('.')]
  if not files:
    raise FolderError(f'config.data.name={dataset!r}: {root!r} holds no PNG or JPEG images (searched recursively); '
                      f'allowed: a folder with files ending in {", ".join(EXTENSIONS)}')
  files.sort()
  classes = None
  if all(os.sep in path for path in files):
    classes = tuple(sorted({path.split(os.sep, 1)[0] for path in files}))
  sizes = tuple(os.path.getsize(os.path.join(root, path)) for path in files)
  return Scan(root, tuple(files), sizes, classes)


def _header(path: str):
  """`(width, height, grayscale)` from the file's header, or None if it does not open as an image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as image:
      return image.width, image.height, image.mode in ('1', 'L', 'LA', 'I', 'I;16', 'F')
  except Exception:  # pylint: disable=broad-except  (PIL raises many types for broken files)
    return None


def stored_shape(found: Scan, image_size: int) -> tuple[int, int, int]:
  """`(size, size, channels)` the images are stored at: `image_size`, or the most common side when 0."""
  headers = [header for header in map(lambda p: _header(os.path.join(found.root, p)), found.files) if header]
  if not headers:
    raise FolderError(f'folder {found.root!r}: none of its {len(found.files)} image files could be read')
  channels = 1 if all(gray for _, _, gray in headers) else 3
  if image_size:
    return image_size, image_size, channels
  side = collections.Counter(min(width, height) for width, height, _ in headers).most_common(1)[0][0]
  return side, side, channels


def _square(path: str, shape: tuple[int, int, int]) -> np.ndarray:
  """The image at `path`, centre-cropped to a square and resized to `shape`, as uint8."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path) as image:
    image = image.convert('L' if shape[2] == 1 else 'RGB')
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != shape[0]:
      image = image.resize((shape[1], shape[0]), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, np.uint8)
  return pixels.reshape(shape)


def cache_key(found: Scan, shape: tuple[int, int, int]) -> str:
  digest = hashlib.sha256(repr((found.root, found.files, found.sizes, found.classes, shape)).encode())
  return digest.hexdigest()[:16]


@dataclasses.dataclass
class FolderConfig(tfds.core.BuilderConfig):
  scan: Scan | None = None
  shape: tuple[int, int, int] = (0, 0, 0)


class ImageFolder(OfflineBuilder):
  """One folder of images (see the module docstring); one builder config per folder content and shape."""

  VERSION = VERSION
  RELEASE_NOTES = {'1.0.0': 'Images of a local folder, labels from first-level subfolders.'}

  def _info(self) -> tfds.core.DatasetInfo:
    found, shape = self.builder_config.scan, self.builder_config.shape
    features = {'image': tfds.features.Image(shape=shape)}
    if found.classes is not None:
      features['label'] = tfds.features.ClassLabel(names=list(found.classes))
    return self.dataset_info_from_configs(
        description=f'The images of {found.root}.', features=tfds.features.FeaturesDict(features),
        supervised_keys=('image', 'label') if found.classes is not None else None)

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    return {'train': self._generate_examples()}

  def _generate_examples(self):
    found, shape = self.builder_config.scan, self.builder_config.shape
    unreadable = []
    for relative in found.files:
      try:
        image = _square(os.path.join(found.root, relative), shape)
      except Exception:  # pylint: disable=broad-except  (truncated, not an image, unsupported mode, ...)
        unreadable.append(relative)
        continue
      example = {'image': image}
      if found.classes is not None:
        example['label'] = found.label(relative)
      yield relative, example
    if unreadable:
      logging.warning('skipped %d unreadable image file(s) of %d in %s: %s%s', len(unreadable), len(found.files),
                      found.root, ', '.join(unreadable[:_NAMED_UNREADABLE]),
                      ', ...' if len(unreadable) > _NAMED_UNREADABLE else '')
    if len(unreadable) == len(found.files):
      raise FolderError(f'folder {found.root!r}: none of its {len(found.files)} image files could be read')


def builder(dataset: str, image_size: int, data_dir: str | None) -> ImageFolder:
  """The TFDS builder of `folder:DIR` (not yet prepared); `FolderError` for a folder without images."""
  found = scan(dataset)
  shape = stored_shape(found, image_size)
  config = FolderConfig(name=cache_key(found, shape), version=VERSION, scan=found, shape=shape)
  return ImageFolder(config=config, data_dir=data_dir)
