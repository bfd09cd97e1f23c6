"""A convolutional VAE on the offline MNIST digits (`mnist5k`): Bernoulli likelihood on dynamically
binarised pixels, 32 latent dimensions, a short KL warm-up.

`python -m aigc_jax.main --config=configs/vae_mnist.py --workdir=/tmp/aigc_vae`
Gaussian likelihood on the 8-bit pixels (learned scale): `--config.vae.likelihood=gaussian`.
Every 500 steps the held-out negative ELBO, every 1,000 the digits-classifier FID of prior samples (decoder
means); `python -m aigc_jax.evaluate` adds the held-out NLL by importance sampling.
"""
from configs import base


def get_config():
  config = base.get_config()
  config.model.name = 'vae_conv'
  config.model.latent_dim = 32
  config.optimizer.learning_rate = 1e-3
  config.optimizer.adam_b1 = 0.9
  config.batch_size = 128
  config.num_train_steps = 5_000
  config.sample_every_steps = 1_000
  config.checkpoint_every_steps = 1_000
  config.eval.every_steps = 1_000
  config.vae.likelihood = 'bernoulli'
  config.vae.binarize = 'dynamic'
  config.vae.kl_warmup_steps = 500
  config.vae.heldout_every_steps = 500
  return config
