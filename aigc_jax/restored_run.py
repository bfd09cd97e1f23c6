"""A trained run rebuilt from its workdir, for the evaluate and sample tools.

The config comes from the newest usable checkpoint (fields added since it was written take their defaults from
`configs/base.py`), then the command line's `--config.<key>=value` overrides; the models, mesh and
train state are rebuilt from it and the state restored into its sharded layout.
"""
import copy
import json
import os
from typing import Any, Mapping, NamedTuple

import jax
import ml_collections
import numpy as np
from absl import logging

from aigc_jax import checkpointing, config_checks, config_layout, families, input_pipeline, train
from aigc_jax import ema as ema_lib
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax.config_errors import ConfigError, one_line
from configs import base


class RestoredRun(NamedTuple):
  config: ml_collections.ConfigDict
  step: int
  info: input_pipeline.DatasetInfo
  builder: Any
  family: families.Family
  mesh: jax.sharding.Mesh
  state: state_lib.TrainState | state_lib.VaeState
  state_shardings: Any


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
  merged = copy.deepcopy(base)
  for key, value in update.items():
    merged[key] = _merge(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), dict) else value
  return merged


def run_config(saved: Mapping[str, Any], overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """Defaults <- the checkpoint's config <- dotted-key `overrides` (e.g. {'eval.num_samples': 100})."""
  merged = _merge(base.get_config().to_dict(), saved)
  for dotted, value in overrides.items():
    node = merged
    *parents, leaf = dotted.split('.')
    for name in parents:
      node = node[name]
    node[leaf] = value
  return ml_collections.ConfigDict(merged)


def open_checkpoints(workdir: str) -> checkpointing.Checkpointer:
  """The workdir's checkpoints, opened read-only; a one-line `ConfigError` if there are none."""
  if not os.path.isdir(workdir):
    raise ConfigError(f'workdir {workdir!r} does not exist')
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory):
    raise ConfigError(f'no checkpoint in workdir {workdir!r} (no checkpoints/ directory); train one with '
                      f'python -m aigc_jax.main --config=... --workdir={workdir}')
  checkpointer = checkpointing.Checkpointer(directory, keep=1, read_only=True)
  if checkpointer.latest_step() is None:
    raise ConfigError(f'no checkpoint in {directory!r}')
  return checkpointer


def _recorded_info(workdir: str, config: ml_collections.ConfigDict) -> input_pipeline.DatasetInfo | None:
  """What training recorded about the data in `workdir`, if it was recorded for the data `config` names."""
  try:
    with open(os.path.join(workdir, input_pipeline.DATASET_INFO_FILE)) as f:
      return input_pipeline.info_from_record(config, json.load(f))
  except (OSError, ValueError, KeyError, TypeError):
    return None  # an older run, or a damaged file: the data is prepared instead


def restore(workdir: str, overrides: Mapping[str, Any], step: int | None = None, *,
            needs_data: bool = True) -> RestoredRun:
  """Rebuilds the run in `workdir` from checkpoint `step`, or from its newest usable checkpoint, read-only:
  nothing is written, moved or removed there, so it can run beside training.

  With `needs_data=False` (sampling), the image shape and class count come from what training recorded in
  the workdir, and the dataset is neither read nor prepared (`builder` is then None); runs that recorded
  nothing prepare it as before.

  Without `step`, a damaged checkpoint (its config or state does not read) is skipped with a warning for the
  next older one. `checkpointing.CheckpointError` if none is usable; `ConfigError` for bad overrides or a
  `step` that has no checkpoint (the message lists the steps there are).
  """
  checkpointer = open_checkpoints(workdir)
  steps = sorted(checkpointer.all_steps(), reverse=True)
  if step is not None and step not in steps:
    checkpointer.close()
    raise ConfigError(f'--step={step} is not allowed: {checkpointer.directory} has no checkpoint of step {step}; '
                      f'allowed: {", ".join(map(str, sorted(steps)))}')
  built = {}  # the config as JSON -> what was built for it: checkpoints of one run share it
  failures = []
  try:
    for step in steps if step is None else [step]:
      try:
        saved = config_layout.saved_config(checkpointer.restore_config(step))
      except Exception as e:  # pylint: disable=broad-except  (JSON, missing files, ...)
        failures.append(_skip(checkpointer, step, e))
        continue
      config = run_config(saved, overrides)
      config_checks.validate(config, device_count=jax.device_count(), process_count=jax.process_count())
      ema_lib.check_matches_checkpoint(
          config, saved, workdir, 'no --config.gan.ema_decay (--config.gan.sample_with_ema=False samples the '
          'raw generator)')
      key = json.dumps(config.to_dict(), sort_keys=True, default=str)
      if key not in built:
        # A sampler fitted to the training data needs the data to sample.
        info = None if needs_data or families.fits_sampler(config) else _recorded_info(workdir, config)
        if info is None:
          builder, info, family = train.prepare_data_and_models(config)
        else:
          builder, family = None, train.create_family(config, info)
        mesh = sharding_lib.mesh_from_config(config)
        _, abstract = state_lib.initializer_from_config(config, mesh, family.init_state)
        built[key] = builder, info, family, mesh, abstract
      builder, info, family, mesh, abstract = built[key]
      try:
        state = checkpointer.restore_state(step, abstract)
      except Exception as e:  # pylint: disable=broad-except  (tensorstore, missing or truncated files, ...)
        failures.append(_skip(checkpointer, step, e))
        continue
      return RestoredRun(config, step, info, builder, family, mesh, state, state_lib.shardings_of(abstract))
  finally:
    checkpointer.close()
  raise checkpointing.CheckpointError(
      f'no usable checkpoint in {checkpointer.directory}: steps {", ".join(failures)} all failed to restore; '
      'nothing was changed there')


def _skip(checkpointer: checkpointing.Checkpointer, step: int, error: Exception) -> str:
  logging.warning('checkpoint %s/%d is unusable, trying an older one: %s', checkpointer.directory, step,
                  one_line(error))
  return str(step)


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


def sampler(run: RestoredRun):
  """The run's `generate` for its restored state: the family's sampler, fitted to the training data first
  when it is one that is (`families.sampler_for`)."""
  return families.sampler_for(run.family, run.config, run.builder, run.mesh)(run.state)


def generate_images(run: RestoredRun, z, labels=None) -> np.ndarray:
  """uint8 images `[N, H, W, C]` from latents `z` (and labels, for a conditional model), generated in batches
  split over the mesh."""
  split = sharding_lib.example_sharding(run.mesh)
  generate = jax.jit(sampler(run), in_shardings=(run.state_shardings, split, split),
                     out_shardings=sharding_lib.replicated(run.mesh))
  devices = run.mesh.size
  batch = min(256, -(-len(z) // devices) * devices)
  count, z = len(z), np.asarray(z)
  z = np.concatenate([z, np.zeros((-count % batch, z.shape[1]), z.dtype)])  # whole batches; trimmed below
  if labels is not None:
    labels = np.concatenate([np.asarray(labels, np.int32), np.zeros((-count % batch,), np.int32)])
  label_batch = lambda i: None if labels is None else jax.device_put(labels[i:i + batch], split)
  images = np.concatenate([np.asarray(generate(run.state, jax.device_put(z[i:i + batch], split), label_batch(i)))
                           for i in range(0, len(z), batch)])[:count]
  return np.clip(np.rint((images + 1.0) * 127.5), 0, 255).astype(np.uint8)
