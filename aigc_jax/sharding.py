"""The device mesh and how arrays are laid out on it.

The mesh has two axes, `data` and `fsdp` (`config.fsdp_devices` devices on `fsdp`, the rest on `data`; by
default all devices are data-parallel). The batch is split over both axes together. Train-state leaves are
laid out by regex -> partition rules (big_vision style, first match wins) on their path in the state,
e.g. `generator/params/Dense_0/kernel` or `generator/opt_state/0/mu/Dense_0/kernel`: `param_sharding =
'fsdp'` is one config line that shards every kernel (and its Adam moments and EMA copy) over `fsdp`.
"""
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'
MESH_AXES = (DATA_AXIS, FSDP_AXIS)
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # the batch is split over every device
# A rule's spec: a tuple with one entry per array dim (None, an axis name or a tuple of axis names), or one
# of these methods. 'fsdp': the largest dim that the fsdp axis size divides is split over it (the leaf
# stays replicated if none does); 'replicated': no split.
RULE_METHODS = ('fsdp', 'replicated')
# `config.param_sharding` presets: rules applied when `config.param_sharding_rules` is empty.
PARAM_SHARDING_PRESETS: dict[str, tuple[tuple[str, Any], ...]] = {
    'replicated': (),
    'fsdp': (('.*/(kernel|embedding)', 'fsdp'),),
}


class ShardingRuleError(ValueError):
  """A rule that cannot lay out a leaf (wrong rank, indivisible dim); the message is one line."""


def create_mesh(devices: Sequence[jax.Device] | None = None, *, fsdp: int = 1) -> Mesh:
  """A `(data, fsdp)` mesh over `devices` (default: every device of every process), `fsdp` devices on fsdp."""
  count = jax.device_count() if devices is None else len(devices)
  if fsdp < 1 or count % fsdp:
    raise ValueError(f'fsdp={fsdp} does not divide the device count {count}')
  shape, types = (count // fsdp, fsdp), (AxisType.Auto, AxisType.Auto)
  if devices is None:
    return jax.make_mesh(shape, MESH_AXES, axis_types=types)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=types)


def mesh_from_config(config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """The mesh `config.fsdp_devices` asks for (-1: every device on fsdp)."""
  count = jax.device_count() if devices is None else len(devices)
  return create_mesh(devices, fsdp=count if config.fsdp_devices == -1 else config.fsdp_devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put_replicated(tree: Any, mesh: Mesh) -> Any:
  """Host values (the same on every process) as arrays replicated over `mesh`, with one process or many.

  `jax.device_put` needs every device of the target sharding to belong to this process; a jitted copy
  with replicated output does not.
  """
  return jax.jit(lambda x: x, out_shardings=replicated(mesh))(tree)


def rules_from_config(config: Any) -> tuple[tuple[str, Any], ...]:
  """The partition rules of the run: `param_sharding_rules` if given, else the `param_sharding` preset."""
  if config.param_sharding_rules:
    return tuple((pattern, spec) for pattern, spec in config.param_sharding_rules)
  return PARAM_SHARDING_PRESETS[config.param_sharding]


def _path_name(path) -> str:
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return '/'.join(parts)


def _largest_divisible_dim(shape: tuple[int, ...], size: int) -> int | None:
  candidates = [(dim, i) for i, dim in enumerate(shape) if dim % size == 0 and dim >= size]
  return max(candidates)[1] if candidates and size > 1 else None


def leaf_spec(name: str, shape: tuple[int, ...], rules: Sequence[tuple[str, Any]], mesh: Mesh) -> P:
  """The partition spec of the leaf called `name`: the first rule whose regex fully matches it."""
  for pattern, spec in rules:
    if not re.fullmatch(pattern, name):
      continue
    if spec == 'replicated':
      return P()
    if spec == 'fsdp':
      dim = _largest_divisible_dim(shape, mesh.shape[FSDP_AXIS])
      return P() if dim is None else P(*([None] * dim + [FSDP_AXIS]))
    spec = tuple(spec)
    if len(spec) > len(shape):
      raise ShardingRuleError(f'rule ({pattern!r}, {spec!r}) has {len(spec)} entries but {name} has shape '
                              f'{shape}; allowed: at most {len(shape)} entries, or the method fsdp/replicated')
    for dim, axes in zip(shape, spec):
      size = int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ())]))
      if dim % size:
        raise ShardingRuleError(f'rule ({pattern!r}, {spec!r}) splits a dim of {dim} of {name} {shape} over '
                                f'{size} devices; allowed: a spec whose mesh axes divide each dim it splits')
    return P(*spec)
  return P()


def state_sharding(abstract_state: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = ()) -> Any:
  """A sharding for every leaf of the train state: by `rules` on its path, else replicated."""
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: NamedSharding(mesh, leaf_spec(_path_name(path), tuple(leaf.shape), rules, mesh)),
      abstract_state)


def constrain_to_batch(x: jax.Array) -> jax.Array:
  """`x` with its leading (batch) axis split over the mesh the step is traced under (`compile.py` sets it);
  unchanged when there is none. Arrays a step draws itself (latents, sampled labels) would otherwise be
  replicated, and every device would run the generator on the whole global batch."""
  if jax.sharding.get_abstract_mesh().empty:
    return x
  return jax.lax.with_sharding_constraint(x, P(BATCH_AXES))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Training elements are `[n_critic, batch, ...]`: split the batch axis over every device."""
  return NamedSharding(mesh, P(None, BATCH_AXES))


def example_sharding(mesh: Mesh) -> NamedSharding:
  """Arrays whose leading axis is the batch (latents, images to score): split it over every device."""
  return NamedSharding(mesh, P(BATCH_AXES))
