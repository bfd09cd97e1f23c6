"""A pod-scale plan read off the compiled train step: memory, FLOPs and collective traffic per device, and
a roofline estimate of step time and MFU on a named chip. What to run before booking a pod.

  python -m aigc_jax.benchmark plan --config=configs/biggan_imagenet128.py --devices=256 --chip=tpu_v5p

The real train step is compiled for a mesh of `--devices` fake CPU devices laid out as the config asks
(`fsdp_devices`, `param_sharding`), with flax's own layers (the CPU fast path is off: the plan is of the
accelerator program). From the compiled per-device program:
- memory: arguments (the train state and batch shard), outputs, temporaries, and the peak they need
  together (donated state aliased), from XLA's memory analysis;
- FLOPs, and bytes of memory traffic, from XLA's cost analysis;
- collectives: every all-reduce, all-gather, reduce-scatter, all-to-all and collective-permute in the HLO,
  with the bytes each device sends for it on a ring (all-reduce 2(n-1)/n of its payload, all-gather and
  reduce-scatter (n-1)/n of the gathered size, all-to-all (n-1)/n, permute all of it).

Roofline: compute time = FLOPs / peak, memory time = bytes / HBM bandwidth, network time = bytes sent /
one direction of the chip's interconnect (GPUs beyond one node: the per-GPU network). The estimate is the
largest of the three (perfect overlap); the sum of the three is the bound with no overlap. MFU = the
analytic model FLOPs per device (`flops.py`) / (estimated step time x peak). Caveats: XLA:CPU's program
fuses and rematerialises differently from an accelerator's, so memory traffic and temporaries are
estimates; FLOPs and collective payloads depend on the algorithm and sharding and carry over.
"""
import dataclasses
import math
import re
from typing import Any

# Per chip. Sources:
#   TPU: Cloud TPU system architecture pages, docs.cloud.google.com/tpu/docs/{v5e,v5p,v6e} ("peak compute
#     per chip (bf16)", "HBM capacity / bandwidth per chip", "bidirectional ICI bandwidth per chip").
#   H100 / H200 SXM: NVIDIA H100 and H200 Tensor Core GPU data sheets (BF16 dense = half the sparse figure,
#     HBM, NVLink 900 GB/s bidirectional); across nodes one 400 Gb/s NDR InfiniBand port per GPU (DGX H100
#     / H200 user guides). A100 SXM 80GB: NVIDIA A100 data sheet, NVLink 600 GB/s, 200 Gb/s HDR per GPU
#     (DGX A100 user guide).
@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  peak_tflops: float           # dense bf16
  hbm_gib: float
  hbm_gbps: float              # GB/s
  interconnect_gbps: float     # GB/s, bidirectional, per chip: ICI (TPU) or NVLink (GPU)
  node_size: int = 0           # GPUs per NVLink domain; 0: the whole slice is on the interconnect (TPU)
  network_gbps: float = 0.0    # GB/s per GPU, one direction, between nodes


CHIPS: dict[str, Chip] = {
    'tpu_v5e': Chip('TPU v5e', 197.0, 16.0, 819.0, 400.0),
    'tpu_v5p': Chip('TPU v5p', 459.0, 95.0, 2765.0, 1200.0),
    'tpu_v6e': Chip('TPU v6e', 918.0, 32.0, 1638.0, 800.0),
    'h100': Chip('H100 SXM', 989.0, 80.0, 3350.0, 900.0, node_size=8, network_gbps=50.0),
    'h200': Chip('H200 SXM', 989.0, 141.0, 4800.0, 900.0, node_size=8, network_gbps=50.0),
    'a100': Chip('A100 SXM 80GB', 312.0, 80.0, 2039.0, 600.0, node_size=8, network_gbps=25.0),
}

# (height, width, channels, classes) of the datasets the configs name, so a plan needs no data.
KNOWN_DATASETS = {
    'mnist5k': (28, 28, 1, 10), 'mnist': (28, 28, 1, 10), 'fashion_mnist': (28, 28, 1, 10),
    'cifar10': (32, 32, 3, 10), 'imagenet2012': (0, 0, 3, 1000), 'celeb_a': (218, 178, 3, 0),
}

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all', 'collective-permute')
_DTYPE_BYTES = {'pred': 1, 's8': 1, 'u8': 1, 'f16': 2, 'bf16': 2, 's16': 2, 'u16': 2, 'f32': 4, 's32': 4,
                'u32': 4, 'f64': 8, 's64': 8, 'u64': 8, 'c64': 8, 'c128': 16}
