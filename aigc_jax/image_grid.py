"""Sample grids: a batch of images in [-1, 1] tiled into one uint8 picture, and written as PNG."""
import io
import math

import numpy as np
from etils import epath
from PIL import Image


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2) -> np.ndarray:
  """Tiles `[N, H, W, C]` images in [-1, 1] into a `[rows*(H+p)+p, cols*(W+p)+p, C]` uint8 grid."""
  images = np.asarray(images, np.float32)
  count, height, width, channels = images.shape
  columns = columns or math.ceil(math.sqrt(count))
  rows = math.ceil(count / columns)
  pixels = np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
  grid = np.zeros((rows * (height + padding) + padding, columns * (width + padding) + padding, channels),
                  np.uint8)
  for index in range(count):
    top = padding + (index // columns) * (height + padding)
    left = padding + (index % columns) * (width + padding)
    grid[top:top + height, left:left + width] = pixels[index]
  return grid


def row_labels(count: int, num_classes: int, columns: int | None = None) -> np.ndarray:
  """int32 class labels for `count` images that `make_grid(..., columns)` lays out one class per row.

  With fewer rows than classes the rows spread over the classes (row r: class r * num_classes // rows);
  with more, they cycle through them.
  """
  columns = columns or math.ceil(math.sqrt(count))
  rows = math.ceil(count / columns)
  row = np.arange(count) // columns
  labels = row * num_classes // rows if rows < num_classes else row % num_classes
  return labels.astype(np.int32)


def save_png(grid: np.ndarray, path: str) -> None:
  """Writes a uint8 `[H, W, C]` grid (C = 1 or 3) as PNG to a local path or a bucket URL, creating the
  directory."""
  target = epath.Path(path)
  target.parent.mkdir(parents=True, exist_ok=True)
  png = io.BytesIO()
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(png, format='PNG')
  target.write_bytes(png.getvalue())
