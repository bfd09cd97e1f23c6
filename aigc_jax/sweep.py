"""`python -m aigc_jax.sweep --sweep=configs/sweeps/FILE.py --root=DIR [--dry_run] [--platform=cpu|gpu] [-- ARGS]`.

Expands a sweep into training runs, each with its own workdir `DIR/<name>` named after its overrides, and
runs them one after the other (or, with `--dry_run`, prints their commands and touches nothing). A sweep
file names its base config (`BASE_CONFIG`, a path from the repository root) and has `get_sweep()`
returning a list of override dicts, big_vision style: `{'devices': 4, 'model.width_multiplier': 2.0, ...}`.
Keys are config fields (dotted for groups, e.g. `eval.num_samples`); `devices` is the device count the
run sees: on `cpu`, that many fake devices (`XLA_FLAGS=--xla_force_host_platform_device_count=N`); on
`gpu`, the first N GPUs (`CUDA_VISIBLE_DEVICES`). Without `devices`, a run sees every device. `ARGS` after
`--` (e.g. `--config.eval.every_steps=0`) go to every run.

Every run's config is validated (with its device count) before the first one starts: a bad sweep ends with
one `error:` line naming the run. Re-running a sweep resumes each run from its newest checkpoint, so an
interrupted sweep continues where it stopped. Exit status: 0 if every run succeeded, else 1.
"""
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from typing import Any, NamedTuple

from absl import app, flags

from aigc_jax import cli

_SWEEP = flags.DEFINE_string('sweep', None, 'A sweep file, e.g. configs/sweeps/mlp_scaling.py.')
_ROOT = flags.DEFINE_string('root', None, 'Directory under which each run gets its workdir.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands; run nothing, write nothing.')
_PLATFORM = flags.DEFINE_enum('platform', 'cpu', ['cpu', 'gpu'], 'How `devices` selects devices.')

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Run(NamedTuple):
  name: str
  workdir: str
  env: dict[str, str]  # variables set on top of the caller's environment
  argv: list[str]

  def command(self) -> str:
    """The run as one shell command line."""
    return ' '.join([f'{key}={shlex.quote(value)}' for key, value in self.env.items()] + [shlex.join(self.argv)])


