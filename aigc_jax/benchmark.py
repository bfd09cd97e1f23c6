"""Train-step throughput benchmark, and a report over results gathered on several machines.

Measure (appends one JSON line to FILE):
  `python -m aigc_jax.benchmark --config=configs/benchmark.py --results=FILE [--config.model=mlp ...]`
Report (writes OUT.md, a markdown table, and OUT.png, a plot):
  `python -m aigc_jax.benchmark report FILE... [--out=benchmarks/report]`

Modes (`config.benchmark.mode`): `synthetic` feeds one batch already on the devices, so only the step is
timed; `pipeline` takes every batch from the real input pipeline (tf.data -> host -> devices), end to end.
In both, the input pipeline alone (tf.data to host numpy, one process) is timed first, so a data bottleneck
shows as pipeline images/s below the step's images/s.

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
if __name__ == '__main__':  # first, before the heavy imports: see host_memory.py
  from aigc_jax import host_memory
  host_memory.reexec_with_huge_pages()

import datetime
import json
import os
import platform
import socket
import statistics
import sys
import time
from typing import Any, Iterator

from absl import app, flags, logging
from ml_collections import config_flags

from aigc_jax import cli, distributed, host_memory

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a benchmark config (configs/benchmark.py).',
                                          lock_config=True)
_RESULTS = flags.DEFINE_string('results', None, 'Append one JSON line per run to this file.')
_OUT = flags.DEFINE_string('out', 'benchmarks/report', '`report` only: writes OUT.md and OUT.png.')

MODES = ('synthetic', 'pipeline')
BENCHMARK_FIELDS = {
    'mode': ((str,), lambda v: v in MODES, ', '.join(MODES)),
    'warmup_steps': ((int,), lambda v: v >= 1, 'an integer >= 1'),
    'timed_steps': ((int,), lambda v: v >= 1, 'an integer >= 1'),
    'pipeline_batches': ((int,), lambda v: v >= 0, 'an integer >= 0 (0 = do not time the pipeline alone)'),
    'peak_tflops_per_device': ((int, float), lambda v: v >= 0, 'a number >= 0 (0 = table or measured GEMM)'),
    'gemm_size': ((int,), lambda v: v >= 64, 'an integer >= 64'),
    'label': ((str,), None, 'any text'),
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
  least two calls and `warmup_s` seconds (on the 2-core CPU VM, right after start-up the first timed calls
  ran at about half speed in 2 of 6 fresh processes after a one-call warm-up: a peak of 0.20 against 0.40
  TFLOP/s, and MFU doubled with it)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
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


def split_config(config) -> tuple[Any, Any]:
  """Validates the config; returns (training config without the benchmark block, the benchmark block)."""
  import jax  # pylint: disable=g-import-not-at-top
  from aigc_jax import config_checks  # pylint: disable=g-import-not-at-top
  if 'benchmark' not in config:
    raise config_checks.ConfigError('config has no benchmark block; start from configs/benchmark.py')
  training = config.copy_and_resolve_references()
  with training.unlocked():
    del training['benchmark']
  config_checks.validate(training, device_count=jax.device_count(), process_count=jax.process_count())
  config_checks.validate_fields(config.benchmark, BENCHMARK_FIELDS, prefix='config.benchmark.',
                                start_from='configs/benchmark.py')
  return training, config.benchmark


def _percentile(values: list[float], q: float) -> float:
  ordered = sorted(values)
  return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_steps(step, state, batches: Iterator, rng, *, warmup: int, timed: int) -> tuple[list[float], float]:
  """`(per_step, window)`: seconds of each of `timed` steps synchronised on its own, then seconds of
  `timed` more steps dispatched back to back and synchronised once (after `warmup` untimed steps)."""
  import jax  # pylint: disable=g-import-not-at-top
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
  import jax  # pylint: disable=g-import-not-at-top
  from aigc_jax import compiler_options, flops, input_pipeline, steps  # pylint: disable=g-import-not-at-top
  from aigc_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from aigc_jax import state as state_lib  # pylint: disable=g-import-not-at-top
  from aigc_jax.train import prepare_data_and_models  # pylint: disable=g-import-not-at-top

  config, bench = split_config(config)
  device = jax.local_devices()[0]
  dtype = config.compute_dtype
  # Peak first, on a quiet machine: the GEMM shares the host with nothing else of ours yet.
  peak, peak_source = bench.peak_tflops_per_device, 'config'
  if not peak:
    peak, peak_source = table_peak_tflops(device.device_kind, dtype), 'table'
  if not peak and device.platform == 'cpu':
    peak, peak_source = measure_gemm_tflops(bench.gemm_size, dtype), f'measured {bench.gemm_size}^2 GEMM'

  builder, info, family = prepare_data_and_models(config)
  mesh = sharding_lib.mesh_from_config(config)
  replicated, batch_sharding = sharding_lib.replicated(mesh), sharding_lib.batch_sharding(mesh)
  init_rng, train_rng, data_rng = jax.random.split(jax.random.key(config.seed), 3)
  init_state, abstract_state = state_lib.initializer_from_config(config, mesh, family.init_state)
  state_shardings = state_lib.shardings_of(abstract_state)
  batch_shapes = input_pipeline.global_batch_shapes(config, info)
  batch_in = {key: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=batch_sharding)
              for key, s in batch_shapes.items()}
  train_rng = sharding_lib.put_replicated(train_rng, mesh)

  # The same step, compiled the same way, as `train.py` runs it.
  start = time.perf_counter()
  step = jax.jit(family.train_step, in_shardings=(state_shardings, batch_sharding, replicated),
                 out_shardings=(state_shardings, replicated), donate_argnums=0
                 ).lower(abstract_state, batch_in, train_rng).compile(
      compiler_options=compiler_options.train_step_compiler_options(config, jax.devices()[0].platform))
  compile_s = time.perf_counter() - start

  dataset = input_pipeline.create_train_dataset(config, builder, process_index=jax.process_index(),
                                                process_count=jax.process_count())
  pipeline_rate = None
  if bench.pipeline_batches:
    pipeline_rate = time_input_pipeline(dataset, config.n_critic * config.batch_size // jax.process_count(),
                                        bench.pipeline_batches)
  if bench.mode == 'synthetic':
    make_batch = jax.jit(
        lambda rng: {'image': jax.random.uniform(rng, batch_shapes['image'].shape, minval=-1.0, maxval=1.0),
                     'label': jax.numpy.zeros(batch_shapes['label'].shape, jax.numpy.int32)},
        out_shardings=batch_sharding)
    batch = jax.block_until_ready(make_batch(data_rng))
    batches = iter(lambda: batch, None)
  else:
    batches = input_pipeline.global_batches(iter(dataset.as_numpy_iterator()), batch_sharding, batch_shapes)
  seconds, window_s = time_steps(step, init_state(init_rng), batches, train_rng, warmup=bench.warmup_steps,
                                 timed=bench.timed_steps)

  step_s = statistics.median(seconds)
  devices = jax.device_count()
  model_flops = flops.train_step_flops(config, info.image_shape)
  xla_flops = _xla_flops(step)
  model_tflops = model_flops / step_s / devices / 1e12
  peak_bytes, compiled_bytes = _memory(step, device)
  return {
      'model': config.model, 'batch_size': config.batch_size, 'width_multiplier': config.width_multiplier,
      'compute_dtype': dtype, 'n_critic': config.n_critic, 'mode': bench.mode, 'dataset': info.name,
      'gan_update': config.gan_update if family.kind == 'gan' else None,
      # The GAN techniques and the parameter layout: their extra passes are not in the analytic FLOPs.
      'techniques': steps.techniques_from_config(config)._asdict() if family.kind == 'gan' else None,
      'fsdp_devices': config.fsdp_devices,
      'param_sharding': config.param_sharding,
      'image_shape': list(info.image_shape), 'label': bench.label,
      'platform': device.platform, 'device_kind': device.device_kind, 'device_count': devices,
      'process_count': jax.process_count(), 'host': socket.gethostname(), 'jax_version': jax.__version__,
      'python': platform.python_version(),
      # Whether malloc asked for transparent huge pages (host_memory.py): ~15 % of a CPU conv step.
      'malloc_huge_pages': host_memory.huge_pages_requested(),
      'compiler_options': compiler_options.train_step_compiler_options(config, device.platform), 'time': datetime.datetime.now(datetime.timezone.utc).isoformat(),
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
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  with open(path, 'a') as f:
    f.write(json.dumps(result, sort_keys=True) + '\n')


# --- Report. ---

_GROUP_KEYS = ('device_kind', 'device_count', 'model', 'compute_dtype', 'mode', 'batch_size', 'width_multiplier')


def load_results(paths: list[str]) -> list[dict[str, Any]]:
  """Every JSON line of every file; raises ValueError naming the file and line of a bad one."""
  results = []
  for path in paths:
    with open(path) as f:
      for number, line in enumerate(f, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f'{path}:{number} is not a JSON line: {e.msg}') from None
        missing = [key for key in _GROUP_KEYS + ('images_per_sec_per_device', 'step_ms') if key not in record]
        if missing:
          raise ValueError(f'{path}:{number} lacks key {missing[0]!r}; is it a benchmark result file?')
        results.append(record)
  return results


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per configuration and label: the run with the median images/s (repeated runs damp a noisy
  machine; `config.benchmark.label` keeps variants such as ablations apart)."""
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for record in results:
    key = (*(record[key] for key in _GROUP_KEYS), _update_of(record), record.get('label') or '')
    groups.setdefault(key, []).append(record)
  rows = []
  for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
    runs = sorted(groups[key], key=lambda r: r['images_per_sec'])
    rows.append({**runs[(len(runs) - 1) // 2], 'runs': len(runs)})
  return rows


def _update_of(record: dict[str, Any]) -> str:
  from aigc_jax.models import VAE_FAMILIES  # pylint: disable=g-import-not-at-top  (flax; measuring imports it)
  # Results written before the option existed are alternating-update GAN steps.
  return record.get('gan_update') or ('-' if record['model'] in VAE_FAMILIES else 'alternating')


def _model_label(record: dict[str, Any]) -> str:
  label = f"{record['model']} (simultaneous)" if _update_of(record) == 'simultaneous' else record['model']
  return f"{label} [{record['label']}]" if record.get('label') else label


def _fmt(value, spec: str) -> str:
  return '-' if value is None else format(value, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
  header = ('| device | model | dtype | mode | batch | width | runs | step ms (median / p90 / min) | img/s | windowed img/s '
            '| img/s/device '
            '| input img/s | compile s | model TFLOP/s/device | XLA TFLOP/s/device | peak TFLOP/s (source) | MFU |')
  lines = [header, '|' + '---|' * (header.count('|') - 1)]
  for r in rows:
    lines.append(
        f"| {r['device_kind']} x{r['device_count']} | {_model_label(r)} | {r['compute_dtype']} | {r['mode']} "
        f"| {r['batch_size']} | {r['width_multiplier']:g} | {r['runs']} "
        f"| {r['step_ms']:.1f} / {r['step_ms_p90']:.1f} / {_fmt(r.get('step_ms_min'), '.1f')} "
        f"| {r['images_per_sec']:.0f} | {_fmt(r.get('window_images_per_sec'), '.0f')} "
        f"| {r['images_per_sec_per_device']:.0f} | {_fmt(r.get('pipeline_images_per_sec'), '.0f')} "
        f"| {_fmt(r.get('compile_s'), '.1f')} | {_fmt(r.get('model_tflops_per_sec_per_device'), '.4f')} "
        f"| {_fmt(r.get('xla_tflops_per_sec_per_device'), '.4f')} "
        f"| {_fmt(r.get('peak_tflops_per_device'), '.3f')} ({r.get('peak_source') or '-'}) "
        f"| {_fmt(r.get('mfu'), '.1%')} |")
  return '\n'.join(lines) + '\n'


def plot(rows: list[dict[str, Any]], path: str) -> None:
  """Two bar charts, images/s per device and MFU, one bar per configuration."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  labels = [f"{r['device_kind']} x{r['device_count']}\n{_model_label(r)} b{r['batch_size']} w{r['width_multiplier']:g} "
            f"{r['compute_dtype']} {r['mode']}" for r in rows]
  kinds = sorted({r['device_kind'] for r in rows})  # one colour per accelerator
  fig, axes = plt.subplots(1, 2, figsize=(14, max(3.0, 0.45 * len(rows) + 1.5)), sharey=True)
  for ax, key, title in ((axes[0], 'images_per_sec_per_device', 'images/s per device'),
                         (axes[1], 'mfu', 'MFU (model FLOP/s / peak)')):
    values = [r.get(key) or 0.0 for r in rows]
    ax.barh(range(len(rows)), values, color=[f'C{kinds.index(r["device_kind"]) % 10}' for r in rows])
    ax.set_title(title)
    ax.grid(axis='x', alpha=0.3)
  axes[0].set_yticks(range(len(rows)), labels, fontsize=7)
  axes[0].invert_yaxis()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def report(paths: list[str], out: str) -> str:
  """Writes OUT.md and OUT.png from result files; returns the markdown table."""
  rows = summarise(load_results(paths))
  if not rows:
    raise ValueError(f'no results in {", ".join(paths)}')
  table = markdown_table(rows)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + '.md', 'w') as f:
    f.write(table)
  plot(rows, out + '.png')
  return table


# --- Entry point. ---

def _is_report(argv: list[str]) -> bool:
  positional = [arg for arg in argv[1:] if not arg.startswith('-')]
  return positional[:1] == ['report']


def parse_flags(argv: list[str]) -> list[str]:
  """The shared one-line flag errors; `--config` is needed to measure, not to report."""
  remaining = cli.parse_flags(argv, None if _is_report(argv) else _CONFIG, example='configs/benchmark.py')
  try:
    distributed.check(distributed.settings_from_flags())
  except distributed.DistributedError as e:
    cli.fail(str(e))
  return remaining


def main(argv: list[str]) -> None:
  if argv[1:2] == ['report']:
    if len(argv) < 3:
      cli.fail('report needs result files: python -m aigc_jax.benchmark report FILE...')
    missing = [path for path in argv[2:] if not os.path.isfile(path)]
    if missing:
      cli.fail(f'no such result file: {missing[0]}')
    try:
      print(report(argv[2:], _OUT.value), end='')
    except ValueError as e:
      cli.fail(str(e))
    return
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}; allowed: none to measure, or `report FILE...`')
  if not _RESULTS.value:
    cli.fail('--results is required, e.g. --results=benchmarks/results/cpu.jsonl')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')  # tf.data only feeds the host
  try:  # a multi-process benchmark (e.g. a pod slice), as for training: see aigc_jax/distributed.py
    distributed.initialize(distributed.settings_from_flags())
  except distributed.DistributedError as e:
    cli.fail(str(e))
  import jax  # pylint: disable=g-import-not-at-top
  from aigc_jax.config_checks import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    result = measure(_CONFIG.value)
  except ConfigError as e:
    cli.fail(str(e))
  if jax.process_index() != 0:
    return  # process 0 reports for the whole run
  append_result(_RESULTS.value, result)
  logging.info('result: %s', json.dumps(result, sort_keys=True))
  print(json.dumps(result, sort_keys=True), file=sys.stdout)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
