"""Checkpoints: the only module that touches Orbax.

One checkpoint step holds three items, committed together:
- `state`: the whole train state (params, non-param variables such as batch-norm statistics, both
  optimiser states, step), saved asynchronously and restored straight into its sharded layout;
- `data`: every process's tf.data iterator position (shuffle buffer included), so a resumed run sees
  exactly the batches an uninterrupted run would have seen;
- `config`: the run's config as JSON, for tools that rebuild the models from a workdir.
"""
import dataclasses
import os
from typing import Any

import flax
import jax
import ml_collections
import orbax.checkpoint as ocp
import tensorflow as tf
from etils import epath


class TfIteratorHandler(ocp.CheckpointHandler):
  """Saves and restores a tf.data iterator per process (`process_<index>` inside the item directory)."""

  def save(self, directory: epath.Path, args: 'TfIteratorSave'):
    tf.train.Checkpoint(iterator=args.iterator).write(os.fspath(directory / f'process_{jax.process_index()}'))

  def restore(self, directory: epath.Path, args: 'TfIteratorRestore'):
    checkpoint = tf.train.Checkpoint(iterator=args.iterator)
    checkpoint.read(os.fspath(directory / f'process_{jax.process_index()}')).assert_consumed()
    return args.iterator


@ocp.args.register_with_handler(TfIteratorHandler, for_save=True)
@dataclasses.dataclass
class TfIteratorSave(ocp.args.CheckpointArgs):
  iterator: Any


@ocp.args.register_with_handler(TfIteratorHandler, for_restore=True)
@dataclasses.dataclass
class TfIteratorRestore(ocp.args.CheckpointArgs):
  iterator: Any


class Checkpointer:
  """Saves and restores (train state, data iterator, config) under `directory`, keeping the newest `keep`."""

  def __init__(self, directory: str, *, keep: int, async_save: bool = True):
    self._manager = ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save),
        item_handlers={'state': ocp.StandardCheckpointHandler(), 'data': TfIteratorHandler(),
                       'config': ocp.JsonCheckpointHandler()})

  @property
  def directory(self) -> str:
    return os.fspath(self._manager.directory)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_iterator: Any, config: ml_collections.ConfigDict) -> None:
    """Starts saving `step` (asynchronously when enabled); returns once the state is safe to donate."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(flax.serialization.to_state_dict(state)),
        data=TfIteratorSave(data_iterator),
        config=ocp.args.JsonSave(config.to_dict())), force=True)

  def restore(self, step: int, target_state: Any, data_iterator: Any) -> Any:
    """Restores `step` into the layout of `target_state` (arrays or `jax.ShapeDtypeStruct`s with shardings).

    `data_iterator` is moved to the saved position in place.
    """
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(flax.serialization.to_state_dict(target_state)),
        data=TfIteratorRestore(data_iterator)))
    return flax.serialization.from_state_dict(target_state, restored['state'])

  def restore_state(self, step: int, target_state: Any) -> Any:
    """Restores only the train state of `step` (for tools that evaluate or sample, with no data iterator)."""
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(flax.serialization.to_state_dict(target_state))))
    return flax.serialization.from_state_dict(target_state, restored['state'])

  def restore_config(self, step: int) -> dict[str, Any]:
    return self._manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))['config']

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