_SHAPE = re.compile(r'\b(' + '|'.join(_DTYPE_BYTES) + r')\[([0-9,]*)\]')
# `%name = SHAPE-OR-TUPLE op(` on one HLO instruction line; async pairs are counted at their -start.
_INSTRUCTION = re.compile(r'=\s*(\(.*?\)|\S+)\s+(' + '|'.join(COLLECTIVES) + r')(-start)?\(')


class PlanError(ValueError):
  """A plan that cannot be made as asked; the message is one line."""


def _bytes_of(shapes: str) -> int:
  return sum(_DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(',') if d)
             for dtype, dims in _SHAPE.findall(shapes))


def _group_size(line: str, devices: int) -> int:
  """Devices in each replica group of a collective's HLO line."""
  iota = re.search(r'replica_groups=\[(\d+),(\d+)\]<=', line)
  if iota:
    return int(iota.group(2))
  explicit = re.search(r'replica_groups=\{\{([0-9,]*)\}', line)
  if explicit and explicit.group(1):
    return len(explicit.group(1).split(','))
  pairs = re.search(r'source_target_pairs=\{(.*?)\}\}?', line)
  if pairs:
    return 2
  return devices  # empty groups: every device


@dataclasses.dataclass
class Collective:
  kind: str
  count: int = 0
  payload_bytes: int = 0       # result size summed over instructions (the gathered size for all-gather)
  sent_bytes: float = 0.0      # per device, on a ring


