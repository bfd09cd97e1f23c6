"""How tests build a training step: the model family, its state born sharded over a mesh, and the step
compiled by `compile.compile_train_step`, the one compile training and the benchmark use (shardings,
compiler options), so the tests run the program that trains."""
from typing import Any, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from aigc_jax import compile as compile_lib
from aigc_jax import families, input_pipeline
from aigc_jax import state as state_lib


class CompiledStep(NamedTuple):
  family: families.Family
  state: Any          # the initial state at `config.seed`, laid out over the mesh
  step: Any           # compiled (state, batch, rng) -> (state, metrics); the state passed in stays usable
  shardings: Any      # the state's shardings


def compiled_train_step(config, mesh: Mesh, image_shape=(28, 28, 1), num_classes: int = 0) -> CompiledStep:
  family = families.create(config, image_shape, num_classes)
  init, abstract = state_lib.initializer_from_config(config, mesh, family.init_state)
  step, _ = compile_lib.compile_train_step(config, family.train_step, abstract,
                                           families.global_batch_shapes(config, image_shape), mesh, donate=False)
  return CompiledStep(family, init(jax.random.key(config.seed)), step, state_lib.shardings_of(abstract))


def real_batches(config, count: int) -> list[dict[str, np.ndarray]]:
  """The first `count` training elements of `config`'s dataset, `[n_critic, B, ...]` each."""
  builder = input_pipeline.get_builder(config)
  ds = input_pipeline.create_train_dataset(config, builder, process_index=0, process_count=1)
  return [jax.tree.map(np.asarray, element) for element in ds.take(count).as_numpy_iterator()]
