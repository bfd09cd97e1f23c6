"""Command-line plumbing shared by the entry points (`main`, `benchmark`, `evaluate`, `sample`).

Bad input ends with one `error: ...` line on stderr and exit status 2 (no traceback, no usage dump); a
run that cannot continue ends the same way with exit status 1.
"""
import importlib.util
import os
import sys
from typing import Callable, NoReturn

from absl import flags

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


def fail(message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
  """Prints `error: message` to stderr and exits with `status` (2: bad input; 1: the run failed)."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(status)


def config_keys_from_file(argv: list[str]) -> list[str]:
  """Top-level keys of the config file named by `--config=` on the command line (for error messages)."""
  for arg in argv:
    if arg.startswith('--config='):
      path = arg.split('=', 1)[1].split(':')[0]
      spec = importlib.util.spec_from_file_location('_config_for_keys', path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return sorted(module.get_config().keys())
  return []


def parse_flags(argv: list[str], config_flag=None, *, example: str = 'configs/default.py',
                config_keys: Callable[[list[str]], list[str]] = config_keys_from_file) -> list[str]:
  """absl flag parsing whose failures are one line, not a traceback or a usage dump.

  With `config_flag` (a `config_flags.DEFINE_config_file` holder) the config is also required to load.
  `config_keys(argv)` lists the allowed keys for the message about an unknown `--config.<key>` override.
  """
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:  # config_flags: an override names a key the config lacks.
    keys = config_keys(argv)
    overrides = [arg[len('--config.'):].split('=')[0] for arg in argv if arg.startswith('--config.')]
    unknown = [key for key in overrides if key.split('.')[0] not in keys] or [str(e)]
    fail(f'unknown config key {unknown[0]!r}; allowed keys: {", ".join(keys)}')
  if config_flag is not None:
    if config_flag.value is None:
      fail(f'--config is required, e.g. --config={example}')
    try:
      config_flag.value.keys()  # A config file that failed to load is only reported on first use.
    except Exception as e:  # pylint: disable=broad-except
      fail(f'could not load --config: {str(e).splitlines()[0] if str(e) else type(e).__name__}')
  return remaining


def absolute_workdir(path: str) -> str:
  """`path` made absolute, unless it is a bucket URL such as gs://bucket/run (kept as given)."""
  return path if '://' in path else os.path.abspath(path)


def quiet_orbax_info() -> None:
  """Orbax logs several INFO lines per save; keep its warnings and errors, drop the rest from the console."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= logging.converter.STANDARD_WARNING or '/orbax/' not in record.pathname)


def hide_gpus_from_tensorflow() -> None:
  """tf.data only feeds the host; keep TensorFlow off the accelerators jax owns."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