def collectives_of(hlo_text: str, devices: int) -> dict[str, Collective]:
  """Every collective of a compiled program's HLO, by kind, with the bytes one device sends for it."""
  found = {kind: Collective(kind) for kind in COLLECTIVES}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.search(line)
    if not match:
      continue
    kind = match.group(2)
    result = match.group(1)
    if match.group(3):  # async start: (operands..., results...) tuple; the results are the second half
      shapes = _SHAPE.findall(result)
      result = ' '.join(f'{d}[{s}]' for d, s in shapes[len(shapes) // 2:])
    size = _bytes_of(result)
    n = _group_size(line, devices)
    if kind == 'all-reduce':
      sent = 2 * (n - 1) / n * size
    elif kind == 'reduce-scatter':
      sent = (n - 1) * size           # the result is one of n shards
    elif kind in ('all-gather', 'all-to-all'):
      sent = (n - 1) / n * size
    else:
      sent = size
    entry = found[kind]
    entry.count += 1
    entry.payload_bytes += size
    entry.sent_bytes += sent if n > 1 else 0.0
  return found


def roofline(chip: Chip, devices: int, flops: float, memory_bytes: float, sent_bytes: float) -> dict[str, float]:
  """Seconds of compute, memory traffic and network per step on `chip`, and the estimates from them."""
  if chip.node_size and devices > chip.node_size:
    link = chip.network_gbps
  else:
    link = chip.interconnect_gbps / 2
  times = {'compute_s': flops / (chip.peak_tflops * 1e12), 'memory_s': memory_bytes / (chip.hbm_gbps * 1e9),
           'network_s': sent_bytes / (link * 1e9)}
  return {**times, 'step_s': max(times.values()), 'step_s_no_overlap': sum(times.values()),
          'link_gbps': link}


def _gib(n: float) -> str:
  return f'{n / 2 ** 30:.2f} GiB'


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def plan_image_shape(config, image_shape: tuple[int, ...] | None, num_classes: int | None) -> tuple[tuple[int, int, int], int]:
  """The images' shape and class count: as given, or the config's dataset's (resized to `image_size`)."""
  if image_shape:
    if len(image_shape) != 3 or min(image_shape) < 1:
      raise PlanError(f'--image_shape={",".join(map(str, image_shape))} is not allowed; allowed: HEIGHT,WIDTH,CHANNELS')
    return tuple(image_shape), num_classes or 0
  known = KNOWN_DATASETS.get(config.data.name.split(':')[0].split('/')[0])
  if known is None or (not config.data.image_size and not known[0]):
    raise PlanError(f'the shape of dataset {config.data.name!r} is not known here; pass --image_shape=HEIGHT,WIDTH,'
                    f'CHANNELS (and --num_classes for a conditional model); known: {", ".join(KNOWN_DATASETS)}')
  height, width, channels, classes = known
  if config.data.image_size:
    height = width = config.data.image_size
  return (height, width, channels), classes if num_classes is None else num_classes


def make_plan(config, *, devices: int, chip_name: str, image_shape: tuple[int, ...] | None = None,
              num_classes: int | None = None, hbm_gib: float | None = None) -> dict[str, Any]:
  """Compiles `config`'s train step for `devices` devices and reads the plan off it (see the module doc).
  `hbm_gib` replaces the chip's memory (a partitioned GPU, room kept for something else). Needs `devices`
  (fake CPU) devices in this process; raises PlanError or ConfigError for bad input."""
  import jax  # pylint: disable=g-import-not-at-top
  from aigc_jax import compile as compile_lib  # pylint: disable=g-import-not-at-top
  from aigc_jax import config_checks, families, flops  # pylint: disable=g-import-not-at-top
  from aigc_jax import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from aigc_jax import state as state_lib  # pylint: disable=g-import-not-at-top

  if chip_name not in CHIPS:
    raise PlanError(f'unknown --chip {chip_name!r}; allowed: {", ".join(CHIPS)}')
  chip = CHIPS[chip_name]
  if devices < 1 or config.batch_size % devices:
    allowed = [d for d in _divisors(config.batch_size) if d > 1]
    raise PlanError(f'--devices={devices} cannot split config.batch_size={config.batch_size}; allowed: a divisor '
                    f'of {config.batch_size} ({", ".join(map(str, allowed[-8:]))}, ...)')
  if jax.device_count() != devices:
    raise PlanError(f'this process has {jax.device_count()} devices, not {devices}: run the plan through '
                    '`python -m aigc_jax.benchmark plan`, which creates them')
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.cpu_fast_path = 'off'  # the accelerator's program: flax's layers, XLA's default options
  config_checks.validate(config, device_count=devices, process_count=1, check_dataset=False)
  shape, classes = plan_image_shape(config, image_shape, num_classes)
  try:
    family = families.create(config, shape, classes)
  except ValueError as e:
    raise PlanError(f'config.model.name={config.model.name!r} cannot be built for images of {shape}: {e}') from None
  mesh = sharding_lib.mesh_from_config(config)
  _, abstract_state = state_lib.initializer_from_config(config, mesh, family.init_state)
  compiled, compile_s = compile_lib.compile_train_step(config, family.train_step, abstract_state,
                                                       families.global_batch_shapes(config, shape), mesh)

  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
  collectives = collectives_of(compiled.as_text(), devices)
  sent = sum(c.sent_bytes for c in collectives.values())
  needed = (memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes)
  xla_flops = float(cost.get('flops', 0.0))
  memory_traffic = float(cost.get('bytes accessed', 0.0))
  model_flops = flops.train_step_flops(config, shape) / devices
  times = roofline(chip, devices, xla_flops, memory_traffic, sent)

  # What each state leaf takes per device, now and with every kernel split over `fsdp` devices.
  def state_bytes(fsdp: int) -> float:
    total = 0.0
    for leaf in jax.tree.leaves(abstract_state):
      size = leaf.dtype.itemsize * math.prod(leaf.shape)
      splittable = leaf.ndim >= 2 and any(d % fsdp == 0 for d in leaf.shape)
      total += size / fsdp if splittable else size
    return total
  state_now = sum(leaf.dtype.itemsize * math.prod(leaf.sharding.shard_shape(leaf.shape))
                  for leaf in jax.tree.leaves(abstract_state))
  if hbm_gib is not None and hbm_gib <= 0:
    raise PlanError(f'--hbm_gib={hbm_gib:g} is not allowed; allowed: a number of GiB > 0')
  capacity = (hbm_gib or chip.hbm_gib) * 2 ** 30
  suggestion = None
  if needed > capacity:
    for fsdp in _divisors(devices):
      # State kernels split over fsdp; temporaries (activations, gradients) kept as compiled: an estimate.
      if needed - state_now + state_bytes(fsdp) <= capacity:
        suggestion = (f'--config.fsdp_devices={fsdp} --config.param_sharding=fsdp (estimated '
                      f'{_gib(needed - state_now + state_bytes(fsdp))} a device; run the plan with it to check)')
        break
    else:
      suggestion = ('no FSDP layout fits: lower the batch per device (config.batch_size) or the model '
                    '(width_multiplier, base_channels)')
  return {
      'model': config.model.name, 'devices': devices, 'chip': chip_name, 'chip_name': chip.name,
      'mesh': dict(zip(mesh.axis_names, map(int, mesh.devices.shape))), 'param_sharding': config.param_sharding,
      'image_shape': list(shape), 'num_classes': classes, 'batch_size': config.batch_size,
      'batch_per_device': config.batch_size // devices, 'compute_dtype': config.compute_dtype,
      'compile_s': compile_s,
      'argument_bytes': int(memory.argument_size_in_bytes), 'output_bytes': int(memory.output_size_in_bytes),
      'temp_bytes': int(memory.temp_size_in_bytes), 'alias_bytes': int(memory.alias_size_in_bytes),
      'state_bytes_per_device': int(state_now), 'needed_bytes': int(needed), 'hbm_bytes': int(capacity),
      'fits': needed <= capacity, 'suggestion': suggestion,
      'xla_flops_per_device': xla_flops, 'model_flops_per_device': model_flops,
      'memory_traffic_bytes': memory_traffic,
      'collectives': {kind: dataclasses.asdict(c) for kind, c in collectives.items() if c.count},
      'collective_sent_bytes': sent,
      **times,
      'mfu_estimate': model_flops / (times['step_s'] * chip.peak_tflops * 1e12) if times['step_s'] else None,
      'images_per_sec_estimate': config.batch_size / times['step_s'] if times['step_s'] else None,
  }


def format_plan(plan: dict[str, Any]) -> str:
  """The plan as the lines `plan` prints."""
  mesh = ' x '.join(f'{axis} {size}' for axis, size in plan['mesh'].items())
  lines = [
      f"{plan['model']} at {'x'.join(map(str, plan['image_shape']))}, batch {plan['batch_size']} "
      f"({plan['batch_per_device']} a device), {plan['compute_dtype']}, on {plan['devices']} x {plan['chip_name']} "
      f"(mesh {mesh}, params {plan['param_sharding']}); compiled in {plan['compile_s']:.0f} s",
      'per device:',
      f"  memory      state {_gib(plan['state_bytes_per_device'])}, arguments {_gib(plan['argument_bytes'])}, "
      f"outputs {_gib(plan['output_bytes'])}, temporaries {_gib(plan['temp_bytes'])}; needs "
      f"{_gib(plan['needed_bytes'])} of {_gib(plan['hbm_bytes'])} HBM: {'fits' if plan['fits'] else 'DOES NOT FIT'}",
      f"  FLOPs       {plan['xla_flops_per_device'] / 1e12:.3f} TFLOP compiled, {plan['model_flops_per_device'] / 1e12:.3f} "
      'TFLOP model (flops.py)',
      f"  traffic     {plan['memory_traffic_bytes'] / 1e9:.2f} GB to and from memory",
  ]
  for kind, c in plan['collectives'].items():
    lines.append(f"  {kind:<18} x{c['count']:<4} payload {c['payload_bytes'] / 1e6:,.1f} MB, sends "
                 f"{c['sent_bytes'] / 1e6:,.1f} MB")
  if not plan['collectives']:
    lines.append('  collectives none')
  lines += [
      f"roofline on {plan['chip_name']} ({CHIPS[plan['chip']].peak_tflops:g} TFLOP/s, "
      f"{CHIPS[plan['chip']].hbm_gbps:g} GB/s HBM, {plan['link_gbps']:g} GB/s a direction on the network):",
      f"  compute {plan['compute_s'] * 1e3:.1f} ms, memory {plan['memory_s'] * 1e3:.1f} ms, network "
      f"{plan['network_s'] * 1e3:.1f} ms -> step {plan['step_s'] * 1e3:.1f} ms with overlap, "
      f"{plan['step_s_no_overlap'] * 1e3:.1f} ms without",
      f"  MFU estimate {plan['mfu_estimate']:.1%}, {plan['images_per_sec_estimate']:,.0f} images/s over the pod",
  ]
  if plan['suggestion']:
    lines.append(f"to fit: {plan['suggestion']}")
  return '\n'.join(lines)
