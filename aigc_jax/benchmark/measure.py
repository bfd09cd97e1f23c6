"""Measuring one train step's throughput: `measure(config)` returns the result record that
`python -m aigc_jax.benchmark` appends to its results file.

Modes (`config.benchmark.mode`): `synthetic` feeds one batch already on the devices, so only the step is
timed; `pipeline` takes every batch from the real input pipeline (tf.data -> host -> devices), end to end,
after timing the input pipeline alone (tf.data to host numpy, one process), so a data bottleneck shows as
pipeline images/s below the step's images/s. In synthetic mode with `config.benchmark.image_shape` set,
the dataset is never read and neither TensorFlow nor TFDS is imported: the benchmark then needs only jax,
flax, optax, numpy, absl and ml_collections, as in a bare GPU container.

Timing, two ways, after `warmup_steps` untimed steps:
- per step: each of `timed_steps` steps is timed alone, blocking until the new train state is ready
  (`jax.block_until_ready`), so a step time is dispatch + compute (+ input in pipeline mode) with no overlap
  from the step before; we report the median, the 90th percentile and the fastest. MFU uses the median.
- windowed: `timed_steps` steps dispatched back to back and synchronised once at the end, as the training
  loop runs them (it fetches metrics a step late and never blocks); `window_images_per_sec` is the
  throughput a run actually gets, where the host's dispatch overlaps the devices' compute.
MFU = analytic model FLOP/s per device (`flops.py`) / peak FLOP/s per device (`PEAK_TFLOPS`, or on CPU
a large matmul timed at start-up, or `config.benchmark.peak_tflops_per_device`).
"""
import datetime
import json
import os
import platform
import socket
import statistics
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp

from aigc_jax import compile as compile_lib
from aigc_jax import config_checks, cpu, families, flops, gan_steps
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax.config_errors import ConfigError
MODES = ('synthetic', 'pipeline')
BENCHMARK_FIELDS = {
    'mode': ((str,), lambda v: v in MODES, ', '.join(MODES)),
    'warmup_steps': ((int,), lambda v: v >= 1, 'an integer >= 1'),
    'timed_steps': ((int,), lambda v: v >= 1, 'an integer >= 1'),
    'pipeline_batches': ((int,), lambda v: v >= 0, 'an integer >= 0 (0 = do not time the pipeline alone)'),
    'peak_tflops_per_device': ((int, float), lambda v: v >= 0, 'a number >= 0 (0 = table or measured GEMM)'),
    'gemm_size': ((int,), lambda v: v >= 64, 'an integer >= 64'),
    'label': ((str,), None, 'any text'),
    'image_shape': ((tuple, list), lambda v: len(v) == 0 or (len(v) == 3 and all(type(d) is int and d > 0 for d in v)),
                    "() (the dataset's) or (height, width, channels)"),
    'num_classes': ((int,), lambda v: v >= 0, "an integer >= 0 (synthetic data with image_shape: class count)"),
}

# Dense peak TFLOP/s per device (TPU chip or GPU) from the vendors' data sheets, by compute dtype. float32
# matmuls run as one bf16 pass on TPU and as TF32 on these GPUs under XLA's default precision, so their
# float32 peak is the bf16 (TPU) or TF32 (GPU) figure. H100/H200 are the SXM parts. Ordered: the first
# name contained in `device_kind` wins ('TPU v5 lite' before 'TPU v5').
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    'TPU v6 lite': {'bfloat16': 918.0, 'float32': 918.0},  # v6e (Trillium)
    'TPU v6e': {'bfloat16': 918.0, 'float32': 918.0},
    'TPU v5 lite': {'bfloat16': 197.0, 'float32': 197.0},  # v5e
    'TPU v5e': {'bfloat16': 197.0, 'float32': 197.0},
    'TPU v5p': {'bfloat16': 459.0, 'float32': 459.0},
    'TPU v5': {'bfloat16': 459.0, 'float32': 459.0},
    'TPU v4': {'bfloat16': 275.0, 'float32': 275.0},
    'H200': {'bfloat16': 989.0, 'float32': 494.7},
    'H100': {'bfloat16': 989.0, 'float32': 494.7},
    'A100': {'bfloat16': 312.0, 'float32': 156.0},
}


def table_peak_tflops(device_kind: str, dtype: str) -> float | None:
  """The data-sheet peak for `device_kind`, or None if it is not in the table (e.g. CPU)."""
  for name, peaks in PEAK_TFLOPS.items():
    if name.lower() in device_kind.lower():
      return peaks[dtype]
  return None


def measure_gemm_tflops(size: int, dtype: str, repeats: int = 5, warmup_s: float = 0.5) -> float:
  """TFLOP/s of a jitted `size`x`size` matmul on one device: the best of `repeats` after a warm-up of at
  least two calls and `warmup_s` seconds (right after start-up a CPU's first calls can run at half speed)."""
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
  b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32).astype(dtype)
  matmul = jax.jit(jnp.dot)
  start, calls = time.perf_counter(), 0
  while calls < 2 or time.perf_counter() - start < warmup_s:
    jax.block_until_ready(matmul(a, b))
    calls += 1
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    best = min(best, time.perf_counter() - start)
  return 2 * size ** 3 / best / 1e12


