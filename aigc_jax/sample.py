"""`python -m aigc_jax.sample --workdir=DIR --num_samples=N --output=FILE.npz|FILE.png [options]`.

Writes samples from the generator of the newest usable checkpoint, or of `--step=N` (its EMA when the run
has one; `--config.gan.sample_with_ema=False` for the raw one; a VAE's: its decoder's mean on latents from its
`vae.sampler`, the prior or a mixture fitted to the training images, which are then read):
`FILE.npz` holds `images`, uint8 `[N, H, W, C]`; `FILE.png` a grid. `--seed` picks the latents,
`--truncation=T` draws them from a normal truncated to
[-T, T] (0: off), `--interpolate=K` writes N strips of K images each along the great circle between two
latents (PNG only), `--label=K` asks a class-conditional model for class K (without it, a PNG grid shows one
class per row, as training's grids do, and each image of an `.npz` or strip gets a class drawn uniformly from
`--seed`; the `.npz` then also holds `labels`). Bad input ends with one
`error:` line and exit status 2, before anything is written.
"""
import os
import sys

from absl import app, flags

from aigc_jax import cli, console
from configs import base

_WORKDIR = flags.DEFINE_string('workdir', None, 'A training workdir with checkpoints.')
_STEP = flags.DEFINE_integer('step', None, 'The checkpoint step to use (default: the newest usable one).')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 64, 'Images (with --interpolate: strips).')
_OUTPUT = flags.DEFINE_string('output', None, 'FILE.npz (uint8 images) or FILE.png (a grid).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the latents.')
_LABEL = flags.DEFINE_integer('label', None, 'Class label, for class-conditional models.')
_TRUNCATION = flags.DEFINE_float('truncation', 0.0, 'Truncate latents to [-T, T]; 0 = off.')
_INTERPOLATE = flags.DEFINE_integer('interpolate', 0, 'K >= 2: latent interpolation strips of K steps (PNG).')
_CONFIG = cli.define_config_overrides(base.get_config(), 'Overrides of the run config.')
_EXTENSIONS = ('.npz', '.png')


def parse_flags(argv: list[str]) -> list[str]:
  remaining = cli.parse_flags(argv, config=base.get_config())
  if not _WORKDIR.value:
    cli.fail('--workdir is required')
  if not _OUTPUT.value or not _OUTPUT.value.endswith(_EXTENSIONS):
    cli.fail(f'--output={_OUTPUT.value!r} is not allowed; allowed: a file name ending in {" or ".join(_EXTENSIONS)}')
  if _NUM_SAMPLES.value < 1:
    cli.fail(f'--num_samples={_NUM_SAMPLES.value} is not allowed; allowed: an integer >= 1')
  if _TRUNCATION.value < 0:
    cli.fail(f'--truncation={_TRUNCATION.value} is not allowed; allowed: 0 (off) or a number > 0')
  if _INTERPOLATE.value == 1 or _INTERPOLATE.value < 0:
    cli.fail(f'--interpolate={_INTERPOLATE.value} is not allowed; allowed: 0 (off) or an integer >= 2')
  if _INTERPOLATE.value and not _OUTPUT.value.endswith('.png'):
    cli.fail(f'--interpolate writes a PNG strip; allowed --output: a file name ending in .png, got {_OUTPUT.value!r}')
  return remaining


