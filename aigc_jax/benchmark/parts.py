"""Which parts of the CPU fast path pay for themselves: `python -m aigc_jax.benchmark parts`.

One process compiles the train step of one config several ways: with the whole fast path (`aigc_jax/cpu`),
with one of its parts swapped back for flax's layer or XLA's own convolution, and with no fast path. The
variants then take turns, round after round, each timing `benchmark.timed_steps` steps per round
(synchronised after each), so that a slow spell of the machine touches all of them alike. A variant's
figure is its step time divided by the whole fast path's in the same round, as the median over rounds
with the smallest and largest: above 1, the part that the variant takes out pays for itself.

  python -m aigc_jax.benchmark parts --config=configs/benchmark.py --config.benchmark.image_shape='(28,28,1)' \\
      [--rounds=10] [--variants=fast_path,no_winograd,off] [--results=FILE]

Every variant computes the same function with the same parameters (tests/test_cpu_fast_path.py); only
the time differs. Models built without `Layers` (mlp, the ResNets) have two variants: the fast path (its
compiler options) and none.
"""
import contextlib
import datetime
import platform
import statistics
import time
from typing import Any, Iterator
from unittest import mock

import jax

from aigc_jax import compile as compile_lib
from aigc_jax import cpu, families, models
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax.benchmark import measure
from aigc_jax.config_errors import ConfigError
from aigc_jax.models.layers import Layers

# name -> what the variant computes differently from the whole fast path.
VARIANTS = {
    'fast_path': 'the whole fast path',
    'flax_conv': "flax's Conv in place of the fast path's",
    'flax_conv_transpose': "flax's ConvTranspose in place of the fast path's",
    'flax_dropout': "flax's Dropout (32 random bits per unit) in place of the fast path's",
    'no_winograd': "XLA's convolution where the fast path's layers use Winograd",
    'flax_layers': "flax's layers, with the fast path's compiler options",
    'off': 'no fast path: flax\'s layers and XLA\'s default options (cpu_fast_path=off)',
}
# Variants for models that take no `Layers`: only the compiler options differ.
UNLAYERED_VARIANTS = ('fast_path', 'off')
_FLAX_PARTS = {'flax_conv': ('conv',), 'flax_conv_transpose': ('conv_transpose',), 'flax_dropout': ('dropout',),
               'flax_layers': Layers._fields}


def allowed_variants(config) -> tuple[str, ...]:
  """The variants that differ for `config.model.name`."""
  layered = config.model.name in models.LAYERED_FAMILIES or config.model.name in models.VAE_FAMILIES
  return tuple(VARIANTS) if layered else UNLAYERED_VARIANTS


@contextlib.contextmanager
def _building(variant: str) -> Iterator[None]:
  """While models are built and traced: the fast path's layers with `variant`'s part swapped out.

  The fast path has one switch for users (`config.cpu_fast_path`); its parts are taken out here, in this
  measurement only, by replacing the function that picks them."""
  from aigc_jax.cpu import layers as fast  # pylint: disable=g-import-not-at-top  (CPU only)
  with contextlib.ExitStack() as stack:
    if variant in _FLAX_PARTS:
      pick_layers, flax_layers = cpu.model_layers, Layers()
      stack.enter_context(mock.patch.object(cpu, 'model_layers', lambda config, platform=None: pick_layers(
          config, platform)._replace(**{part: getattr(flax_layers, part) for part in _FLAX_PARTS[variant]})))
    elif variant == 'no_winograd':
      stack.enter_context(mock.patch.object(fast, 'stride1_conv_for', lambda *args: None))
    yield


def _cpu_model() -> str:
  """The host CPU as /proc/cpuinfo names it, with its family, model and vector units: the fast path's
  speed depends on them (an AMD Zen 3 and Zen 4 share one name)."""
  try:
    with open('/proc/cpuinfo') as f:
      fields = dict(line.split(':', 1) for line in f.read().split('\n\n')[0].splitlines() if ':' in line)
  except OSError:
    return platform.processor() or 'unknown'
  fields = {key.strip(): value.strip() for key, value in fields.items()}
  flags = set(fields.get('flags', '').split())
  units = [name for name, flag in (('AVX2', 'avx2'), ('AVX-512', 'avx512f'), ('AMX', 'amx_tile')) if flag in flags]
  return (f"{fields.get('model name', 'unknown')} (family {fields.get('cpu family', '?')}, model "
          f"{fields.get('model', '?')}; {', '.join(units) or 'no AVX2'})")


