"""The training loop: `train_and_evaluate(config, workdir)`.

Sections: setup (validate, data, models) -> mesh and state layout -> input -> compile -> the workdir (created
only now) -> state (born sharded, or restored) -> evaluation hooks -> loop. Nothing is written before the
compiled step exists. No model math lives here: the steps are in `gan_steps.py` and `vae_steps.py`, the
models in `models/`. The model family (GAN or
VAE) arrives as a `families.Family`: its state initialiser, train step, sampler and reporter (image grids,
held-out evaluations), so the loop is the same for both.

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

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from etils import epath
from jax.experimental import multihost_utils

from aigc_jax import checkpointing, config_checks, config_layout, console, families, input_pipeline, optimizers
from aigc_jax import compile as compile_lib
from aigc_jax import ema as ema_lib
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax.config_errors import ConfigError
from aigc_jax.datasets import image_folder
from aigc_jax.evaluation import evaluator as evaluator_lib

# Fields that, changed between a checkpoint and its resume, silently make it a different run.
RUN_DEFINING_FIELDS = ('model.name', 'model.latent_dim', 'model.width_multiplier', 'model.conditional',
                       'model.num_classes', 'model.base_channels', 'model.depth_multiplier',
                       'model.attention_resolution', 'model.hierarchical_latent', 'model.shared_embedding_dim',
                       'gan.loss', 'gan.n_critic', 'data.name', 'data.train_split', 'data.image_size', 'batch_size',
                       'vae.likelihood', 'vae.binarize', 'vae.gaussian_std', 'vae.beta')
_ABSENT = object()
# Metrics that are counters: report the window's last value (or sum), not its mean.
_LAST_IN_WINDOW = ('skipped_steps', 'consecutive_skipped')


class TrainingStopped(RuntimeError):
  """Training cannot usefully continue (e.g. too many non-finite steps in a row); message is one line."""


class StoppedDuringSetup(Exception):
  """SIGTERM or SIGINT arrived before the first step: the run stops with nothing written."""


class PreemptionWatch(contextlib.AbstractContextManager):
  """Turns SIGTERM/SIGINT into a request to stop after the current step.

  Single process: a Python signal handler sets a flag (a second signal acts at once, as usual). Multi-host:
  JAX's coordination service receives the SIGTERM notice and `reached_preemption_sync_point` makes every
  process stop at the same step, so no Python handler is installed for SIGTERM there, and SIGINT is turned
  into the same SIGTERM notice (a flag of one process's own would let the processes stop at different
  steps, each then waiting forever in a collective the others never join).
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
    signal.signal(signum, self._previous[signum])  # a second signal is not deferred
    if self._multi_host:
      os.kill(os.getpid(), signal.SIGTERM)  # to JAX's preemption notifier: every process agrees on the step
    else:
      self._requested.set()

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False

  def stop_if_requested_during_setup(self, stage: str) -> None:
    """Raises `StoppedDuringSetup` if a stop was requested (single process; a multi-host run stops at its
    first step, which every process reaches)."""
    if self._requested.is_set():
      raise StoppedDuringSetup(f'stopped on request during set-up ({stage}), before the first step')

  def should_stop(self, step: int) -> bool:
    if self._multi_host:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._requested.is_set()


def prepare_dataset(config: ml_collections.ConfigDict):
  try:
    return input_pipeline.get_builder(config)
  except image_folder.FolderError as e:
    raise ConfigError(str(e)) from None
  except Exception as e:  # tfds raises many types (network, missing files, checksum, ...)
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise ConfigError(f'could not prepare dataset {config.data.name!r} in data_dir={config.data.dir!r}: '
                      f'{first_line} (without network, use an offline dataset such as mnist5k, or point '
                      '--config.data.dir at prepared TFDS data)') from None


