"""Model families (GAN, VAE) behind one interface, so the trainer, the benchmark and the tools run either.

`create(config, image_shape)` returns a `Family`: pure functions with everything model-specific bound in,
ready for `jax.jit` (state initialiser, train step, prior sampler). `Family.reporter(...)` builds the
host-side part once the mesh and the state layout exist: the PNG grids written every `sample_every_steps`
and the family's own periodic evaluations (the VAE's held-out negative ELBO). A family whose sampler is
fitted to the data after training (a VAE with `vae.sampler=gmm`) has `fit_sampler`; `sampler_for` gives
every caller the right sampler for a state either way.
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

from aigc_jax import gan_steps, latent_mixture, losses, models, optimizers, vae_losses, vae_steps
from aigc_jax import ema as ema_lib
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax.evaluation import vae_likelihood

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]
Evaluation = tuple[int, Callable[[Any], dict[str, float]]]  # (every N steps, state -> scalars)

_SAMPLE_KEY = 0x5A4D  # folds into the seed for the fixed latent batch of the sample grids
_MIXTURE_KEY = 0x6D69  # folds into the seed for the posterior draws a latent mixture is fitted to


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
  sampler: Callable[[Any], Callable[..., jax.Array]]  # state -> its generate (`sampler_for`), shared with FID


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
  # (state, training images in [-1, 1], mesh) -> a `generate` whose latent density is fitted to those images
  # for that state; None: `generate` samples as it is.
  fit_sampler: Callable[[Any, np.ndarray, Mesh], Callable[..., jax.Array]] | None = None


def sampler_for(family: Family, config: ml_collections.ConfigDict, builder: Any,
                mesh: Mesh) -> Callable[[Any], Callable[..., jax.Array]]:
  """`state -> generate`: the family's sampler for a state. `family.generate` itself, or, for a family that
  fits its sampler, one fitted to the first `vae.gmm_fit_examples` images of the train split (read once).
  A ConfigError here, before anything trains or samples, if the split is too small for the mixture."""
  if family.fit_sampler is None:
    return lambda state: family.generate
  available = builder.info.splits[config.data.train_split].num_examples
  latent_mixture.check_fit_size(config.vae.gmm_components, min(config.vae.gmm_fit_examples or available, available))
  images = []
  last = []  # [(state, generate)] of the last fit: a step's grids and its evaluation share one fit

  def fitted(state):
    if last and last[0][0] is state:
      return last[0][1]
    if not images:
      # TensorFlow only here: the benchmark and device check import this module on machines without it.
      from aigc_jax import input_pipeline  # pylint: disable=g-import-not-at-top
      images.append(input_pipeline.real_images(config, builder, config.data.train_split,
                                               config.vae.gmm_fit_examples)[0])
    last[:] = [(state, family.fit_sampler(state, images[0], mesh))]
    return last[0][1]
  return fitted


def fits_sampler(config: ml_collections.ConfigDict) -> bool:
  """Whether the run's sampler is fitted to the training data (and so needs it to sample)."""
  return config.model.name in models.VAE_FAMILIES and config.vae.sampler == 'gmm'


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


def _sample_writer(ctx: ReportContext, sampler: Callable[[Any], Callable[..., jax.Array]],
                   num_classes: int = 0) -> Callable[[int, Any], None]:
  """Writes `samples/step_N.png`: images generated from the run's fixed latents by `sampler(state)` (see
  `sampler_for`; a class-conditional model's grid shows one class per row)."""
  from aigc_jax import image_grid  # pylint: disable=g-import-not-at-top  (PIL: only where images are written)
  replicated = sharding_lib.replicated(ctx.mesh)
  compile_sampler = lambda generate: jax.jit(generate, in_shardings=(ctx.state_shardings, replicated, replicated),
                                             out_shardings=replicated)
  compiled = {}  # the generate function -> its jitted form: a sampler that needs no fitting compiles once
  latents = _fixed_latents(ctx.config, ctx.mesh)
  labels = (sharding_lib.put_replicated(image_grid.row_labels(ctx.config.num_sample_images, num_classes), ctx.mesh)
            if num_classes else None)

  def write(step: int, state: Any) -> None:
    generate = sampler(state)
    if generate not in compiled:
      compiled.clear()
      compiled[generate] = compile_sampler(generate)
    images = jax.device_get(compiled[generate](state, latents, labels))
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
      reporter=lambda ctx: Reporter(write_images=_sample_writer(ctx, ctx.sampler, gan.num_classes), evaluations=[]),
      num_classes=gan.num_classes)


# --- VAE. ---

def _vae_family(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> Family:
  likelihood = vae_likelihood.likelihood_of(config)
  vae = models.create_vae(config, image_shape, learned_std=likelihood.learned_std)
  tx = optimizers.create_optimizer(config, 'vae')
  generate = functools.partial(vae_steps.generate, vae=vae, likelihood=likelihood,
                               temperature=float(config.vae.sample_temperature))
  fit_sampler = None
  if fits_sampler(config):
    fit_sampler = functools.partial(_fit_latent_mixture, config=config, vae=vae, likelihood=likelihood,
                                    generate=generate)
  return Family(
      kind='vae', modules=vae,
      init_state=functools.partial(state_lib.init_vae_state, vae=vae, tx=tx, image_shape=image_shape,
                                   latent_dim=config.model.latent_dim),
      train_step=functools.partial(vae_steps.train_step, vae=vae, likelihood=likelihood, tx=tx,
                                   latent_dim=config.model.latent_dim, beta=float(config.vae.beta),
                                   kl_warmup_steps=config.vae.kl_warmup_steps),
      generate=generate,
      reporter=functools.partial(_vae_reporter, vae=vae, likelihood=likelihood),
      other_splits=(('vae.heldout_split', config.vae.heldout_split),),
      fit_sampler=fit_sampler)


def _fit_latent_mixture(state: Any, images: np.ndarray, mesh: Mesh, *, config: ml_collections.ConfigDict, vae,
                        likelihood: vae_losses.Likelihood, generate: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
  """`generate` sampling a `vae.gmm_components` Gaussian mixture fitted to one posterior draw per image
  (binarised as in training), from keys fixed by the seed: the same state gives the same mixture."""
  replicated = sharding_lib.replicated(mesh)

  def draws(state, images, key):
    data_key, noise_key = jax.random.split(key)
    keys = jax.random.split(noise_key, images.shape[0])
    return vae_steps.posterior_samples(state, likelihood.targets(images, data_key), keys, vae=vae,
                                       latent_dim=config.model.latent_dim)
  draws = jax.jit(draws, out_shardings=replicated)
  base = jax.random.fold_in(jax.random.key(config.seed), _MIXTURE_KEY)
  chunk = 512
  latents = np.concatenate([
      np.asarray(jax.device_get(draws(state, sharding_lib.put_replicated(images[start:start + chunk], mesh),
                                      sharding_lib.put_replicated(jax.random.fold_in(base, start), mesh))))
      for start in range(0, len(images), chunk)])
  mixture = latent_mixture.fit(latents, config.vae.gmm_components, config.seed)
  return functools.partial(generate, latent_mixture=mixture)


def _vae_reporter(ctx: ReportContext, *, vae, likelihood: vae_losses.Likelihood) -> Reporter:
  """Prior samples and held-out reconstructions every `sample_every_steps`; the held-out negative ELBO
  every `vae.heldout_every_steps`."""
  config = ctx.config
  targets = vae_likelihood.heldout_targets(config, ctx.builder, likelihood)
  write_samples = _sample_writer(ctx, ctx.sampler)
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
