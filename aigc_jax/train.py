"""The training loop: `train_and_evaluate(config, workdir)`.

Sections: setup -> mesh -> input -> models -> state (born sharded, or restored) -> compile -> loop.
No model math lives here: the steps are in `steps.py`, the models in `models/`.

The loop survives what long runs meet: SIGTERM or SIGINT finishes the current step, saves a checkpoint
and returns normally (on a multi-host run through JAX's preemption sync point, so every process stops at
the same step); steps with non-finite loss or gradients are skipped and counted, and a run of
`max_consecutive_nonfinite` of them stops training with a checkpoint of the last good state.
"""
import contextlib
import functools
import json
import os
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

from aigc_jax import checkpointing, config_checks, image_grid, input_pipeline, losses, models, optimizers
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax import steps
from aigc_jax.config_checks import ConfigError
from aigc_jax.evaluation import evaluator as evaluator_lib

_SAMPLE_KEY = 0x5A4D  # folds into the seed for the fixed latent batch of the sample grids
# Fields that, changed between a checkpoint and its resume, silently make it a different run.
RUN_DEFINING_FIELDS = ('model', 'dataset', 'train_split', 'batch_size', 'image_size', 'latent_dim',
                       'width_multiplier', 'n_critic', 'loss', 'conditional', 'num_classes', 'base_channels',
                       'depth_multiplier', 'attention_resolution', 'hierarchical_latent', 'shared_embedding_dim')
# Metrics that are counters: report the window's last value (or sum), not its mean.
_LAST_IN_WINDOW = ('skipped_steps', 'consecutive_skipped')


class TrainingStopped(RuntimeError):
  """Training cannot usefully continue (e.g. too many non-finite steps in a row); message is one line."""


class PreemptionWatch(contextlib.AbstractContextManager):
  """Turns SIGTERM/SIGINT into a request to stop after the current step.

  Single process: a Python signal handler sets a flag (a second signal acts at once, as usual). Multi-host:
  JAX's coordination service receives the SIGTERM notice and `reached_preemption_sync_point` makes every
  process stop at the same step, so no Python handler is installed for SIGTERM there.
  """

  def __init__(self):
    self._requested = threading.Event()
    self._previous = {}
    self._multi_host = jax.process_count() > 1

  def __enter__(self):
    signals = (signal.SIGINT,) if self._multi_host else (signal.SIGTERM, signal.SIGINT)
    if threading.current_thread() is threading.main_thread():
      for signum in signals:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    logging.warning('received %s: finishing the current step, then saving a checkpoint',
                    signal.Signals(signum).name)
    self._requested.set()
    signal.signal(signum, self._previous[signum])  # a second signal is not deferred

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False

  def should_stop(self, step: int) -> bool:
    if self._multi_host:
      return multihost_utils.reached_preemption_sync_point(step) or self._requested.is_set()
    return self._requested.is_set()


def prepare_dataset(config: ml_collections.ConfigDict):
  try:
    return input_pipeline.get_builder(config)
  except Exception as e:  # tfds raises many types (network, missing files, checksum, ...)
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise ConfigError(f'could not prepare dataset {config.dataset!r} in data_dir={config.data_dir!r}: '
                      f'{first_line} (without network, use an offline dataset such as mnist5k, or point '
                      '--config.data_dir at prepared TFDS data)') from None


def prepare_data_and_models(config: ml_collections.ConfigDict):
  """`(builder, info, gan)`: the prepared TFDS builder, what the models need of it, and the models."""
  builder = prepare_dataset(config)
  info = input_pipeline.dataset_info(config, builder)
  try:
    gan = models.create_gan(config, info.image_shape, info.num_classes)
  except ValueError as e:
    raise ConfigError(f'config.model={config.model!r} cannot be built for dataset {info.name!r}: {e}') from None
  return builder, info, gan


