"""The training loop: `train_and_evaluate(config, workdir)`.

Sections: setup -> mesh -> input -> models -> state (born sharded, or restored) -> compile -> loop.
No model math lives here: the steps are in `steps.py`, the models in `models/`.
"""
import functools
import json
import os
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions

from aigc_jax import checkpointing, config_checks, image_grid, input_pipeline, losses, models, optimizers
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax import steps
from aigc_jax.config_checks import ConfigError
from aigc_jax.evaluation import evaluator as evaluator_lib

_SAMPLE_KEY = 0x5A4D  # folds into the seed for the fixed latent batch of the sample grids


def prepare_dataset(config: ml_collections.ConfigDict):
  try:
    return input_pipeline.get_builder(config)
  except Exception as e:  # tfds raises many types (network, missing files, checksum, ...)
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise ConfigError(f'could not prepare dataset {config.dataset!r} in data_dir={config.data_dir!r}: '
                      f'{first_line} (without network, use an offline dataset such as mnist5k, or point '
                      '--config.data_dir at prepared TFDS data)') from None


def _write_metrics(writer: metric_writers.MetricWriter, step: int, window: list[dict[str, jax.Array]]) -> None:
  """Averages a window of per-step device metrics on the host and writes them; stops on non-finite loss."""
  window = jax.device_get(window)
  means = {name: float(np.mean([m[name] for m in window])) for name in window[0]}
  writer.write_scalars(step, means)
  if not all(np.isfinite(means[name]) for name in ('d_loss', 'g_loss')):
    raise FloatingPointError(f'non-finite loss by step {step}: d_loss={means["d_loss"]}, '
                             f'g_loss={means["g_loss"]}; lower the learning rate or check the data')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> state_lib.TrainState:
  """Trains the GAN described by `config`, resuming from the newest checkpoint in `workdir` if any.

  Returns the final train state.
  """
  # --- Setup: validate everything before touching the workdir. ---
  config_checks.validate(config, device_count=jax.device_count(), process_count=jax.process_count())
  config_checks.check_workdir(workdir)
  is_chief = jax.process_index() == 0
  builder = prepare_dataset(config)
  info = input_pipeline.dataset_info(config, builder)
  try:
    gan = models.create_gan(config, info.image_shape)
  except ValueError as e:
    raise ConfigError(f'config.model={config.model!r} cannot be built for dataset {info.name!r}: {e}') from None
  # The feature network loads (or trains, once) here, so a missing weights file fails before any writing.
  feature_network = (evaluator_lib.load_feature_network(config, info.image_shape)
                     if config.eval_every_steps else None)
  gan_loss = losses.get_gan_loss(config.loss)
  g_tx = optimizers.create_optimizer(config, 'generator')
  d_tx = optimizers.create_optimizer(config, 'discriminator')

  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief, asynchronous=True)
  if is_chief:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(config.to_dict(), f, indent=2, sort_keys=True)
  logging.info('devices: %d x %s over %d process(es); dataset %s %s, %d train examples',
               jax.device_count(), jax.devices()[0].device_kind, jax.process_count(), info.name,
               info.image_shape, info.num_train_examples)

  # --- Mesh. ---
  mesh = sharding_lib.create_mesh()
  replicated = sharding_lib.replicated(mesh)
  batch_sharding = sharding_lib.batch_sharding(mesh)

  # --- Input: this process's share of the split, assembled into global batches. ---
  data_iterator = iter(input_pipeline.create_train_dataset(
      config, builder, process_index=jax.process_index(), process_count=jax.process_count()))
  batch_shapes = input_pipeline.global_batch_shapes(config, info)

  # --- State: born sharded, or restored from the newest checkpoint. ---
  root_rng = jax.random.key(config.seed)
  init_rng, train_rng, _ = jax.random.split(root_rng, 3)
  init_state, abstract_state = state_lib.sharded_initializer(
      mesh, gan=gan, g_tx=g_tx, d_tx=d_tx, image_shape=info.image_shape, latent_dim=config.latent_dim)
  state_shardings = state_lib.shardings_of(abstract_state)
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                            keep=config.keep_checkpoints,
                                            async_save=config.async_checkpointing)
  latest = checkpointer.latest_step()
  if latest is None:
    state = init_state(init_rng)
  else:
    logging.info('resuming from %s/%d', checkpointer.directory, latest)
    state = checkpointer.restore(latest, abstract_state, data_iterator)
  initial_step = int(jax.device_get(state.step))

  # --- Compile once, ahead of time; the loop then calls the executable, which cannot recompile. ---
  step_fn = functools.partial(steps.train_step, gan=gan, loss=gan_loss, g_tx=g_tx, d_tx=d_tx,
                              latent_dim=config.latent_dim)
  batch_in = {key: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sharding)
              for key, s in batch_shapes.items()}
  train_rng = jax.device_put(train_rng, replicated)
  start = time.perf_counter()
  train_step = jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding, replicated),
                       out_shardings=(state_shardings, replicated), donate_argnums=0
                       ).lower(abstract_state, batch_in, train_rng).compile()
  logging.info('train step compiled in %.1fs; memory: %s', time.perf_counter() - start,
               train_step.memory_analysis())
  generate = jax.jit(functools.partial(steps.generate, gan=gan), in_shardings=(state_shardings, replicated),
                     out_shardings=replicated)
  sample_latents = jax.device_put(
      jax.random.normal(jax.random.fold_in(root_rng, _SAMPLE_KEY), (config.num_sample_images, config.latent_dim)),
      replicated)

  def write_samples(step: int, state: state_lib.TrainState) -> None:
    images = jax.device_get(generate(state, sample_latents))
    if is_chief:
      grid = image_grid.make_grid(images)
      image_grid.save_png(grid, os.path.join(workdir, 'samples', f'step_{step:07d}.png'))
      writer.write_images(step, {'samples': grid[None]})

  # --- Evaluation hook: FID & co. every `eval_every_steps` (0 = off). It scores the generator's params;
  # when an EMA generator exists, that is what it should score. ---
  evaluator = None
  if feature_network is not None:
    evaluator = evaluator_lib.Evaluator(config, mesh=mesh, gan=gan, builder=builder, image_shape=info.image_shape,
                                        state_shardings=state_shardings, network=feature_network)

  # --- Loop. Metrics stay on device and are fetched one step late, so the host never stalls dispatch. ---
  report_progress = periodic_actions.ReportProgress(num_train_steps=config.num_train_steps, writer=writer,
                                                    every_steps=config.log_every_steps)
  batches = input_pipeline.global_batches(data_iterator, batch_sharding, batch_shapes)
  window, ready = [], None
  with metric_writers.ensure_flushes(writer):
    for step in range(initial_step + 1, config.num_train_steps + 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = train_step(state, next(batches), train_rng)
      if ready is not None:
        _write_metrics(writer, *ready)
        ready = None
      window.append(metrics)
      report_progress(step)
      is_last = step == config.num_train_steps
      if step % config.log_every_steps == 0 or is_last:
        ready, window = (step, window), []
      if step % config.sample_every_steps == 0 or is_last:
        write_samples(step, state)
      if evaluator is not None and (step % config.eval_every_steps == 0 or is_last):
        writer.write_scalars(step, evaluator(state))
      if step % config.checkpoint_every_steps == 0 or is_last:
        checkpointer.save(step, state, data_iterator, config)
    if ready is not None:
      _write_metrics(writer, *ready)
  checkpointer.wait_until_finished()
  checkpointer.close()
  return state
