"""The TensorFlow DCGAN tutorial's model on the offline MNIST digits.

`python -m aigc_jax.main --config=configs/dcgan_mnist.py --workdir=/tmp/aigc_dcgan`
For the full 60,000-digit MNIST (needs network once, or prepared data): `--config.data.name=mnist`.
FID with the digits classifier every 500 steps (a few seconds each): TensorBoard's `eval/` shows the curve,
and the closing line the best step.
"""
from configs import base


def get_config():
  config = base.get_config()
  config.model.name = 'dcgan'
  config.gan.loss = 'non_saturating'  # the tutorial's binary cross-entropy
  config.optimizer.learning_rate = 1e-4  # the tutorial's Adam(1e-4) for both networks
  config.batch_size = 256
  config.num_train_steps = 3_000
  config.sample_every_steps = 500
  config.checkpoint_every_steps = 500
  config.eval.every_steps = 500
  return config