def check(config, variants: list[str] | None) -> tuple[Any, Any, list[str]]:
  """(training config, benchmark block, variants to run), or ConfigError naming what cannot be measured."""
  if 'benchmark' in config and not config.benchmark.image_shape:
    raise ConfigError('parts times synthetic batches of a given shape; set config.benchmark.image_shape, '
                      "e.g. --config.benchmark.image_shape='(28,28,1)'")
  training, bench = measure.split_config(config)
  if not cpu.is_active(training):
    raise ConfigError(f'parts measures the CPU fast path, which does not apply to this run (backend '
                      f'{jax.default_backend()}, compute_dtype {training.compute_dtype}, cpu_fast_path '
                      f'{training.cpu_fast_path}); allowed: a CPU, float32, cpu_fast_path=auto')
  allowed = allowed_variants(training)
  variants = variants or list(allowed)
  unknown = [name for name in variants if name not in allowed]
  if unknown:
    raise ConfigError(f'--variants: {unknown[0]!r} is not a variant of model {training.model.name!r}; allowed: '
                      f'{", ".join(allowed)}')
  return training, bench, ['fast_path'] + [name for name in dict.fromkeys(variants) if name != 'fast_path']


def measure_parts(config, variants: list[str] | None, rounds: int) -> list[dict[str, Any]]:
  """Compiles and times each variant (see the module docstring); one result record per variant."""
  config, bench, variants = check(config, variants)
  image_shape = tuple(bench.image_shape)
  mesh = sharding_lib.mesh_from_config(config)
  init_rng, train_rng, data_rng = jax.random.split(jax.random.key(config.seed), 3)
  batch_shapes = families.global_batch_shapes(config, image_shape)
  batch = measure.synthetic_batch(batch_shapes, sharding_lib.batch_sharding(mesh), data_rng)
  train_rng = sharding_lib.put_replicated(train_rng, mesh)

  steps, states, compile_s = {}, {}, {}
  for variant in variants:
    variant_config = config.copy_and_resolve_references()
    if variant == 'off':
      variant_config.cpu_fast_path = 'off'
    with _building(variant):
      try:
        family = families.create(variant_config, image_shape, bench.num_classes)
      except ValueError as e:
        raise ConfigError(f'config.model.name={config.model.name!r} cannot be built for images of {image_shape}: '
                          f'{e}') from None
      init_state, abstract_state = state_lib.initializer_from_config(variant_config, mesh, family.init_state)
      steps[variant], compile_s[variant] = compile_lib.compile_train_step(
          variant_config, family.train_step, abstract_state, batch_shapes, mesh)
    state = init_state(init_rng)
    for _ in range(bench.warmup_steps):
      state, _ = steps[variant](state, batch, train_rng)
    states[variant] = jax.block_until_ready(state)

  seconds = {variant: [] for variant in variants}  # per round: the median of its timed steps
  for round_index in range(rounds):
    shift = round_index % len(variants)  # each variant takes each place in the order in turn
    for variant in variants[shift:] + variants[:shift]:
      times = []
      for _ in range(bench.timed_steps):
        start = time.perf_counter()
        states[variant], _ = steps[variant](states[variant], batch, train_rng)
        jax.block_until_ready(states[variant])
        times.append(time.perf_counter() - start)
      seconds[variant].append(statistics.median(times))

  device = jax.local_devices()[0]
  common = {'model': config.model.name, 'batch_size': config.batch_size,
            'width_multiplier': config.model.width_multiplier, 'image_shape': list(image_shape),
            'gan_update': config.gan.update_scheme, 'rounds': rounds, 'timed_steps': bench.timed_steps,
            'label': bench.label, 'device_kind': device.device_kind, 'device_count': jax.device_count(),
            'cpu': _cpu_model(), 'jax_version': jax.__version__,
            'time': datetime.datetime.now(datetime.timezone.utc).isoformat()}
  records = []
  for variant in variants:
    ratios = [mine / whole for mine, whole in zip(seconds[variant], seconds['fast_path'])]
    records.append({**common, 'variant': variant, 'what': VARIANTS[variant],
                    'step_ms': statistics.median(seconds[variant]) * 1e3,
                    'step_ms_per_round': [s * 1e3 for s in seconds[variant]],
                    'ratio_to_fast_path': statistics.median(ratios), 'ratio_min': min(ratios),
                    'ratio_max': max(ratios), 'compile_s': compile_s[variant]})
  return records


def format_table(records: list[dict[str, Any]]) -> str:
  """The records as a Markdown table, one row per variant."""
  first = records[0]
  lines = [f"{first['model']} b{first['batch_size']} x{first['width_multiplier']:g}, {first['device_count']} x "
           f"{first['device_kind']} ({first['cpu']}), {first['rounds']} rounds of {first['timed_steps']} step(s)",
           '',
           '| variant | what it changes | step ms (median of rounds) | x the fast path (median, min-max) | compile s |',
           '| --- | --- | --- | --- | --- |']
  for r in records:
    lines.append(f"| {r['variant']} | {r['what']} | {r['step_ms']:.1f} | {r['ratio_to_fast_path']:.3f} "
                 f"({r['ratio_min']:.3f}-{r['ratio_max']:.3f}) | {r['compile_s']:.1f} |")
  return '\n'.join(lines) + '\n'
