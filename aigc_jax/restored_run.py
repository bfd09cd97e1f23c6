"""A trained run rebuilt from its workdir, for the evaluate and sample tools.

The config comes from the newest checkpoint (fields added since it was written take their defaults from
`configs/default.py`), then the command line's `--config.<key>=value` overrides; the models, mesh and
train state are rebuilt from it and the state restored into its sharded layout.
"""
import copy
import os
from typing import Any, Mapping, NamedTuple

import jax
import ml_collections

from aigc_jax import checkpointing, config_checks, input_pipeline, models, optimizers, train
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax.config_checks import ConfigError
from configs import default


class RestoredRun(NamedTuple):
  config: ml_collections.ConfigDict
  step: int
  info: input_pipeline.DatasetInfo
  builder: Any
  gan: models.Gan
  mesh: jax.sharding.Mesh
  state: state_lib.TrainState
  state_shardings: Any


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
  merged = copy.deepcopy(base)
  for key, value in update.items():
    merged[key] = _merge(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), dict) else value
  return merged


def run_config(saved: Mapping[str, Any], overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Defaults <- the checkpoint's config <- dotted-key `overrides` (e.g. {'eval.num_samples': 100})."""
  merged = _merge(default.get_config().to_dict(), saved)
  for dotted, value in overrides.items():
    node = merged
    *parents, leaf = dotted.split('.')
    for name in parents:
      node = node[name]
    node[leaf] = value
  return ml_collections.ConfigDict(merged)


def latest_checkpoint(workdir: str) -> tuple[checkpointing.Checkpointer, int]:
  """The workdir's checkpointer and newest step; a one-line `ConfigError` if there is none."""
  if not os.path.isdir(workdir):
    raise ConfigError(f'workdir {workdir!r} does not exist')
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    raise ConfigError(f'no checkpoint in workdir {workdir!r} (no checkpoints/ directory); train one with '
                      f'python -m aigc_jax.main --config=... --workdir={workdir}')
  checkpointer = checkpointing.Checkpointer(directory, keep=1_000_000, async_save=False)
  step = checkpointer.latest_step()
  if step is None:
    raise ConfigError(f'no checkpoint in {directory!r}')
  return checkpointer, step


def restore(workdir: str, overrides: Mapping[str, Any]) -> RestoredRun:
  """Rebuilds the run in `workdir` from its newest checkpoint (read-only: nothing is written there)."""
  checkpointer, step = latest_checkpoint(workdir)
  config = run_config(checkpointer.restore_config(step), overrides)
  config_checks.validate(config, device_count=jax.device_count(), process_count=jax.process_count())
  builder = train.prepare_dataset(config)
  info = input_pipeline.dataset_info(config, builder)
  gan = models.create_gan(config, info.image_shape, info.num_classes)
  mesh = sharding_lib.create_mesh()
  _, abstract = state_lib.sharded_initializer(
      mesh, gan=gan, g_tx=optimizers.create_optimizer(config, 'generator'),
      d_tx=optimizers.create_optimizer(config, 'discriminator'), image_shape=info.image_shape,
      latent_dim=config.latent_dim)
  state = checkpointer.restore_state(step, abstract)
  checkpointer.close()
  return RestoredRun(config, step, info, builder, gan, mesh, state, state_lib.shardings_of(abstract))


def config_overrides(argv: list[str], parsed: ml_collections.ConfigDict) -> dict[str, Any]:
  """The `--config.<dotted key>=value` overrides named on the command line, with their parsed values."""
  overrides = {}
  for arg in argv:
    if arg.startswith('--config.'):
      dotted = arg[len('--config.'):].split('=')[0]
      node = parsed
      for name in dotted.split('.'):
        node = node[name]
      overrides[dotted] = node
  return overrides