def prepare_data_and_models(config: ml_collections.ConfigDict):
  """`(builder, info, family)`: the prepared TFDS builder, what the models need of it, and the model family."""
  builder = prepare_dataset(config)
  info = input_pipeline.dataset_info(config, builder)  # checks the image feature and the train split
  family = create_family(config, info)
  for field, split in family.other_splits:  # read later, by the reporter: fail before any writing
    input_pipeline.check_split(config, builder, field, split)
  return builder, info, family


def create_family(config: ml_collections.ConfigDict, info: input_pipeline.DatasetInfo) -> families.Family:
  """The model family of `config` for the data `info` describes; a one-line ConfigError if it cannot be built."""
  try:
    return families.create(config, info.image_shape, info.num_classes)
  except ValueError as e:
    raise ConfigError(f'config.model.name={config.model.name!r} cannot be built for dataset {info.name!r}: '
                      f'{e}') from None


def _lookup(tree, dotted: str):
  for name in dotted.split('.'):
    if name not in tree:
      return _ABSENT
    tree = tree[name]
  return tree


def _check_resume_compatible(config: ml_collections.ConfigDict, saved: dict, where: str) -> list[str]:
  """Refuses a resume that changes a run-defining field, unless allowed; returns the changed fields."""
  changed = [(name, _lookup(saved, name), _lookup(config, name)) for name in RUN_DEFINING_FIELDS
             if _lookup(saved, name) is not _ABSENT and _lookup(saved, name) != _lookup(config, name)]
  if changed and not config.allow_config_change:
    name, old, new = changed[0]
    raise ConfigError(f'config.{name} changed since the checkpoint in {where} (was {old!r}, now {new!r}), which '
                      f'would silently change the run; use the old value, another workdir, or '
                      f'--config.allow_config_change=True')
  ema_lib.check_matches_checkpoint(config, saved, where, 'another workdir')
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


def _write_metrics(writer: metric_writers.MetricWriter, progress: console.Progress, lr_networks: tuple[str, ...],
                   config: ml_collections.ConfigDict, step: int, window: list[dict[str, jax.Array]]) -> None:
  """The window's metrics and learning rates under `train/`, the interval's speed under `perf/`; the console line."""
  summary = _summarise(jax.device_get(window))
  summary.update(optimizers.learning_rates(config, lr_networks, step))
  perf = progress.interval(step, summary)
  writer.write_scalars(step, {**console.tensorboard_scalars(summary, 'train'), **perf})


def _check_against_checkpoints(config: ml_collections.ConfigDict, directory: str) -> tuple[int, list[str]] | None:
  """Reads (only) the newest checkpoint's config and refuses an incompatible resume; `(step, changed
  fields)`, or None when there is no checkpoint to resume."""
  if not epath.Path(directory).is_dir():
    return None
  checkpoints = checkpointing.Checkpointer(directory, keep=1, read_only=True)
  try:
    newest = checkpoints.newest_config()
  finally:
    checkpoints.close()
  if newest is None:
    return None
  step, saved = newest
  saved = config_layout.saved_config(saved)
  return step, _check_resume_compatible(config, saved, f'{directory}/{step}')


def _metric_writer(workdir: str, is_chief: bool) -> metric_writers.MetricWriter:
  """TensorBoard, from process 0 only (the console lines come from `console.Progress`)."""
  if not is_chief:
    return metric_writers.MultiWriter([])
  try:
    return metric_writers.AsyncWriter(metric_writers.SummaryWriter(workdir))
  except Exception as e:  # TensorFlow raises its own types for I/O errors (e.g. a full disk).
    raise ConfigError(f'cannot write TensorBoard events in workdir {workdir!r}: '
                      f'{" ".join(str(e).split())[:200]}') from None


