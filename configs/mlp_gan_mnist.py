"""The fully connected GAN of the original tutorial articles on the 5,000 offline MNIST digits (`mnist5k`).

G: z(100) -> 256 -> 512 -> 1024 -> 784 (tanh); D: 784 -> 512 -> 256 -> 1. Adam(2e-4, b1=0.5), batch 128,
8,000 steps. The articles' binary cross-entropy loses whole digit classes on this data, so the loss is
least squares (Mao et al., 2017). Trains in about 4 minutes on 2 CPU cores, no network needed:

`python -m aigc_jax.main --config=configs/mlp_gan_mnist.py --workdir=/tmp/aigc_mlp`
"""
from configs import base


def get_config():
  return base.get_config()