def needs_dataset(config) -> bool:
  """Whether measuring `config` reads the dataset: in pipeline mode, and in synthetic mode unless
  `benchmark.image_shape` gives the images' shape (then TensorFlow and TFDS are never imported)."""
  return config.benchmark.mode == 'pipeline' or not config.benchmark.image_shape


def split_config(config) -> tuple[Any, Any]:
  """Validates the config; returns (training config without the benchmark block, the benchmark block)."""
  if 'benchmark' not in config:
    raise ConfigError('config has no benchmark block; start from configs/benchmark.py')
  config_checks.validate_fields(config.benchmark, BENCHMARK_FIELDS, prefix='config.benchmark.',
                                start_from='configs/benchmark.py')
  training = config.copy_and_resolve_references()
  with training.unlocked():
    del training['benchmark']
  config_checks.validate(training, device_count=jax.device_count(), process_count=jax.process_count(),
                         check_dataset=needs_dataset(config))
  return training, config.benchmark


def _percentile(values: list[float], q: float) -> float:
  ordered = sorted(values)
  return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_steps(step, state, batches: Iterator, rng, *, warmup: int, timed: int) -> tuple[list[float], float]:
  """`(per_step, window)`: seconds of each of `timed` steps synchronised on its own, then seconds of
  `timed` more steps dispatched back to back and synchronised once (after `warmup` untimed steps)."""
  for _ in range(warmup):
    state, _ = step(state, next(batches), rng)
  jax.block_until_ready(state)
  seconds = []
  for _ in range(timed):
    start = time.perf_counter()
    state, _ = step(state, next(batches), rng)
    jax.block_until_ready(state)
    seconds.append(time.perf_counter() - start)
  start = time.perf_counter()
  for _ in range(timed):
    state, _ = step(state, next(batches), rng)
  jax.block_until_ready(state)
  return seconds, time.perf_counter() - start


def time_input_pipeline(dataset, batch_images: int, num_batches: int) -> float:
  """Images/s of the tf.data pipeline alone, to host numpy (this process), after a short warm-up."""
  iterator = dataset.as_numpy_iterator()
  for _ in range(3):
    next(iterator)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(iterator)
  return num_batches * batch_images / (time.perf_counter() - start)


def synthetic_batch(batch_shapes: dict[str, jax.ShapeDtypeStruct], sharding, rng: jax.Array) -> dict[str, jax.Array]:
  """One global batch of `batch_shapes`, laid out with `sharding`: uniform images in [-1, 1], labels 0."""
  make_batch = jax.jit(
      lambda rng: {'image': jax.random.uniform(rng, batch_shapes['image'].shape, minval=-1.0, maxval=1.0),
                   'label': jnp.zeros(batch_shapes['label'].shape, jnp.int32)},
      out_shardings=sharding)
  return jax.block_until_ready(make_batch(rng))


def _xla_flops(compiled) -> float | None:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
    analysis = analysis[0] if analysis else None
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def _memory(compiled, device) -> tuple[int | None, int | None]:
  """(peak bytes in use on `device` from its allocator, or None where it keeps no statistics (CPU);
  the compiled step's own estimate: arguments + outputs + temporaries - donated aliases)."""
  stats = device.memory_stats() or {}
  analysis = compiled.memory_analysis()
  estimate = None
  if analysis is not None:
    estimate = int(analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                   + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)
  return stats.get('peak_bytes_in_use'), estimate