def latents(seed: int, count: int, latent_dim: int, *, truncation: float = 0.0, interpolate: int = 0):
  """`[count, latent_dim]` latents, or `[count * interpolate, latent_dim]`: `count` strips, row-major."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  def draw(key, n):
    if truncation:
      return jax.random.truncated_normal(key, -truncation, truncation, (n, latent_dim))
    return jax.random.normal(key, (n, latent_dim))
  start_key, end_key = jax.random.split(jax.random.key(seed))
  start = draw(start_key, count)
  if not interpolate:
    return start
  end = draw(end_key, count)
  # Spherical interpolation: Gaussian latents live near a sphere, which linear paths cut through.
  cos = jnp.sum(start * end, -1, keepdims=True) / (jnp.linalg.norm(start, axis=-1, keepdims=True)
                                                   * jnp.linalg.norm(end, axis=-1, keepdims=True))
  omega = jnp.arccos(jnp.clip(cos, -1 + 1e-7, 1 - 1e-7))[:, None]  # [count, 1, 1]
  t = jnp.linspace(0, 1, interpolate)[None, :, None]
  strips = (jnp.sin((1 - t) * omega) * start[:, None] + jnp.sin(t * omega) * end[:, None]) / jnp.sin(omega)
  return strips.reshape(count * interpolate, latent_dim)


def sample_labels(seed: int, count: int, num_classes: int, *, label: int | None = None, interpolate: int = 0):
  """int32 labels for `count` images (or strips of `interpolate` images, one class per strip): all `label`,
  or drawn uniformly over the classes from `seed`."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if label is not None:
    labels = np.full((count,), label, np.int32)
  else:
    labels = np.random.default_rng(seed).integers(0, num_classes, count).astype(np.int32)
  return np.repeat(labels, interpolate) if interpolate else labels


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  console.configure(flags.FLAGS.verbosity)
  cli.quiet_orbax_info()
  cli.hide_gpus_from_tensorflow()
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from aigc_jax import image_grid, restored_run  # pylint: disable=g-import-not-at-top
  from aigc_jax.checkpointing import CheckpointError  # pylint: disable=g-import-not-at-top
  from aigc_jax.config_errors import ConfigError  # pylint: disable=g-import-not-at-top

  try:
    run = restored_run.restore(os.path.abspath(_WORKDIR.value),
                               restored_run.config_overrides(sys.argv[1:], _CONFIG.value), step=_STEP.value,
                               needs_data=False)
  except ConfigError as e:
    cli.fail(str(e))
  except CheckpointError as e:
    cli.fail(str(e), status=cli.EXIT_RUN_FAILED)
  num_classes = run.family.num_classes
  if _LABEL.value is not None and not num_classes:
    cli.fail(f'--label={_LABEL.value} needs a class-conditional model, but config.model.name='
             f'{run.config.model.name!r} (conditional={run.config.model.conditional}) is unconditional; '
             'allowed: no --label')
  if _LABEL.value is not None and not 0 <= _LABEL.value < num_classes:
    cli.fail(f'--label={_LABEL.value} is not allowed; allowed: a class in [0, {num_classes - 1}]')
  z = latents(_SEED.value, _NUM_SAMPLES.value, run.config.model.latent_dim, truncation=_TRUNCATION.value,
              interpolate=_INTERPOLATE.value)
  output = os.path.abspath(_OUTPUT.value)
  labels = None
  if num_classes and _LABEL.value is None and not _INTERPOLATE.value and not output.endswith('.npz'):
    labels = image_grid.row_labels(_NUM_SAMPLES.value, num_classes)  # a grid: one class per row, as in training
  elif num_classes:
    labels = sample_labels(_SEED.value, _NUM_SAMPLES.value, num_classes, label=_LABEL.value,
                           interpolate=_INTERPOLATE.value)
  try:
    images = restored_run.generate_images(run, z, labels)
  except ConfigError as e:  # a sampler fitted to the data that cannot be (too few images)
    cli.fail(str(e))
  os.makedirs(os.path.dirname(output), exist_ok=True)
  if output.endswith('.npz'):
    np.savez(output, images=images, **({} if labels is None else {'labels': labels}))
  else:
    grid = image_grid.make_grid(images.astype(np.float32) / 127.5 - 1.0, columns=_INTERPOLATE.value or None)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(output)
  from aigc_jax import ema as ema_lib  # pylint: disable=g-import-not-at-top
  generator = 'the EMA generator' if ema_lib.samples_from_ema(run.config) else 'the generator'
  print(f'wrote {len(images)} images of {images.shape[1:]} from {generator} at step {run.step} to {output}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