def _check_resume_compatible(config: ml_collections.ConfigDict, saved: dict, where: str) -> list[str]:
  """Refuses a resume that changes a run-defining field, unless allowed; returns the changed fields."""
  changed = [(name, saved.get(name), config[name]) for name in RUN_DEFINING_FIELDS
             if name in saved and saved[name] != config[name]]
  if changed and not config.allow_config_change:
    name, old, new = changed[0]
    raise ConfigError(f'config.{name} changed since the checkpoint in {where} (was {old!r}, now {new!r}), which '
                      f'would silently change the run; use the old value, another workdir, or '
                      f'--config.allow_config_change=True')
  for name, old, new in changed:
    logging.warning('config.%s changed since the checkpoint (%r -> %r): allowed by allow_config_change; '
                    'the data order restarts', name, old, new)
  return [name for name, _, _ in changed]


def _summarise(window: list[dict[str, np.ndarray]]) -> dict[str, float]:
  """Window means of the per-step metrics over the steps where they are finite; counters as they stand."""
  summary = {}
  for name in window[0]:
    values = np.asarray([m[name] for m in window], np.float64)
    if name in _LAST_IN_WINDOW:
      summary[name] = float(values[-1])
    elif name == 'skipped':
      summary['skipped_in_window'] = float(values.sum())
    else:
      finite = values[np.isfinite(values)]
      summary[name] = float(finite.mean()) if finite.size else float('nan')
  return summary


@contextlib.contextmanager
def _flushed(writer: metric_writers.MetricWriter, workdir: str):
  """Flushes `writer` on the way out; a failing flush (e.g. a full disk) never masks an error in flight."""
  try:
    yield
  except BaseException:
    try:
      writer.flush()
    except Exception as e:  # pylint: disable=broad-except
      logging.warning('could not flush metrics while stopping: %s', ' '.join(str(e).split())[:200])
    raise
  try:
    writer.flush()
  except Exception as e:  # pylint: disable=broad-except  (TF and CLU raise their own types)
    raise TrainingStopped(f'writing metrics to {workdir} failed: {" ".join(str(e).split())[:200]}') from None


