"""The benchmark's command line: measure a train step, report on results, or plan a pod.

  python -m aigc_jax.benchmark --config=configs/benchmark.py --results=FILE [--config.model.name=mlp ...]
  python -m aigc_jax.benchmark report FILE... [--out=benchmarks/report] [--torch=FILE]
  python -m aigc_jax.benchmark plan --config=configs/biggan_imagenet128.py --devices=256 [--chip=tpu_v5p]
  python -m aigc_jax.benchmark parts --config=configs/benchmark.py --config.benchmark.image_shape='(28,28,1)'
      [--rounds=10] [--variants=...] [--results=FILE]   (what each part of the CPU fast path is worth)

Bad input ends with one `error:` line and exit status 2.
"""
import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from aigc_jax import cli, distributed

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A benchmark config (configs/benchmark.py); for `plan`, any training config.', lock_config=True)
_RESULTS = flags.DEFINE_string('results', None, 'Append one JSON line per run to this file.')
_OUT = flags.DEFINE_string('out', 'benchmarks/report', '`report`: writes OUT.md and OUT.png.')
_TORCH = flags.DEFINE_string('torch', None, '`report`: PyTorch reference lines to set beside ours.')
_DEVICES = flags.DEFINE_integer('devices', None, '`plan`: how many devices the run would have.')
_CHIP = flags.DEFINE_string('chip', 'tpu_v5p', '`plan`: the chip of the roofline estimate.')
_IMAGE_SHAPE = flags.DEFINE_list('image_shape', None, '`plan`: HEIGHT,WIDTH,CHANNELS (default: the dataset\'s).')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', None, '`plan`: classes of a conditional model.')
_HBM_GIB = flags.DEFINE_float('hbm_gib', None, "`plan`: memory per device in GiB (default: the chip's).")
_PLAN_JSON = flags.DEFINE_string('plan_json', None, '`plan`: also write the plan as one JSON line to this file.')
_ROUNDS = flags.DEFINE_integer('rounds', 10, '`parts`: rounds in which every variant is timed in turn.')
_VARIANTS = flags.DEFINE_list('variants', None, '`parts`: the variants to time (default: all that differ for the '
                              'model); see aigc_jax/benchmark/parts.py.')

COMMANDS = ('report', 'plan', 'parts')


def _command(argv: list[str]) -> str | None:
  positional = [arg for arg in argv[1:] if not arg.startswith('-')]
  return positional[0] if positional[:1] and positional[0] in COMMANDS else None


def parse_flags(argv: list[str]) -> list[str]:
  """The shared one-line flag errors; `--config` is needed to measure and to plan, not to report."""
  remaining = cli.parse_flags(argv, None if _command(argv) == 'report' else _CONFIG,
                              example='configs/benchmark.py')
  try:
    distributed.check(distributed.settings_from_flags())
  except distributed.DistributedError as e:
    cli.fail(str(e))
  return remaining


def run_report(paths: list[str]) -> None:
  from aigc_jax.benchmark import report  # pylint: disable=g-import-not-at-top
  if not paths:
    cli.fail('report needs result files: python -m aigc_jax.benchmark report FILE...')
  missing = [path for path in paths + ([_TORCH.value] if _TORCH.value else []) if not os.path.isfile(path)]
  if missing:
    cli.fail(f'no such result file: {missing[0]}')
  try:
    print(report.report(paths, _OUT.value, _TORCH.value), end='')
  except ValueError as e:
    cli.fail(str(e))


def run_plan() -> None:
  if not _DEVICES.value or _DEVICES.value < 1:
    cli.fail('plan needs --devices=N, the device count of the run to plan (an integer >= 1)')
  # The devices of the plan are fake CPU devices of this process: they must exist before jax starts.
  if 'jax' in sys.modules:
    cli.fail('plan must start in a fresh process (jax is already imported)')
  os.environ['XLA_FLAGS'] = ' '.join(
      [flag for flag in os.environ.get('XLA_FLAGS', '').split() if 'force_host_platform_device_count' not in flag]
      + [f'--xla_force_host_platform_device_count={_DEVICES.value}'])
  os.environ['JAX_PLATFORMS'] = 'cpu'
  from aigc_jax.benchmark import plan  # pylint: disable=g-import-not-at-top
  from aigc_jax.config_errors import ConfigError  # pylint: disable=g-import-not-at-top
  image_shape = None
  if _IMAGE_SHAPE.value:
    try:
      image_shape = tuple(int(d) for d in _IMAGE_SHAPE.value)
    except ValueError:
      cli.fail(f'--image_shape={",".join(_IMAGE_SHAPE.value)} is not allowed; allowed: HEIGHT,WIDTH,CHANNELS')
  config = _CONFIG.value
  if 'benchmark' in config:
    config = config.copy_and_resolve_references()
    with config.unlocked():
      del config['benchmark']
  try:
    result = plan.make_plan(config, devices=_DEVICES.value, chip_name=_CHIP.value, image_shape=image_shape,
                            num_classes=_NUM_CLASSES.value, hbm_gib=_HBM_GIB.value)
  except (plan.PlanError, ConfigError) as e:
    cli.fail(str(e))
  print(plan.format_plan(result))
  if _PLAN_JSON.value:
    with open(_PLAN_JSON.value, 'a') as f:
      f.write(json.dumps(result, sort_keys=True) + '\n')


def run_parts() -> None:
  if _ROUNDS.value < 1:
    cli.fail(f'--rounds={_ROUNDS.value} is not allowed; allowed: an integer >= 1')
  from aigc_jax.benchmark import parts  # pylint: disable=g-import-not-at-top
  from aigc_jax.config_errors import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    records = parts.measure_parts(_CONFIG.value, _VARIANTS.value, _ROUNDS.value)
  except ConfigError as e:
    cli.fail(str(e))
  if _RESULTS.value:
    from aigc_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
    for record in records:
      measure.append_result(_RESULTS.value, record)
  print(parts.format_table(records), end='')


def run_measure() -> None:
  if not _RESULTS.value:
    cli.fail('--results is required, e.g. --results=benchmarks/results/cpu.jsonl')
  from aigc_jax.benchmark import measure  # pylint: disable=g-import-not-at-top
  if measure.needs_dataset(_CONFIG.value):
    cli.hide_gpus_from_tensorflow()
  try:  # a multi-process benchmark (e.g. a pod slice), as for training: see aigc_jax/distributed.py
    peers = distributed.initialize(distributed.settings_from_flags())
  except distributed.DistributedError as e:
    cli.fail(str(e))
  import jax  # pylint: disable=g-import-not-at-top
  from aigc_jax.config_errors import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    result = measure.measure(_CONFIG.value)
  except BaseException as e:
    if peers:
      peers.fail()
    if isinstance(e, ConfigError):
      cli.fail(str(e))
    raise
  if peers:
    peers.finish()
  if jax.process_index() != 0:
    return  # process 0 reports for the whole run
  measure.append_result(_RESULTS.value, result)
  logging.info('result: %s', json.dumps(result, sort_keys=True))
  print(json.dumps(result, sort_keys=True), file=sys.stdout)


def main(argv: list[str]) -> None:
  command = _command(argv)
  if command == 'report':
    run_report(argv[2:])
    return
  if len(argv) > (2 if command else 1):
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}; allowed: none to measure, `report FILE...`, `plan` or '
             '`parts`')
  if command == 'plan':
    run_plan()
  elif command == 'parts':
    run_parts()
  else:
    run_measure()


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
