"""BigGAN on ImageNet at 128x128 (Brock et al. 2019, "Large Scale GAN Training for High Fidelity Natural
Image Synthesis"), class-conditional over the 1,000 classes.

Sources, value by value:
  * ajbrock/BigGAN-PyTorch `scripts/launch_BigGAN_bs256x8.sh` (the authors' PyTorch release; its README: 150k
    iterations to train): G and D ch 96, dim_z 120 with a hierarchical latent and a 128-d shared class
    embedding, attention at 64 in G and D, orthogonal initialisation, G lr 1e-4, D lr 4e-4, Adam betas
    (0, 0.999), batch 256 x 8 accumulations = 2,048, BN epsilon 1e-5 (fixed in `resnet_gan`), SN epsilon
    1e-6 (fixed in `biggan`), sampling with batch-norm running statistics (`--G_eval_mode`).
  * The paper and google/compare_gan's `example_configs/biggan_imagenet128.gin` (which reproduces the
    paper's Table 1 rows 7-8): 2 D steps per G step (the PyTorch script uses 1), and the paper's
    off-diagonal orthogonal regularisation with weight 1e-4 (Table 1 row 8; the PyTorch script sets
    `--G_ortho 0.0`). compare_gan uses D lr 5e-4 and notes the paper's learning rates differ from it.

  python -m aigc_jax.main --config=configs/biggan_imagenet128.py --workdir=/tmp/biggan_imagenet128 \\
      --config.data.dir=DIR_WITH_PREPARED_IMAGENET2012

`imagenet2012` must be prepared for TFDS by hand (TFDS cannot download it). The global batch of 2,048 is
one step's batch over all devices (no gradient accumulation here).

Also as published: generator EMA, decay 0.9999 from step 20,000 (`--ema --use_ema --ema_start 20000`;
samples and evaluation use the EMA generator), and Adam epsilon 1e-6 (`--adam_eps 1e-6`).
"""
from configs import base


def get_config():
  config = base.get_config()
  config.model.name = 'biggan'
  config.model.conditional = True
  config.model.latent_dim = 120
  config.model.hierarchical_latent = True
  config.model.shared_embedding_dim = 128
  config.model.base_channels = 96
  config.model.attention_resolution = 64
  config.model.weight_init = 'orthogonal'
  config.gan.loss = 'hinge'
  config.gan.g_ortho_reg = 1e-4
  config.gan.n_critic = 2
  config.gan.ema_decay = 0.9999
  config.gan.ema_start_step = 20_000
  config.data.name = 'imagenet2012'
  config.data.image_size = 128  # centre crop of the short side, resized (as BigGAN-PyTorch's CenterCropLongEdge)
  config.data.shuffle_buffer = 50_000
  config.optimizer.g_learning_rate = 1e-4
  config.optimizer.d_learning_rate = 4e-4
  config.optimizer.adam_b1 = 0.0
  config.optimizer.adam_b2 = 0.999
  config.optimizer.adam_eps = 1e-6
  config.batch_size = 2_048
  config.num_train_steps = 150_000
  config.sample_every_steps = 1_000
  config.checkpoint_every_steps = 1_000
  config.eval.feature_network = 'inception'
  config.eval.num_samples = 50_000
  return config