def _write_metrics(writer: metric_writers.MetricWriter, step: int, window: list[dict[str, jax.Array]]) -> None:
  writer.write_scalars(step, _summarise(jax.device_get(window)))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> state_lib.TrainState:
  """Trains the GAN described by `config`, resuming from the newest checkpoint in `workdir` if any.

  Returns the final train state.
  """
  # --- Setup: validate everything before touching the workdir. ---
  config_checks.validate(config, device_count=jax.device_count(), process_count=jax.process_count())
  config_checks.check_workdir(workdir)
  is_chief = jax.process_index() == 0
  checkpointer = checkpointing.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                            keep=config.keep_checkpoints,
                                            async_save=config.async_checkpointing)
  latest = checkpointer.latest_step()
  changed_fields = []
  if latest is not None:
    try:
      saved_config = checkpointer.restore_config(latest)
    except Exception as e:  # pylint: disable=broad-except  (a damaged checkpoint is dealt with below)
      logging.warning('could not read the config of checkpoint %d: %s', latest, e)
    else:
      changed_fields = _check_resume_compatible(config, saved_config, f'{checkpointer.directory}/{latest}')
  builder, info, gan = prepare_data_and_models(config)
  # The feature network loads (or trains, once) here, so a missing weights file fails before any writing.
  feature_network = (evaluator_lib.load_feature_network(config, info.image_shape)
                     if config.eval_every_steps else None)
  gan_loss = losses.get_gan_loss(config.loss)
  g_tx = optimizers.create_optimizer(config, 'generator')
  d_tx = optimizers.create_optimizer(config, 'discriminator')

  try:
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief, asynchronous=True)
  except Exception as e:  # TensorFlow raises its own types for I/O errors (e.g. a full disk).
    raise ConfigError(f'cannot write TensorBoard events in workdir {workdir!r}: '
                      f'{" ".join(str(e).split())[:200]}') from None
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
  # A saved data position only fits the data config it was saved with.
  restored = checkpointer.restore_latest(abstract_state, None if changed_fields else data_iterator)
  if restored is None:
    state = init_state(init_rng)
  else:
    state, restored_step = restored
    logging.info('resumed from %s/%d', checkpointer.directory, restored_step)
  initial_step = int(jax.device_get(state.step))
  if is_chief:
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(config.to_dict(), f, indent=2, sort_keys=True)

  # --- Compile once, ahead of time; the loop then calls the executable, which cannot recompile. ---
  step_fn = functools.partial(steps.train_step, gan=gan, loss=gan_loss, g_tx=g_tx, d_tx=d_tx,
                              latent_dim=config.latent_dim, g_ortho_reg=config.g_ortho_reg)
  batch_in = {key: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sharding)
              for key, s in batch_shapes.items()}
  train_rng = jax.device_put(train_rng, replicated)
  start = time.perf_counter()
  train_step = jax.jit(step_fn, in_shardings=(state_shardings, batch_sharding, replicated),
                       out_shardings=(state_shardings, replicated), donate_argnums=0
                       ).lower(abstract_state, batch_in, train_rng).compile()
  logging.info('train step compiled in %.1fs; memory: %s', time.perf_counter() - start,
               train_step.memory_analysis())
  generate = jax.jit(functools.partial(steps.generate, gan=gan),
                     in_shardings=(state_shardings, replicated, replicated), out_shardings=replicated)
  sample_latents = jax.device_put(
      jax.random.normal(jax.random.fold_in(root_rng, _SAMPLE_KEY), (config.num_sample_images, config.latent_dim)),
      replicated)
  # A class-conditional grid shows one class per row.
  sample_labels = (jax.device_put(image_grid.row_labels(config.num_sample_images, gan.num_classes), replicated)
                   if gan.conditional else None)

  def write_samples(step: int, state: state_lib.TrainState) -> None:
    images = jax.device_get(generate(state, sample_latents, sample_labels))
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
  window, ready, previous_metrics = [], None, None
  stop_reason = None
  with _flushed(writer, workdir), PreemptionWatch() as preemption:
    for step in range(initial_step + 1, config.num_train_steps + 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = train_step(state, next(batches), train_rng)
      if ready is not None:
        _write_metrics(writer, *ready)
        ready = None
      # The previous step's skip counter, read while this step runs.
      if previous_metrics is not None and (
          int(previous_metrics['consecutive_skipped']) >= config.max_consecutive_nonfinite):
        stop_reason = (f'{config.max_consecutive_nonfinite} steps in a row up to step {step - 1} had non-finite '
                       'loss or gradients and were skipped')
      previous_metrics = metrics
      window.append(metrics)
      report_progress(step)
      preempted = preemption.should_stop(step)
      is_last = step == config.num_train_steps or preempted or stop_reason is not None
      if step % config.log_every_steps == 0 or is_last:
        ready, window = (step, window), []
      if step % config.sample_every_steps == 0 or is_last:
        write_samples(step, state)
      if evaluator is not None and (step % config.eval_every_steps == 0 or step == config.num_train_steps):
        writer.write_scalars(step, evaluator(state))
      if step % config.checkpoint_every_steps == 0 or is_last:
        checkpointer.save(step, state, data_iterator, config)
      if preempted:
        logging.warning('stopping at step %d on request; checkpoint saved', step)
        break
      if stop_reason is not None:
        break
    if ready is not None:
      _write_metrics(writer, *ready)
    checkpointer.wait_until_finished()  # inside: a failed save is the error reported, not a later flush
  checkpointer.close()
  if stop_reason is not None:
    raise TrainingStopped(f'{stop_reason}; the last good state is saved in {checkpointer.directory}/{step} '
                          '(lower the learning rate, clip gradients, or check the data)')
  return state