def measure(config) -> dict[str, Any]:
  """Builds, compiles and times the train step described by `config`; returns the result record."""

  with_data = needs_dataset(config)
  config, bench = split_config(config)
  device = jax.local_devices()[0]
  dtype = config.compute_dtype
  # Peak first, on a quiet machine: the GEMM shares the host with nothing else of ours yet.
  peak, peak_source = bench.peak_tflops_per_device, 'config'
  if not peak:
    peak, peak_source = table_peak_tflops(device.device_kind, dtype), 'table'
  if not peak and device.platform == 'cpu':
    peak, peak_source = measure_gemm_tflops(bench.gemm_size, dtype), f'measured {bench.gemm_size}^2 GEMM'

  if with_data:
    from aigc_jax import input_pipeline  # pylint: disable=g-import-not-at-top  (TensorFlow, TFDS)
    from aigc_jax.train import prepare_data_and_models  # pylint: disable=g-import-not-at-top
    builder, info, family = prepare_data_and_models(config)
    image_shape, dataset_name = info.image_shape, info.name
  else:
    image_shape, dataset_name = tuple(bench.image_shape), 'synthetic'
    try:
      family = families.create(config, image_shape, bench.num_classes)
    except ValueError as e:
      raise ConfigError(f'config.model.name={config.model.name!r} cannot be built for images of {image_shape}: '
                        f'{e}') from None
  mesh = sharding_lib.mesh_from_config(config)
  batch_sharding = sharding_lib.batch_sharding(mesh)
  init_rng, train_rng, data_rng = jax.random.split(jax.random.key(config.seed), 3)
  init_state, abstract_state = state_lib.initializer_from_config(config, mesh, family.init_state)
  batch_shapes = families.global_batch_shapes(config, image_shape)
  train_rng = sharding_lib.put_replicated(train_rng, mesh)

  # The same step, compiled the same way, as `train.py` runs it.
  step, compile_s = compile_lib.compile_train_step(config, family.train_step, abstract_state, batch_shapes, mesh)

  pipeline_rate = None
  if with_data:
    dataset = input_pipeline.create_train_dataset(config, builder, process_index=jax.process_index(),
                                                  process_count=jax.process_count())
  if with_data and bench.pipeline_batches:
    pipeline_rate = time_input_pipeline(dataset, config.gan.n_critic * config.batch_size // jax.process_count(),
                                        bench.pipeline_batches)
  if bench.mode == 'synthetic':
    batch = synthetic_batch(batch_shapes, batch_sharding, data_rng)
    batches = iter(lambda: batch, None)
  else:
    batches = input_pipeline.global_batches(iter(dataset.as_numpy_iterator()), batch_sharding, batch_shapes)
  seconds, window_s = time_steps(step, init_state(init_rng), batches, train_rng, warmup=bench.warmup_steps,
                                 timed=bench.timed_steps)

  step_s = statistics.median(seconds)
  devices = jax.device_count()
  model_flops = flops.train_step_flops(config, image_shape)
  xla_flops = _xla_flops(step)
  model_tflops = model_flops / step_s / devices / 1e12
  peak_bytes, compiled_bytes = _memory(step, device)
  return {
      'model': config.model.name, 'batch_size': config.batch_size, 'width_multiplier': config.model.width_multiplier,
      'compute_dtype': dtype, 'n_critic': config.gan.n_critic, 'mode': bench.mode, 'dataset': dataset_name,
      'gan_update': config.gan.update_scheme if family.kind == 'gan' else None,
      # The GAN techniques and the parameter layout: their extra passes are not in the analytic FLOPs.
      'techniques': gan_steps.techniques_from_config(config)._asdict() if family.kind == 'gan' else None,
      'fsdp_devices': config.fsdp_devices,
      'param_sharding': config.param_sharding,
      'image_shape': list(image_shape), 'label': bench.label,
      'platform': device.platform, 'device_kind': device.device_kind, 'device_count': devices,
      'process_count': jax.process_count(), 'host': socket.gethostname(), 'jax_version': jax.__version__,
      'python': platform.python_version(),
      # Whether glibc's malloc was started asking for transparent huge pages (launch/README.md).
      'malloc_huge_pages': 'glibc.malloc.hugetlb=1' in os.environ.get('GLIBC_TUNABLES', '').split(':'),
      'compiler_options': compile_lib.compiler_options(config, device.platform),
      'cpu_fast_path': cpu.is_active(config, device.platform), 'time': datetime.datetime.now(datetime.timezone.utc).isoformat(),
      'compile_s': compile_s, 'warmup_steps': bench.warmup_steps, 'timed_steps': bench.timed_steps,
      'timing': 'per-step: block_until_ready(state) after every step; window: one sync after timed_steps',
      'step_ms': step_s * 1e3, 'step_ms_p90': _percentile(seconds, 0.9) * 1e3, 'step_ms_min': min(seconds) * 1e3,
      'images_per_sec': config.batch_size / step_s, 'images_per_sec_per_device': config.batch_size / step_s / devices,
      'window_step_ms': window_s / bench.timed_steps * 1e3,
      'window_images_per_sec': config.batch_size * bench.timed_steps / window_s,
      # D updates see n_critic batches per step; images/s counts the batch of one update, like the targets.
      'pipeline_images_per_sec': pipeline_rate,
      'model_flops_per_step': model_flops,
      # The compiled program is the per-device one under SPMD: its FLOPs are one device's share.
      'xla_flops_per_step_per_device': xla_flops,
      'model_tflops_per_sec_per_device': model_tflops,
      'xla_tflops_per_sec_per_device': xla_flops / step_s / 1e12 if xla_flops else None,
      'peak_tflops_per_device': peak, 'peak_source': peak_source if peak else None,
      'mfu': model_tflops / peak if peak else None,
      'peak_memory_bytes': peak_bytes, 'compiled_memory_bytes': compiled_bytes,
  }


def append_result(path: str, result: dict[str, Any]) -> None:
  """Appends `result` to the JSON-lines file `path`, creating its folder."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with open(path, 'a') as f:
    f.write(json.dumps(result, sort_keys=True) + '\n')