def load_sweep(path: str) -> tuple[str, list[dict[str, Any]]]:
  """`(base config path, list of override dicts)` of the sweep file at `path`; ValueError if malformed."""
  if not os.path.isfile(path):
    raise ValueError(f'sweep file {path!r} does not exist')
  spec = importlib.util.spec_from_file_location('_sweep', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep') or not isinstance(getattr(module, 'BASE_CONFIG', None), str):
    raise ValueError(f'sweep file {path!r} needs BASE_CONFIG (a config path) and get_sweep() (a list of dicts)')
  runs = module.get_sweep()
  if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
    raise ValueError(f'get_sweep() of {path!r} must return a non-empty list of dicts')
  return module.BASE_CONFIG, runs


def _value(value: Any) -> str:
  return repr(value) if isinstance(value, (tuple, list)) else str(value)


def run_name(overrides: dict[str, Any], keys: list[str] | None = None) -> str:
  """A workdir name from the overrides (those of `keys` only, if given), e.g. `devices4-model.width_multiplier2.0`."""
  name = '-'.join(f'{key}{_value(overrides[key])}' for key in (overrides if keys is None else keys)
                  if key in overrides)
  return re.sub(r'[^A-Za-z0-9_.=+-]', '_', name) or 'base'


def _varying_keys(sweep: list[dict[str, Any]]) -> list[str]:
  """The keys whose value differs between runs, in first-seen order (all of them for a single run)."""
  keys = list(dict.fromkeys(key for overrides in sweep for key in overrides))
  if len(sweep) == 1:
    return keys
  return [key for key in keys if len({repr(overrides.get(key)) for overrides in sweep}) > 1]


def _device_env(devices: int, platform: str) -> dict[str, str]:
  if platform == 'cpu':
    flags_now = os.environ.get('XLA_FLAGS', '')
    flags_now = re.sub(r'--xla_force_host_platform_device_count=\S+', '', flags_now).strip()
    return {'XLA_FLAGS': f'{flags_now} --xla_force_host_platform_device_count={devices}'.strip()}
  return {'CUDA_VISIBLE_DEVICES': ','.join(str(i) for i in range(devices))}


def expand(base_config: str, sweep: list[dict[str, Any]], root: str, *, platform: str = 'cpu',
           extra_args: tuple[str, ...] = ()) -> list[Run]:
  """The runs of a sweep: a workdir under `root`, the device environment and the training command of each."""
  runs, names, keys = [], set(), _varying_keys(sweep)
  for overrides in sweep:
    name = run_name(overrides, keys)
    overrides = dict(overrides)
    devices = overrides.pop('devices', None)
    if name in names:
      raise ValueError(f'two runs of the sweep have the same overrides ({name}); allowed: distinct runs')
    names.add(name)
    workdir = os.path.join(root, name)
    argv = [sys.executable, '-m', 'aigc_jax.main', f'--config={base_config}', f'--workdir={workdir}']
    argv += [f'--config.{key}={_value(value)}' for key, value in overrides.items()] + list(extra_args)
    runs.append(Run(name, workdir, _device_env(devices, platform) if devices is not None else {}, argv))
  return runs


def validate_runs(base_config: str, sweep: list[dict[str, Any]]) -> None:
  """Checks every run's config (with its own device count) as training would; raises ConfigError."""
  import jax  # pylint: disable=g-import-not-at-top  (jax and TF: after flag checks)
  from aigc_jax import config_checks  # pylint: disable=g-import-not-at-top
  base_path = os.path.join(REPO_ROOT, base_config) if not os.path.isabs(base_config) else base_config
  if not os.path.isfile(base_path):
    raise config_checks.ConfigError(f'BASE_CONFIG {base_config!r} does not exist')
  for index, overrides in enumerate(sweep):
    overrides = dict(overrides)
    devices = overrides.pop('devices', jax.device_count())
    if not isinstance(devices, int) or isinstance(devices, bool) or devices < 1:
      raise config_checks.ConfigError(f'run {index} of the sweep: devices={devices!r} is not allowed; allowed: '
                                      'an integer >= 1')
    spec = importlib.util.spec_from_file_location('_base_config', base_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    try:
      for dotted, value in overrides.items():
        node = config
        *parents, leaf = dotted.split('.')
        for part in parents:
          node = node[part]
        if leaf not in node:
          raise config_checks.ConfigError(f'unknown config key {dotted!r}; allowed keys: '
                                          f'{", ".join(sorted(node.keys()))}')
        node[leaf] = value
      config_checks.validate(config, device_count=devices, process_count=1)
    except (config_checks.ConfigError, KeyError, TypeError) as e:
      name = run_name(sweep[index], _varying_keys(sweep))
      raise config_checks.ConfigError(f'run {index} of the sweep ({name}): {e}') from None


def main(argv: list[str]) -> None:
  extra_args = tuple(argv[1:])
  bad = [arg for arg in extra_args if not arg.startswith('--config.')]
  if bad:
    cli.fail(f'unexpected argument {bad[0]!r}; allowed after --: --config.<field>=<value> for every run')
  if not _SWEEP.value or not _ROOT.value:
    cli.fail('--sweep and --root are required, e.g. --sweep=configs/sweeps/mlp_scaling.py --root=/tmp/sweep')
  from aigc_jax.config_errors import ConfigError  # pylint: disable=g-import-not-at-top
  try:
    base_config, sweep = load_sweep(_SWEEP.value)
    runs = expand(base_config, sweep, os.path.abspath(_ROOT.value), platform=_PLATFORM.value,
                  extra_args=extra_args)
    validate_runs(base_config, sweep)
  except (ValueError, ConfigError) as e:
    cli.fail(str(e))
  if _DRY_RUN.value:
    for run in runs:
      print(run.command())
    return
  failed = []
  for index, run in enumerate(runs):
    print(f'== run {index + 1}/{len(runs)}: {run.name}', flush=True)
    result = subprocess.run(run.argv, env={**os.environ, **run.env}, cwd=REPO_ROOT, check=False)
    if result.returncode:
      failed.append(run.name)
      print(f'== run {run.name} failed with exit status {result.returncode}', flush=True)
  print(f'== {len(runs) - len(failed)} of {len(runs)} runs succeeded', flush=True)
  if failed:
    sys.exit(cli.EXIT_RUN_FAILED)


if __name__ == '__main__':
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv))
