"""SNGAN's ResNet on CIFAR-10 (Miyato et al. 2018, "Spectral Normalization for Generative Adversarial Networks").

Hyper-parameters of pfnet-research/sngan_projection `configs/sn_cifar10_unconditional.yml` (the authors'
code; the paper's ResNet setting): generator `resnet_32` (dim_z 128, bottom width 4, ch 256), discriminator
`snresnet_32` (ch 128), hinge loss, Adam alpha 2e-4, beta1 0, beta2 0.9, n_dis 5, batch 64, 50,000 generator
updates with the learning rate decayed linearly to 0 from the start (`iteration_decay_start: 0`).
`--config.model.conditional=True` is the class-conditional model of `configs/sn_cifar10.yml` (Miyato & Koyama 2018:
conditional batch norm in G, projection discriminator).

  python -m aigc_jax.main --config=configs/sngan_cifar10.py --workdir=/tmp/sngan_cifar10

CIFAR-10 downloads through TFDS once (or point --config.data.dir at prepared data). FID/IS need the FID
Inception weights: --config.eval.every_steps=5000 --config.eval.inception_weights=PATH.

Also published, not expressible here:
  * sngan_projection's updater draws 128 samples for each generator update (`n_gen_samples: 128`) while
    the discriminator sees batches of 64; here both use `batch_size`.
"""
from configs import base


def get_config():
  config = base.get_config()
  config.model.name = 'sngan_resnet'  # G 4ch = 256 wide, D 2ch = 128 wide at 32x32 (base_channels 64)
  config.model.latent_dim = 128
  config.gan.loss = 'hinge'
  config.gan.n_critic = 5
  config.data.name = 'cifar10'
  config.optimizer.learning_rate = 2e-4
  config.optimizer.adam_b1 = 0.0
  config.optimizer.adam_b2 = 0.9
  config.optimizer.lr_schedule = 'linear'  # to 0 at the last step
  config.batch_size = 64
  config.num_train_steps = 50_000
  config.sample_every_steps = 2_500
  config.checkpoint_every_steps = 2_500
  config.eval.feature_network = 'inception'  # FID/IS on 32x32x3 need the Inception weights file
  config.eval.num_samples = 50_000
  return config
