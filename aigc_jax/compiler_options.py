"""XLA compiler options for the train step, per platform and model, from `config.xla_cpu_library_fusions`.

On CPU the step is always compiled with `CPU_COPY_INSERTION_OPTION`: XLA's copy insertion then orders reads
and in-place writes by region-based live-range analysis. Without it, XLA:CPU copies every Adam moment
buffer (and some parameters) of the donated state each step: the fusion writing the new moment into its
donated buffer and the parameter-update fusion, which recomputes the moment from the old one, are not
ordered by a data dependence, so the old buffer is copied first. On the mlp at batch 128 (simultaneous)
that is 29 copies, 4.0 M floats a step; with the option, none, and the step went 8.4 -> 7.9 ms (in-process
A/B, 150 rounds; alternating 9.9 -> 9.3 ms; dcgan b256 alternating 287 -> 274 ms, 12 rounds).

XLA:CPU hands some op kinds to YNNPACK "library fusions" and compiles the rest itself (convolutions then
run on Eigen's kernels). Which is faster depends on the model, so the setting is per compiled program (an
option of `.compile()`, not the process-wide `XLA_FLAGS`); train.py and the benchmark compile the step the
same way.

`config.xla_cpu_library_fusions`: 'auto' applies `AUTO_CPU_LIBRARY_FUSIONS[config.model]` where the model
has an entry, XLA's default library fusions otherwise; 'xla' always XLA's default library fusions. Off CPU
nothing changes.

Only models whose train step is tested to compute the same with and without their entry get one
(tests/test_compiler_options.py): the option is experimental in XLA, and with jax 0.10.2 its `dot` fusion
computes garbage for a matmul whose operand is a broadcast constant (`x @ jnp.ones((k, n))`, same test
file). That is also why arbitrary lists are not accepted here.
"""
import ml_collections

SETTINGS = ('auto', 'xla')
# Measured on the 2-core dev VM (benchmarks/RESULTS.md), fp32: with XLA:CPU's convolutions, handing dots and
# reduces to YNNPACK took the dcgan b256 step ~470 -> ~430 ms. Since the dcgan runs every convolution as
# matmuls (models/dcgan.py), reduces alone are faster: Eigen runs the Winograd products' batched dots at up
# to 450 GFLOP/s where YNNPACK's fusions ran them at 120-170; in-process A/B, alternating 328 -> 316 ms,
# simultaneous 257 -> 250 / 279 -> 279 ms, 15 ms less CPU time per step each time. The mlp (no
# convolutions) was ~6 % slower with dots and reduces, and has no entry.
AUTO_CPU_LIBRARY_FUSIONS = {'dcgan': ('reduce',)}
_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
CPU_COPY_INSERTION_OPTION = {'xla_cpu_copy_insertion_use_region_analysis': True}


def cpu_library_fusion_option(kinds: tuple[str, ...]) -> dict[str, str]:
  """The compiler option that hands exactly `kinds` (dot, eltwise, reduce, ...) to YNNPACK."""
  return {_OPTION: ','.join(f'LIBRARY_FUSION_TYPE_{kind.upper()}' for kind in kinds)}


def train_step_compiler_options(config: ml_collections.ConfigDict, platform: str) -> dict[str, str | bool] | None:
  """The `compiler_options` for `jax.jit(...).lower(...).compile()` of the train step; None for XLA's."""
  if platform != 'cpu':
    return None
  if config.xla_cpu_library_fusions != 'auto' or config.model not in AUTO_CPU_LIBRARY_FUSIONS:
    return dict(CPU_COPY_INSERTION_OPTION)
  return {**CPU_COPY_INSERTION_OPTION, **cpu_library_fusion_option(AUTO_CPU_LIBRARY_FUSIONS[config.model])}
