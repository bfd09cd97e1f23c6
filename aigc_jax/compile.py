"""The one ahead-of-time compile of the train step: shardings, donation and compiler options.

`train.py`, the benchmark and the pod plan compile the step here, so the program that is timed and planned
is the program that trains. The state is donated (updated in place), the batch is split over the mesh's
data axes, and the step's RNG and metrics are replicated.

Compiler options, in order (a later one wins): the CPU fast path's, where it applies (`aigc_jax/cpu`);
then `config.xla_compiler_options`, a string of comma-separated `name=value` XLA options for this one
program, e.g. 'xla_gpu_enable_latency_hiding_scheduler=true' (MaxText's `compile_xla_flags`). Values
`true` / `false` are booleans, numbers are numbers, anything else is a string. Unlike `XLA_FLAGS` they
apply to the train step alone, not to every program of the process.
"""
import re
import time
from typing import Any, Callable

import jax
import ml_collections
from jax.sharding import Mesh

from aigc_jax import cpu
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax.config_errors import ConfigError

CompilerOptions = dict[str, bool | int | float | str]
_NAME = re.compile(r'xla_[a-z0-9_]+')


def _value(text: str) -> bool | int | float | str:
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def parse_compiler_options(text: str) -> CompilerOptions:
  """`'name=value,name=value'` as a dict; raises ConfigError naming the first malformed entry."""
  options = {}
  for entry in filter(None, (part.strip() for part in text.split(','))):
    name, equals, value = entry.partition('=')
    name = name.strip()
    if not equals or not _NAME.fullmatch(name):
      raise ConfigError(f'config.xla_compiler_options: {entry!r} is not an option; allowed: comma-separated '
                        "name=value pairs with names like xla_cpu_..., xla_gpu_... (e.g. 'xla_gpu_autotune_level=0')")
    options[name] = _value(value.strip())
  return options


def compiler_options(config: ml_collections.ConfigDict, platform: str) -> CompilerOptions | None:
  """The options the train step of `config` is compiled with on `platform`; None for XLA's defaults."""
  options = {**cpu.compiler_options(config, platform), **parse_compiler_options(config.xla_compiler_options)}
  return options or None


def compile_train_step(config: ml_collections.ConfigDict, train_step: Callable, abstract_state: Any,
                       batch_shapes: dict[str, jax.ShapeDtypeStruct], mesh: Mesh, *,
                       donate: bool = True) -> tuple[Any, float]:
  """`(compiled step, seconds to compile)`: `train_step(state, batch, rng) -> (state, metrics)` compiled for
  states laid out as `abstract_state` (its shardings) and global batches of `batch_shapes`. The state passed
  in is donated (its buffers reused for the new state) unless `donate` is False."""
  replicated, batch_sharding = sharding_lib.replicated(mesh), sharding_lib.batch_sharding(mesh)
  state_shardings = state_lib.shardings_of(abstract_state)
  batch_in = {key: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sharding) for key, s in batch_shapes.items()}
  rng_in = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated)
  start = time.perf_counter()
  with jax.set_mesh(mesh):  # what the step draws itself is split over the batch too (sharding.constrain_to_batch)
    lowered = jax.jit(train_step, in_shardings=(state_shardings, batch_sharding, replicated),
                      out_shardings=(state_shardings, replicated), donate_argnums=0 if donate else (),
                      ).lower(abstract_state, batch_in, rng_in)
  compiled = lowered.compile(compiler_options=compiler_options(config, mesh.devices.flat[0].platform))
  return compiled, time.perf_counter() - start
