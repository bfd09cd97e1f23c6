"""BigGAN (Brock et al. 2019), class-conditional, on the 5,000 offline MNIST digits (`mnist5k`): the check
that the BigGAN family learns, and learns its classes, on 2 CPU cores.

  python -m aigc_jax.main --config=configs/biggan_mnist.py --workdir=/tmp/biggan_mnist

BigGAN's own parts, as in BigGAN-PyTorch's ImageNet launch scripts: class-conditional batch norm in G from
one shared class embedding (128 there, 32 here) and a hierarchical latent (z split into one chunk for G's
input and one per stage, each concatenated with the embedding), the projection discriminator, spectral
norm in both networks, hinge loss, orthogonal initialisation, and an exponential moving average of G's
weights that samples and evaluation use. At 28x28 G starts at 7x7 and up-samples twice (z: 3 chunks).
The CPU budget is `configs/sngan_mnist.py`'s, which this config starts from: a quarter of the widths (ch
16: both networks 64 channels here), one D update per G update with Adam(8e-4, b1=0.5, b2=0.999), 4,000
steps of 32, and the EMA (decay 0.999) from half-way, as BigGAN's starts late (20,000 of 150,000 steps).
`evaluate` reports `label_accuracy`: how often a sample drawn for class K is classified as K.
"""
from configs import sngan_mnist


def get_config():
  config = sngan_mnist.get_config()  # its CPU budget: widths, batch, steps, optimiser, loss, EMA, evaluation
  config.model.name = 'biggan'
  config.model.conditional = True
  config.model.shared_embedding_dim = 32
  config.model.hierarchical_latent = True
  config.model.latent_dim = 96  # 3 chunks of 32
  config.num_sample_images = 100  # a 10 x 10 grid: one class per row
  return config
