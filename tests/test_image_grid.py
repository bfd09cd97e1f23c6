"""Sample grids: pixel mapping, layout and PNG round trip."""
import numpy as np
from PIL import Image

from aigc_jax import image_grid


def test_grid_layout_and_pixel_values(tmp_path):
  images = np.full((5, 4, 3, 1), -1.0, np.float32)
  images[4] = 1.0
  grid = image_grid.make_grid(images, columns=3, padding=1)
  assert grid.shape == (2 * (4 + 1) + 1, 3 * (3 + 1) + 1, 1) and grid.dtype == np.uint8
  assert grid[1:5, 1:4].max() == 0                 # first image: black
  assert (grid[6:10, 5:8] == 255).all()            # fifth image: second row, second column, white
  assert grid[6:10, 9:12].max() == 0               # the empty sixth cell stays background
  path = tmp_path / 'g.png'
  image_grid.save_png(grid, str(path))
  np.testing.assert_array_equal(np.asarray(Image.open(path)), grid[..., 0])


def test_rgb_grid_saves_as_rgb(tmp_path):
  grid = image_grid.make_grid(np.zeros((4, 8, 8, 3), np.float32))
  assert grid.shape == (2 * 10 + 2, 2 * 10 + 2, 3)
  assert grid[2:10, 2:10].min() == 128             # 0.0 maps to mid-grey
  image_grid.save_png(grid, str(tmp_path / 'rgb.png'))
  assert Image.open(tmp_path / 'rgb.png').mode == 'RGB'
