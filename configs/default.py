"""The recommended first run: a DCGAN at half width on the 5,000 offline MNIST digits (`mnist5k`), with a
generator EMA; about 5 minutes on 2 CPU cores, no network needed.

`python -m aigc_jax.main --config=configs/default.py --workdir=/tmp/aigc_default`

From the TensorFlow DCGAN tutorial's model (`configs/dcgan_mnist.py`), with:
- half the layer widths and batch 64 instead of 256: four times the updates in the same wall time, which
  on this small dataset matters more than width;
- the hinge loss (Lim & Ye, 2017; Miyato et al., 2018) instead of binary cross-entropy;
- Adam(2e-4, b1=0.5) for both networks, as in Radford et al. (2016), instead of the tutorial's 1e-4;
- an exponential moving average of the generator's weights (decay 0.999; Karras et al., 2018; Yazıcı et
  al., 2019), which samples and evaluation use.
Screened against DiffAugment (translation, cutout; Zhao et al., 2020) and two time-scale learning rates
(D 4e-4, G 1e-4; Heusel et al., 2017) at the same budget: both were worse (docs/evaluation.md). The run
evaluates FID at its end, and its closing line shows it.
"""
from configs import base


def get_config():
  config = base.get_config()
  config.model.name = 'dcgan'
  config.model.width_multiplier = 0.5
  config.gan.loss = 'hinge'
  config.gan.ema_decay = 0.999
  config.optimizer.learning_rate = 2e-4
  config.batch_size = 64
  config.num_train_steps = 3_000
  config.log_every_steps = 500
  config.sample_every_steps = 500
  config.checkpoint_every_steps = 500
  config.eval.every_steps = 3_000
  return config
