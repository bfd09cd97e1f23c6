"""Model families (GAN, VAE) behind one interface, so the trainer, the benchmark and the tools run either.

`create(config, image_shape)` returns a `Family`: pure functions with everything model-specific bound in,
ready for `jax.jit` (state initialiser, train step, prior sampler). `Family.reporter(...)` builds the
host-side part once the mesh and the state layout exist: the PNG grids written every `sample_every_steps`
and the family's own periodic evaluations (the VAE's held-out negative ELBO).
"""
import functools
import math
import os
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from aigc_jax import gan_steps, losses, models, optimizers, vae_losses, vae_steps
from aigc_jax import ema as ema_lib
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax.evaluation import vae_likelihood

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Evaluation = tuple[int, Callable[[Any], dict[str, float]]]  # (every N steps, state -> scalars)

_SAMPLE_KEY = 0x5A4D  # folds into the seed for the fixed latent batch of the sample grids


class ReportContext(NamedTuple):
  """What a family's reporter needs from the trainer."""
  config: ml_collections.ConfigDict
  mesh: Mesh
  state_shardings: Any
  builder: Any  # the prepared TFDS builder
  image_shape: tuple[int, int, int]
  workdir: str
  writer: Any  # a CLU metric writer
  is_chief: bool


class Reporter(NamedTuple):
  write_images: Callable[[int, Any], None]  # (step, state): PNG grids under the workdir and to TensorBoard
  evaluations: list[Evaluation]


class Family(NamedTuple):
  kind: str                     # 'gan' or 'vae'
  modules: Any                  # models.Gan, or the VAE module
  init_state: Callable[[jax.Array], Any]                        # rng -> a fresh state (pure)
  train_step: Callable[[Any, Batch, jax.Array], tuple[Any, Metrics]]  # (state, batch, base rng), pure
  generate: Callable[..., jax.Array]  # (state, latents, labels=None) -> images in [-1, 1], pure
  reporter: Callable[[ReportContext], Reporter]
  other_splits: tuple[tuple[str, str], ...] = ()  # (config field, split) the reporter reads besides train_split
  num_classes: int = 0          # > 0: class-conditional; `generate` then takes int32 labels [B] as third argument


def global_batch_shapes(config: ml_collections.ConfigDict,
                        image_shape: tuple[int, int, int]) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of the batch a train step takes (global, all processes together): `n_critic`
  batches of images in [-1, 1] and their int32 labels."""
  lead = (config.gan.n_critic, config.batch_size)
  return {'image': jax.ShapeDtypeStruct(lead + tuple(image_shape), jnp.float32),
          'label': jax.ShapeDtypeStruct(lead, jnp.int32)}


def create(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], num_classes: int = 0) -> Family:
  """The family of `config.model.name` for images of `image_shape` from a dataset of `num_classes` classes (a
  class-conditional GAN needs them); raises ValueError if the model cannot be built."""
  if config.model.name in models.VAE_FAMILIES:
    return _vae_family(config, tuple(image_shape))
  return _gan_family(config, tuple(image_shape), num_classes)


def _fixed_latents(config: ml_collections.ConfigDict, mesh: Mesh) -> jax.Array:
  """The same latents for every sample grid of a run."""
  key = jax.random.fold_in(jax.random.key(config.seed), _SAMPLE_KEY)
  return sharding_lib.put_replicated(jax.random.normal(key, (config.num_sample_images, config.model.latent_dim)), mesh)


def _write_grid(ctx: ReportContext, step: int, name: str, images: np.ndarray, columns: int | None = None) -> None:
  from aigc_jax import image_grid  # pylint: disable=g-import-not-at-top  (PIL: only where images are written)
  grid = image_grid.make_grid(images, columns=columns)
  image_grid.save_png(grid, os.path.join(ctx.workdir, name, f'step_{step:07d}.png'))
  ctx.writer.write_images(step, {name: grid[None]})


def _sample_writer(ctx: ReportContext, generate: Callable[..., jax.Array],
                   num_classes: int = 0) -> Callable[[int, Any], None]:
  """Writes `samples/step_N.png`: images generated from the run's fixed latents (a class-conditional
  model's grid shows one class per row)."""
  from aigc_jax import image_grid  # pylint: disable=g-import-not-at-top  (PIL: only where images are written)
  replicated = sharding_lib.replicated(ctx.mesh)
  generate = jax.jit(generate, in_shardings=(ctx.state_shardings, replicated, replicated), out_shardings=replicated)
  latents = _fixed_latents(ctx.config, ctx.mesh)
  labels = (sharding_lib.put_replicated(image_grid.row_labels(ctx.config.num_sample_images, num_classes), ctx.mesh)
            if num_classes else None)

  def write(step: int, state: Any) -> None:
    images = jax.device_get(generate(state, latents, labels))
    if ctx.is_chief:
      _write_grid(ctx, step, 'samples', images)
  return write


