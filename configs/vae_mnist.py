"""A convolutional VAE on the offline MNIST digits (`mnist5k`): Bernoulli likelihood on dynamically
binarised pixels, 32 latent dimensions, a short KL warm-up.

`python -m aigc_jax.main --config=configs/vae_mnist.py --workdir=/tmp/aigc_vae`
Gaussian likelihood on the 8-bit pixels (learned scale): `--config.vae.likelihood=gaussian`.
Every 500 steps the held-out negative ELBO, every 1,000 the digits-classifier FID of samples (decoder
means); `python -m aigc_jax.evaluate` adds the held-out NLL by importance sampling.

Samples decode latents from a mixture of 10 Gaussians fitted to the training digits' latents after
training (Ghosh et al., 2020), not from the prior N(0, I): the prior's regions that no training digit
encodes to decode to blends of digits. The model and its likelihood are the same either way; docs/vae.md
compares the two samplers over three seeds. The prior's samples: `--config.vae.sampler=prior`.
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
  config.vae.sampler = 'gmm'
  return config
