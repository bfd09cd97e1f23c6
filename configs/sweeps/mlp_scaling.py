"""Scaling sweep of the MLP GAN on mnist5k: width multiplier x global batch size x device count.

`python -m aigc_jax.sweep --sweep=configs/sweeps/mlp_scaling.py --root=/tmp/mlp_scaling --dry_run`
Each run trains from `BASE_CONFIG` with its overrides into its own workdir under the root. The global
batch is fixed per run (so more devices means fewer examples per device): strong scaling.
"""
BASE_CONFIG = 'configs/mlp_gan_mnist.py'


def get_sweep() -> list[dict]:
  return [{'devices': devices, 'model.width_multiplier': width, 'batch_size': batch, 'num_train_steps': 2_000,
           'checkpoint_every_steps': 1_000, 'sample_every_steps': 1_000}
          for devices in (1, 2, 4, 8) for width in (0.5, 1.0, 2.0) for batch in (64, 128, 256)]
