"""The CPU fast path: faster equivalents of the models' layers, and compiler options, for XLA:CPU.

One switch, `config.cpu_fast_path`:
- 'auto': on a CPU backend in float32, models are built with the layers of `aigc_jax.cpu.layers` (the same
  parameters and function as flax's `Conv`, `ConvTranspose` and `Dropout`, computed in forms XLA:CPU runs
  faster) and the train step is compiled with `compiler_options(config, 'cpu')`;
- 'off': flax's layers and XLA's default compilation everywhere.

On GPU and TPU, and in bfloat16, 'auto' is 'off': nothing here runs there. The parameter tree is the same
either way, so a checkpoint moves between the two. Tests: tests/test_cpu_fast_path.py.
"""
import jax
import jax.numpy as jnp
import ml_collections

from aigc_jax.models.layers import Layers

MODES = ('auto', 'off')

# Region-based live-range analysis in XLA:CPU's copy insertion: without it, the donated state's Adam
# moments are copied on every step (the write of a new moment and the update that reads the old one are
# not ordered by a data dependence). Only buffer assignment changes: the arithmetic is bit for bit the same.
# Library-fusion options are left at XLA's default: both alternatives tried changed what the dcgan computes
# (YNNPACK reductions on an Intel Xeon with AMX; no YNNPACK fusions on an 8-device mesh, G's gradients by
# ~1 % of their largest value), for at most 5 % of step time (benchmarks/RESULTS.md).
COMPILER_OPTIONS = {'xla_cpu_copy_insertion_use_region_analysis': True}


def is_active(config: ml_collections.ConfigDict, platform: str | None = None) -> bool:
  """Whether the fast path applies to a run of `config` on `platform` (default: jax's default backend)."""
  platform = platform or jax.default_backend()
  return (config.cpu_fast_path == 'auto' and platform == 'cpu'
          and jnp.dtype(config.compute_dtype) == jnp.float32)


def model_layers(config: ml_collections.ConfigDict, platform: str | None = None) -> Layers:
  """The layers the models are built with: the fast equivalents where the fast path applies, else flax's."""
  if not is_active(config, platform):
    return Layers()
  from aigc_jax.cpu import layers  # pylint: disable=g-import-not-at-top  (only where it runs)
  return Layers(conv=layers.Conv, conv_transpose=layers.ConvTranspose, dropout=layers.Dropout)


def compiler_options(config: ml_collections.ConfigDict, platform: str) -> dict[str, bool | str]:
  """The fast path's options for compiling the train step of `config` on `platform` (none where it does
  not apply)."""
  return dict(COMPILER_OPTIONS) if is_active(config, platform) else {}
