"""BigGAN (Brock et al. 2019), class-conditional, on the 5,000 offline MNIST digits (`mnist5k`): the check
that the BigGAN family learns, and learns its classes, on 2 CPU cores.

  python -m aigc_jax.main --config=configs/biggan_mnist.py --workdir=/tmp/biggan_mnist

BigGAN's own parts, as in BigGAN-PyTorch's ImageNet launch scripts: class-conditional batch norm in G from
one shared class embedding (128 there, 32 here) and a hierarchical latent (z split into one chunk for G's
input and one per stage, each concatenated with the embedding), the projection discriminator, spectral
norm in both networks, hinge loss, orthogonal initialisation, and an exponential moving average of G's
weights that samples and evaluation use. At 28x28 G starts at 7x7 and up-samples twice (z: 3 chunks).
Changed for the CPU budget:
- a quarter of the widths (ch 16: both networks 64 channels) and one D update per G update with
  Adam(2e-4, b1=0.5, b2=0.999), as in `configs/sngan_mnist.py`;
- the EMA (decay 0.999) starts half-way, as BigGAN's starts late (20,000 of its 150,000 steps).
`evaluate` reports `label_accuracy`: how often a sample drawn for class K is classified as K.
"""
from configs import base


def get_config():
  config = base.get_config()
  config.model = 'biggan'
  config.conditional = True
  config.shared_embedding_dim = 32
  config.hierarchical_latent = True
  config.loss = 'hinge'
  config.latent_dim = 96  # 3 chunks of 32
  config.width_multiplier = 0.25
  config.batch_size = 64
  config.n_critic = 1
  config.learning_rate = 2e-4
  config.adam_b1 = 0.5
  config.adam_b2 = 0.999
  config.ema_decay = 0.999
  config.ema_start_step = 1_000
  config.num_train_steps = 2_000
  config.num_sample_images = 100  # a 10 x 10 grid: one class per row
  config.log_every_steps = 250
  config.sample_every_steps = 500
  config.checkpoint_every_steps = 500
  config.eval_every_steps = 500
  return config