@contextlib.contextmanager
def _undone_on_setup_failure(workdir: str, is_chief: bool):
  """Creates `workdir` if needed; if the block fails before calling the `done` it yields, removes the
  workdir again when this run created it (it then holds only this run's start-up files)."""
  path = epath.Path(workdir)
  created = not path.exists()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except Exception as e:  # pylint: disable=broad-except  (OSError locally; a storage client's own types)
    raise ConfigError(f'workdir {workdir!r} cannot be created: {getattr(e, "strerror", None) or e}') from None
  finished = threading.Event()
  try:
    yield finished.set
  except BaseException:
    if created and is_chief and not finished.is_set():
      path.rmtree(missing_ok=True)
    raise


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> state_lib.TrainState | state_lib.VaeState:
  """Trains the model (GAN or VAE) described by `config`, resuming from the newest checkpoint in `workdir` if any.

  Returns the final train state. SIGTERM or SIGINT during set-up raises `StoppedDuringSetup` (nothing written
  before the workdir is created; after that, what this run created is removed).
  """
  with PreemptionWatch() as preemption:
    return _train(config, workdir, preemption)


def _train(config: ml_collections.ConfigDict, workdir: str, preemption: PreemptionWatch):
  # --- Setup: validate and build everything, and compile, before anything is written. ---
  config_checks.validate(config, device_count=jax.device_count(), process_count=jax.process_count())
  config_checks.check_workdir(workdir)
  is_chief = jax.process_index() == 0
  checkpoint_dir = os.path.join(workdir, 'checkpoints')
  checked = _check_against_checkpoints(config, checkpoint_dir)
  changed_fields = checked[1] if checked else []
  builder, info, family = prepare_data_and_models(config)
  preemption.stop_if_requested_during_setup('after preparing the data')
  # The feature network loads (or trains, once) here, so a missing weights file fails before any writing.
  feature_network = (evaluator_lib.load_feature_network(config, info.image_shape)
                     if config.eval.every_steps else None)
  # --- Mesh, and the state's layout: a sharding rule that fits no leaf fails here. ---
  mesh = sharding_lib.mesh_from_config(config)
  init_state, abstract_state = state_lib.initializer_from_config(config, mesh, family.init_state)
  state_shardings = state_lib.shardings_of(abstract_state)
  batch_sharding = sharding_lib.batch_sharding(mesh)

  # --- Input: this process's streams of the global batch, assembled into global arrays. ---
  data_iterator = input_pipeline.train_streams(config, builder, batch_sharding, info)
  batch_shapes = input_pipeline.global_batch_shapes(config, info)

  # --- Compile once, ahead of time; the loop then calls the executable, which cannot recompile. ---
  train_step, compile_seconds = compile_lib.compile_train_step(config, family.train_step, abstract_state,
                                                               batch_shapes, mesh)
  logging.info(console.compile_line(compile_seconds, train_step.memory_analysis()))
  preemption.stop_if_requested_during_setup('after compiling')

  # --- The workdir: created (if new) only now; a failure before the loop removes what this run created. ---
  with _undone_on_setup_failure(workdir, is_chief) as setup_done:
    writer = _metric_writer(workdir, is_chief)
    checkpointer = checkpointing.Checkpointer(checkpoint_dir, keep=config.keep_checkpoints,
                                              async_save=config.async_checkpointing)
    logging.info('jax %s on %d x %s over %d process(es); dataset %s %s, %d train examples; workdir %s',
                 jax.__version__, jax.device_count(), jax.devices()[0].device_kind, jax.process_count(), info.name,
                 info.image_shape, info.num_train_examples, workdir)

    # --- State: born sharded, or restored from the newest usable checkpoint. ---
    root_rng = jax.random.key(config.seed)
    init_rng, train_rng, _ = jax.random.split(root_rng, 3)
    # A saved data position only fits the data config it was saved with.
    restored = checkpointer.restore_latest(abstract_state, None if changed_fields else data_iterator)
    if restored is None:
      state = init_state(init_rng)
    else:
      state, restored_step, saved_config = restored
      if checked is None or restored_step != checked[0]:  # fell back past the checkpoint checked above
        _check_resume_compatible(config, saved_config, f'{checkpointer.directory}/{restored_step}')
      logging.info('resumed from %s/%d', checkpointer.directory, restored_step)
    initial_step = int(jax.device_get(state.step))
    if is_chief:
      epath.Path(workdir, 'config.json').write_text(json.dumps(config.to_dict(), indent=2, sort_keys=True))
      epath.Path(workdir, input_pipeline.DATASET_INFO_FILE).write_text(
          json.dumps(input_pipeline.info_record(config, info), indent=2))
    train_rng = sharding_lib.put_replicated(train_rng, mesh)
    # The family's image grids (samples; a VAE's reconstructions) and its own evaluations (a VAE's held-out ELBO).
    sampler = families.sampler_for(family, config, builder, mesh)
    reporter = family.reporter(families.ReportContext(
        config=config, mesh=mesh, state_shardings=state_shardings, builder=builder, image_shape=info.image_shape,
        workdir=workdir, writer=writer, is_chief=is_chief, sampler=sampler))

    # --- Evaluation hooks: the family's, and FID & co. every `eval.every_steps` (0 = off), of the EMA
    # generator when the run has one (unless `sample_with_ema` is False), like the sample grids. ---
    evaluations = list(reporter.evaluations)
    if feature_network is not None:
      evaluations.append((config.eval.every_steps, evaluator_lib.Evaluator(
          config, mesh=mesh, generate=family.generate, num_classes=family.num_classes, builder=builder,
          image_shape=info.image_shape, state_shardings=state_shardings, network=feature_network,
          sampler=sampler if family.fit_sampler else None)))
    preemption.stop_if_requested_during_setup('before the first step')
    setup_done()

  # --- Loop. Metrics stay on device and are fetched one step late, so the host never stalls dispatch. ---
  progress = console.Progress(first_step=initial_step, num_train_steps=config.num_train_steps,
                              images_per_step=config.batch_size * config.gan.n_critic, enabled=is_chief)
  lr_networks = ('vae',) if family.kind == 'vae' else ('generator', 'discriminator')
  write_metrics = functools.partial(_write_metrics, writer, progress, lr_networks, config)
  batches = input_pipeline.global_batches(data_iterator, batch_sharding, batch_shapes)
  window, ready, previous_metrics = [], None, None
  stop_reason = None
  with _flushed(writer, workdir):
    for step in range(initial_step + 1, config.num_train_steps + 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = train_step(state, next(batches), train_rng)
      if ready is not None:
        write_metrics(*ready)
        ready = None
      # The previous step's skip counter, read while this step runs.
      if previous_metrics is not None and (
          int(previous_metrics['consecutive_skipped']) >= config.max_consecutive_nonfinite):
        stop_reason = (f'{config.max_consecutive_nonfinite} steps in a row up to step {step - 1} had non-finite '
                       'loss or gradients and were skipped')
      previous_metrics = metrics
      window.append(metrics)
      preempted = preemption.should_stop(step)
      is_last = step == config.num_train_steps or preempted or stop_reason is not None
      if step % config.log_every_steps == 0 or is_last:
        ready, window = (step, window), []
      if step % config.sample_every_steps == 0 or is_last:
        reporter.write_images(step, state)
      for every, evaluate in evaluations:
        if step % every == 0 or step == config.num_train_steps:
          scores = evaluate(state)
          progress.evaluation(step, scores)
          writer.write_scalars(step, console.tensorboard_scalars(scores, 'eval'))
      if step % config.checkpoint_every_steps == 0 or is_last:
        checkpointer.save(step, state, data_iterator, config)
      if preempted:
        logging.warning('stopping at step %d on request; checkpoint saved', step)
        break
      if stop_reason is not None:
        break
    if ready is not None:
      write_metrics(*ready)
    checkpointer.wait_until_finished()  # inside: a failed save is the error reported, not a later flush
  checkpointer.close()
  progress.finish(int(jax.device_get(state.step)), workdir)
  if stop_reason is not None:
    raise TrainingStopped(f'{stop_reason}; the last good state is saved in {checkpointer.directory}/{step} '
                          '(lower the learning rate, clip gradients, or check the data)')
  return state
