"""The device mesh and how arrays are laid out on it.

The batch is split along the mesh's `data` axis; parameters and optimiser state are replicated.
"""
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def create_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D data-parallel mesh over `devices` (default: every device of every process)."""
  if devices is None:
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))
  return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Host values (the same on every process) as arrays replicated over `mesh`, with one process or many.

  `jax.device_put` needs every device of the target sharding to belong to this process; a jitted copy
  with replicated output does not.
  """
  return jax.jit(lambda x: x, out_shardings=replicated(mesh))(tree)


def state_sharding(abstract_state: Any, mesh: Mesh) -> Any:
  """A sharding for every leaf of the train state: replicated over the mesh."""
  return jax.tree.map(lambda _: replicated(mesh), abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Training elements are `[n_critic, batch, ...]`: split the batch axis over `data`."""
  return NamedSharding(mesh, P(None, DATA_AXIS))
