"""Scaling sweep of the DCGAN on mnist5k: width multiplier x per-device batch x device count.

`python -m aigc_jax.sweep --sweep=configs/sweeps/dcgan_scaling.py --root=/tmp/dcgan_scaling --dry_run`
The global batch grows with the device count (32 or 64 images per device): weak scaling, the usual way
to use more accelerators. Wider models shard their kernels over the devices (FSDP) instead of
replicating them, so the widest run fits where a replicated one might not.
"""
BASE_CONFIG = 'configs/dcgan_mnist.py'


def get_sweep() -> list[dict]:
  runs = []
  for devices in (1, 2, 4, 8):
    for width in (0.5, 1.0, 2.0):
      for per_device in (32, 64):
        run = {'devices': devices, 'model.width_multiplier': width, 'batch_size': per_device * devices,
               'num_train_steps': 1_000}
        if width >= 2.0 and devices > 1:
          run.update(fsdp_devices=devices, param_sharding='fsdp')
        runs.append(run)
  return runs
