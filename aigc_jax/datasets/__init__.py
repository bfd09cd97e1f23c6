"""TFDS builders for datasets that build offline (no download): `mnist5k`, and `folder:DIR` (your own images).

Importing this package registers them with TFDS, so `tfds.builder(name)` and `tfds.load(name)` find them
exactly like the catalogue datasets (`mnist`, `cifar10`, ...).
"""
from aigc_jax.datasets import image_folder, mnist5k  # noqa: F401  (registers the builders)

OFFLINE_DATASETS = ('mnist5k',)
