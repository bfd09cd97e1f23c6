"""BigGAN on CIFAR-10, class-conditional, as ajbrock/BigGAN-PyTorch's `scripts/launch_cifar_ema.sh` trains it.

That script: batch 50, 4 D steps per G step, G and D learning rates 2e-4, no orthogonal regularisation
(`--G_ortho 0.0`), no attention, N(0, 0.02) initialisation (`--G_init N02 --D_init N02`), 500 epochs
(50,000 images / (50 x 4) per step = 250 steps an epoch: 125,000 G steps); BigGAN-PyTorch's defaults for
the rest: ch 64 (G 4ch = 256 wide, D 4ch wide), dim_z 128, no shared embedding and no hierarchical latent
(per-layer class embeddings in G's batch norms), hinge loss, Adam betas (0, 0.999), BN epsilon 1e-5.

  python -m aigc_jax.main --config=configs/biggan_cifar10.py --workdir=/tmp/biggan_cifar10

The global batch of 50 divides over 1, 2, 5 or 10 devices (scale it with the device count otherwise).

Generator EMA as published: `--ema --use_ema --ema_start 1000`, decay 0.9999 (BigGAN-PyTorch's
`--ema_decay` default); samples and evaluation use the EMA generator.
"""
from configs import base


def get_config():
  config = base.get_config()
  config.model.name = 'biggan'
  config.model.conditional = True
  config.model.latent_dim = 128
  config.model.base_channels = 64
  config.model.weight_init = 'normal'  # N02
  config.model.attention_resolution = 0
  config.gan.loss = 'hinge'
  config.gan.g_ortho_reg = 0.0
  config.gan.n_critic = 4
  config.gan.ema_decay = 0.9999
  config.gan.ema_start_step = 1_000
  config.data.name = 'cifar10'
  config.optimizer.learning_rate = 2e-4
  config.optimizer.adam_b1 = 0.0
  config.optimizer.adam_b2 = 0.999
  config.batch_size = 50
  config.num_train_steps = 125_000
  config.num_sample_images = 100  # a 10 x 10 grid: one class per row
  config.sample_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.eval.feature_network = 'inception'  # FID/IS on 32x32x3 need the Inception weights file
  config.eval.num_samples = 50_000
  return config
