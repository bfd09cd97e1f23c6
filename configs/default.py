"""The recommended first run: a small DCGAN on the 5,000 offline MNIST digits (`mnist5k`), no network needed.

`python -m aigc_jax.main --config=configs/default.py --workdir=/tmp/aigc_default`
"""
from configs import base


def get_config():
  config = base.get_config()
  return config