# --- GAN. ---

def _gan_family(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int], num_classes: int) -> Family:
  gan = models.create_gan(config, image_shape, num_classes)
  g_tx = optimizers.create_optimizer(config, 'generator')
  d_tx = optimizers.create_optimizer(config, 'discriminator')
  # Sample grids, the sampling CLI and FID use the EMA generator when the run has one (unless
  # `sample_with_ema` is False).
  generate = functools.partial(gan_steps.generate, gan=gan, use_ema=ema_lib.samples_from_ema(config))
  return Family(
      kind='gan', modules=gan,
      init_state=functools.partial(state_lib.init_train_state, gan=gan, g_tx=g_tx, d_tx=d_tx,
                                   image_shape=image_shape, latent_dim=config.model.latent_dim,
                                   ema=ema_lib.enabled(config)),
      train_step=functools.partial(gan_steps.train_step, gan=gan, loss=losses.get_gan_loss(config.gan.loss), g_tx=g_tx,
                                   d_tx=d_tx, latent_dim=config.model.latent_dim,
                                   techniques=gan_steps.techniques_from_config(config),
                                   update=config.gan.update_scheme),
      generate=generate,
      reporter=lambda ctx: Reporter(write_images=_sample_writer(ctx, generate, gan.num_classes), evaluations=[]),
      num_classes=gan.num_classes)


# --- VAE. ---

def _vae_family(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> Family:
  likelihood = vae_likelihood.likelihood_of(config)
  vae = models.create_vae(config, image_shape, learned_std=likelihood.learned_std)
  tx = optimizers.create_optimizer(config, 'vae')
  generate = functools.partial(vae_steps.generate, vae=vae, likelihood=likelihood,
                               temperature=float(config.vae.sample_temperature))
  return Family(
      kind='vae', modules=vae,
      init_state=functools.partial(state_lib.init_vae_state, vae=vae, tx=tx, image_shape=image_shape,
                                   latent_dim=config.model.latent_dim),
      train_step=functools.partial(vae_steps.train_step, vae=vae, likelihood=likelihood, tx=tx,
                                   latent_dim=config.model.latent_dim, beta=float(config.vae.beta),
                                   kl_warmup_steps=config.vae.kl_warmup_steps),
      generate=generate,
      reporter=functools.partial(_vae_reporter, vae=vae, likelihood=likelihood, generate=generate),
      other_splits=(('vae.heldout_split', config.vae.heldout_split),))


def _vae_reporter(ctx: ReportContext, *, vae, likelihood: vae_losses.Likelihood,
                  generate: Callable[[Any, jax.Array], jax.Array]) -> Reporter:
  """Prior samples and held-out reconstructions every `sample_every_steps`; the held-out negative ELBO
  every `vae.heldout_every_steps`."""
  config = ctx.config
  targets = vae_likelihood.heldout_targets(config, ctx.builder, likelihood)
  write_samples = _sample_writer(ctx, generate)
  replicated = sharding_lib.replicated(ctx.mesh)
  reconstruct = jax.jit(functools.partial(vae_steps.reconstruct, vae=vae, likelihood=likelihood),
                        in_shardings=(ctx.state_shardings, replicated), out_shardings=replicated)
  pairs = max(1, min(config.num_sample_images // 2, len(targets)))
  inputs = sharding_lib.put_replicated(targets[:pairs], ctx.mesh)

  def write_images(step: int, state: Any) -> None:
    write_samples(step, state)
    reconstructions = np.asarray(jax.device_get(reconstruct(state, inputs)))
    if ctx.is_chief:
      # Each input beside its reconstruction: columns alternate input, reconstruction.
      side_by_side = np.stack([targets[:pairs], reconstructions], axis=1)
      _write_grid(ctx, step, 'reconstructions', side_by_side.reshape((-1,) + side_by_side.shape[2:]),
                  columns=2 * math.ceil(math.sqrt(pairs / 2)))

  heldout = vae_likelihood.HeldoutLikelihood(config, targets, mesh=ctx.mesh, state_shardings=ctx.state_shardings,
                                             vae=vae, likelihood=likelihood)
  return Reporter(write_images=write_images, evaluations=[(config.vae.heldout_every_steps, heldout.neg_elbo)])
