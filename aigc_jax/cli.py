"""Command-line plumbing shared by the entry points (`main`, `evaluate`, `sample`): one-line errors.

Bad input ends with one `error: ...` line on stderr and exit status 2: no traceback, no usage dump.
"""
import sys
from typing import Callable, NoReturn

from absl import flags

EXIT_BAD_INPUT = 2


def fail(message: str) -> NoReturn:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(EXIT_BAD_INPUT)


def parse_flags(argv: list[str], config_keys: Callable[[list[str]], list[str]]) -> list[str]:
  """absl flag parsing whose failures are one line; `config_keys(argv)` lists the allowed config keys
  for the message about an unknown `--config.<key>` override."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).splitlines()[0])
  except (AttributeError, KeyError) as e:  # config_flags: an override names a key the config lacks.
    keys = config_keys(argv)
    overrides = [arg[len('--config.'):].split('=')[0] for arg in argv if arg.startswith('--config.')]
    unknown = [key for key in overrides if key.split('.')[0] not in keys] or [str(e)]
    fail(f'unknown config key {unknown[0]!r}; allowed keys: {", ".join(keys)}')


def quiet_orbax_info() -> None:
  """Orbax logs several INFO lines per save; keep its warnings and errors, drop the rest from the console."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  logging.get_absl_handler().addFilter(
      lambda record: record.levelno >= logging.converter.STANDARD_WARNING or '/orbax/' not in record.pathname)


def hide_gpus_from_tensorflow() -> None:
  """tf.data only feeds the host; keep TensorFlow off the accelerators jax owns."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
