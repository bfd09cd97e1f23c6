"""SNGAN's ResNet (Miyato et al. 2018, "Spectral Normalization for Generative Adversarial Networks"),
unconditional, on the 5,000 offline MNIST digits (`mnist5k`): the check that the ResNet family learns,
on 2 CPU cores.

  python -m aigc_jax.main --config=configs/sngan_mnist.py --workdir=/tmp/sngan_mnist

The model and loss of `configs/sngan_cifar10.py` (the authors' 32x32 ResNet: spectral norm in D, hinge
loss), laid out for 28x28 (G starts at 7x7 and up-samples twice). Changed for the CPU budget:
- a quarter of the widths (G 64, D 32 channels) and one D update per G update, with Adam(b1=0.5,
  b2=0.999): setting C of the paper's Table 1, where spectral norm did as well as with five D updates;
- batch 32 for 4,000 steps at learning rate 8e-4, where the paper's setting C has batch 64 at 2e-4: the
  same 128,000 images in twice the updates, the lesson of the default's recipe search (docs/evaluation.md,
  "How the default recipe was chosen"). Over 3 seeds: FID 20.8 +- 6.3, 3.8 times the floor, where batch 64
  at 2e-4 scored 72.2 +- 4.6, 13.5 times the floor of an earlier digits classifier (docs/evaluation.md,
  "The ResNet families on the digits");
- an exponential moving average of G's weights (decay 0.999; Yazici et al., 2019), which samples and
  evaluation use, started half-way (BigGAN starts its EMA late too): from step 0 it would still carry 2 %
  of the initial weights at the end of so short a run (0.999 ** 4000).
"""
from configs import base


def get_config():
  config = base.get_config()
  config.model.name = 'sngan_resnet'
  config.model.latent_dim = 128
  config.model.width_multiplier = 0.25
  config.gan.loss = 'hinge'
  config.gan.n_critic = 1
  config.gan.ema_decay = 0.999
  config.gan.ema_start_step = 2_000
  config.optimizer.learning_rate = 8e-4
  config.optimizer.adam_b1 = 0.5
  config.optimizer.adam_b2 = 0.999
  config.batch_size = 32
  config.num_train_steps = 4_000
  config.log_every_steps = 500
  config.sample_every_steps = 1_000
  config.checkpoint_every_steps = 1_000
  config.eval.every_steps = 1_000
  return config
