"""Checkpoints: the only module that touches Orbax.

One checkpoint step holds three items, committed together:
- `state`: the whole train state (params, non-param variables such as batch-norm statistics, both
  optimiser states, step), saved asynchronously and restored straight into its sharded layout;
- `data`: the position (shuffle buffer included) of every tf.data stream of the global batch, each
  written by the process that runs it, so a resumed run sees exactly the batches an uninterrupted run
  would have seen; and `data_layout`, what those positions fit (the stream count) and the process count
  that wrote them. Positions restore under any process count with the same stream count; otherwise the
  data order restarts, with a warning;
- `config`: the run's config as JSON, for tools that rebuild the models from a workdir.

Multi-host: every process calls save and restore (Orbax coordinates them and writes each array shard
once); the state restores into the current sharding whatever the process count that saved it.

Failure handling: a save killed midway leaves only an uncommitted temporary directory, which is ignored
(and cleaned up by the training process) so the previous checkpoint is the one restored. A checkpoint that
fails to restore (truncated or corrupt files, or a config item that does not read) is reported, moved aside
as `<step>.corrupt` by training (never deleted) and the next older one is tried. A save that fails (disk
full, read-only workdir) raises `CheckpointError`.

Tools that only read a workdir (`sample`, `evaluate`) open it with `read_only=True`: they never create,
clean up or move anything there, so they can run beside a training run that is saving.
"""
import dataclasses
import os
import sys
import time
import warnings
from typing import Any

import flax
import jax
import ml_collections
import orbax.checkpoint as ocp
import tensorflow as tf
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from aigc_jax.config_errors import one_line


class CheckpointError(RuntimeError):
  """A checkpoint could not be saved or no usable checkpoint could be restored; the message is one line."""


def _is_late_callback_of_failed_io(kind: type, value: BaseException, traceback: Any) -> bool:
  """Whether an unraisable error is a storage read or write completing after its asyncio loop closed: once
  one array of a restore or save fails, Orbax's loop ends while the other arrays' I/O still runs, and
  each of them then reports `Event loop is closed` as a traceback."""
  if kind is not RuntimeError or str(value) != 'Event loop is closed':
    return False
  while traceback is not None and traceback.tb_next is not None:
    traceback = traceback.tb_next
  return traceback is not None and f'{os.sep}asyncio{os.sep}' in traceback.tb_frame.f_code.co_filename


def _quiet_late_callbacks_of_failed_io() -> None:
  """Drops the tracebacks `_is_late_callback_of_failed_io` describes, for good (the failure itself is
  reported once, by the save or restore that failed). TensorStore reports them as unraisable errors."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_late_io_callbacks', False):
    return

  def hook(unraisable):
    if not _is_late_callback_of_failed_io(unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback):
      previous(unraisable)
  hook.drops_late_io_callbacks = True
  sys.unraisablehook = hook
  # The failed save's handlers that never ran are garbage-collected at exit, each with a warning.
  warnings.filterwarnings('ignore', r"coroutine '\w+Handler\.\w+' was never awaited", RuntimeWarning)


class TfIteratorHandler(ocp.CheckpointHandler):
  """Saves and restores named tf.data iterators; each process writes and reads the names it runs."""

  def save(self, directory: epath.Path, args: 'TfIteratorSave'):
    for name, iterator in args.iterators.items():
      tf.train.Checkpoint(iterator=iterator).write(os.fspath(directory / name))

  def restore(self, directory: epath.Path, args: 'TfIteratorRestore'):
    for name, iterator in args.iterators.items():
      tf.train.Checkpoint(iterator=iterator).read(os.fspath(directory / name)).assert_consumed()
    return args.iterators


@ocp.args.register_with_handler(TfIteratorHandler, for_save=True)
@dataclasses.dataclass
class TfIteratorSave(ocp.args.CheckpointArgs):
  iterators: dict[str, Any]


@ocp.args.register_with_handler(TfIteratorHandler, for_restore=True)
@dataclasses.dataclass
class TfIteratorRestore(ocp.args.CheckpointArgs):
  iterators: dict[str, Any]


def _remove_uncommitted_saves(directory: str) -> None:
  """Deletes what interrupted saves left (`<step>.orbax-checkpoint-tmp*`), before any new save starts.

  Done here, synchronously, because a step whose save was interrupted is saved again by the resumed run,
  and Orbax's own clean-up could otherwise remove the new save's directory of the same name.
  """
  path = epath.Path(directory)
  if jax.process_index() == 0 and path.is_dir():
    for child in path.iterdir():
      if '.orbax-checkpoint-tmp' in child.name:
        logging.warning('removing the uncommitted save %s (interrupted before it completed)', child)
        child.rmtree(missing_ok=True)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('removed uncommitted saves')


def _without_none(tree: Any) -> Any:
  """A state dict without its None entries: a field that is None (e.g. no EMA generator) leaves no trace,
  so checkpoints written before such a field existed restore unchanged, and vice versa."""
  if isinstance(tree, dict):
    return {key: _without_none(value) for key, value in tree.items() if value is not None}
  return tree


def _with_none(restored: Any, target: Any) -> Any:
  """`restored` with the None entries of the `target` state dict put back."""
  if isinstance(target, dict):
    return {key: None if value is None else _with_none(restored[key], value) for key, value in target.items()}
  return restored


def _state_target(target_state: Any) -> Any:
  return _without_none(flax.serialization.to_state_dict(target_state))


def _from_restored(target_state: Any, restored: Any) -> Any:
  return flax.serialization.from_state_dict(
      target_state, _with_none(restored, flax.serialization.to_state_dict(target_state)))


class Checkpointer:
  """Saves and restores (train state, data iterator, config) under `directory`, keeping the newest `keep`."""

  def __init__(self, directory: str, *, keep: int, async_save: bool = True, read_only: bool = False):
    """`read_only`: for tools beside (or after) training; nothing under `directory` is created or removed."""
    self._pending = None  # the step of the asynchronous save in flight
    _quiet_late_callbacks_of_failed_io()
    if not read_only:
      _remove_uncommitted_saves(directory)
    options = (ocp.CheckpointManagerOptions(read_only=True, create=False, max_to_keep=None, save_interval_steps=0,
                                            enable_async_checkpointing=False) if read_only else
               ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=async_save))
    self._manager = ocp.CheckpointManager(
        directory if '://' in directory else os.path.abspath(directory),  # local, or a bucket (gs://...)
        options=options,
        item_handlers={'state': ocp.StandardCheckpointHandler(), 'data': TfIteratorHandler(),
                       'data_layout': ocp.JsonCheckpointHandler(), 'config': ocp.JsonCheckpointHandler()})

  @property
  def directory(self) -> str:
    return os.fspath(self._manager.directory)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any, config: ml_collections.ConfigDict) -> None:
    """Starts saving `step` (asynchronously when enabled); returns once the state is safe to donate.

    `data_iterator` is this process's data position: `.iterators` (name -> tf.data iterator) and
    `.layout` (a JSON dict of what the positions fit), e.g. an `input_pipeline.TrainStreams`.
    Raises `CheckpointError` if this save, or the previous asynchronous one, failed.
    """
    layout = dict(data_iterator.layout, process_count=jax.process_count())
    self.wait_until_finished()  # Orbax would wait inside save(); here a failure names the save that failed
    try:
      self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(_state_target(state)),
          data=TfIteratorSave(dict(data_iterator.iterators)),
          data_layout=ocp.args.JsonSave(layout),
          config=ocp.args.JsonSave(config.to_dict())), force=True)
    except Exception as e:  # Orbax and the file system raise many types.
      raise CheckpointError(self._save_failed(f'saving checkpoint {step}', e)) from e
    self._pending = step

  def _save_failed(self, what: str, error: BaseException) -> str:
    good = self.latest_step()
    kept = f'the last good checkpoint is {self.directory}/{good}' if good is not None else 'no checkpoint was kept'
    return f'{what} in {self.directory} failed ({one_line(error)}); {kept}'

  def restore_latest(self, target_state: Any, data_iterator: Any) -> tuple[Any, int, dict[str, Any]] | None:
    """`(state, step, config)` of the newest checkpoint that restores cleanly; None when there is none at all.

    A checkpoint is unusable when its state or its config item fails to read. Unusable ones are skipped
    with a warning and moved aside as `<step>.corrupt`; if none restores, raises `CheckpointError` and
    leaves every file where it was.
    """
    failures = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        config = self.restore_config(step)
        state = self.restore(step, target_state, data_iterator)
      except Exception as e:  # A damaged checkpoint can fail in many ways (tensorstore, TF, JSON, ...).
        logging.warning('checkpoint %s/%d is unusable, trying an older one: %s', self.directory, step,
                        one_line(e))
        failures.append((step, e))
        continue
      for bad_step, _ in failures:
        self._quarantine(bad_step)
      return state, step, config
    if failures:
      newest, error = failures[0]
      raise CheckpointError(f'no usable checkpoint in {self.directory}: steps {[s for s, _ in failures]} all '
                            f'failed to restore (step {newest}: {one_line(error)}); nothing was deleted')
    return None

  def newest_config(self) -> tuple[int, dict[str, Any]] | None:
    """`(step, config)` of the newest checkpoint whose config item reads (past damaged ones, which
    `restore_latest` reports); None when no checkpoint has one. Reads only."""
    for step in sorted(self.all_steps(), reverse=True):
      try:
        return step, self.restore_config(step)
      except Exception:  # pylint: disable=broad-except  (JSON, missing files, tensorstore, ...)
        continue
    return None

  def _quarantine(self, step: int) -> None:
    """Moves a corrupt checkpoint out of the way (keeping its files) so that `step` can be saved again."""
    if jax.process_index() == 0:
      source = epath.Path(self.directory) / str(step)
      target = source.with_name(f'{step}.corrupt')
      if target.exists():
        target = source.with_name(f'{step}.corrupt-{int(time.time())}')
      source.rename(target)
      logging.warning('moved unusable checkpoint %s to %s', source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'quarantined checkpoint {step}')
    self._manager.reload()

  def restore(self, step: int, target_state: Any, data_iterator: Any) -> Any:
    """Restores `step` into the layout of `target_state` (arrays or `jax.ShapeDtypeStruct`s with shardings).

    `data_iterator` (see `save`) is moved to the saved position in place when the checkpoint's data layout
    is the same as its own; otherwise (another stream count, or a checkpoint without a recorded layout) it
    is left at the start, with a warning. Pass None to leave the data position alone.
    """
    items = {'state': ocp.args.StandardRestore(_state_target(target_state))}
    if data_iterator is not None:
      saved = self._data_layout(step)
      current = dict(data_iterator.layout)
      if saved is not None and {k: saved.get(k) for k in current} == current:
        items['data'] = TfIteratorRestore(dict(data_iterator.iterators))
      else:
        logging.warning('checkpoint %s/%d holds data positions for %s, this run reads %s: the data order '
                        'restarts from the seed (the train state is restored exactly)', self.directory, step,
                        saved or 'an unrecorded layout', current)
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    return _from_restored(target_state, restored['state'])

  def _data_layout(self, step: int) -> dict[str, Any] | None:
    """The data layout recorded with `step`, or None for a checkpoint written before layouts were recorded."""
    if not (epath.Path(self.directory) / str(step) / 'data_layout').is_dir():
      return None
    return self._manager.restore(step, args=ocp.args.Composite(data_layout=ocp.args.JsonRestore()))['data_layout']

  def restore_state(self, step: int, target_state: Any) -> Any:
    """Restores only the train state of `step` (for tools that evaluate or sample, with no data iterator)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_state_target(target_state))))
    return _from_restored(target_state, restored['state'])

  def restore_config(self, step: int) -> dict[str, Any]:
    """The config saved with `step`; raises if that item is missing or is not a JSON object."""
    config = self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']
    if not isinstance(config, dict):
      raise ValueError(f'the config item of checkpoint {step} is a {type(config).__name__}, not a JSON object')
    return config

  def wait_until_finished(self) -> None:
    """Blocks until the pending asynchronous save is committed; raises `CheckpointError` if it failed."""
    pending, self._pending = self._pending, None
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(self._save_failed(f'saving checkpoint {pending}', e)) from e

  def close(self) -> None:
    self._manager.close()
