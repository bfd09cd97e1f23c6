"""Command-line plumbing shared by the entry points (`main`, `benchmark`, `evaluate`, `sample`).

Bad input ends with one `error: ...` line on stderr and exit status 2 (no traceback, no usage dump); a
run that cannot continue ends the same way with exit status 1.
"""
import importlib.util
import os
import re
import sys
from typing import NoReturn

import ml_collections
from absl import flags
from ml_collections import config_flags

from aigc_jax import config_layout
from aigc_jax.config_errors import one_line

EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


def fail(message: str, status: int = EXIT_BAD_INPUT) -> NoReturn:
  """Prints `error: message` to stderr and exits with `status` (2: bad input; 1: the run failed)."""
  print(f'error: {message}', file=sys.stderr)
  sys.exit(status)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """The config that `--config=PATH[:ARG]` names (its `get_config([ARG])`); one `error:` line if it does not load."""
  path, _, arg = spec.partition(':')
  allowed = 'allowed: a Python file that defines get_config(), e.g. configs/default.py'
  if not os.path.isfile(path):
    fail(f'--config={spec}: {path!r} is {"a directory" if os.path.isdir(path) else "not a file"}; {allowed}')
  try:
    module_spec = importlib.util.spec_from_file_location('_config_file', path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    fail(f'--config={spec}: syntax error at line {e.lineno} of {path}: {e.msg}')
  except Exception as e:  # pylint: disable=broad-except  (whatever the file's own code raises)
    fail(f'--config={spec}: {path} failed to import: {one_line(e)}')
  if not callable(getattr(module, 'get_config', None)):
    fail(f'--config={spec}: {path} defines no get_config(); {allowed}')
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # pylint: disable=broad-except
    fail(f'--config={spec}: get_config() failed: {one_line(e)}')
  if not isinstance(config, ml_collections.ConfigDict):
    fail(f'--config={spec}: get_config() returned a {type(config).__name__}, not an ml_collections.ConfigDict')
  return config


def override_problem(arg: str, config: ml_collections.ConfigDict) -> str | None:
  """Why the command-line argument `--config.<dotted key>=...` names no field of `config`, or None."""
  match = re.match(r'^--?(?:no)?config\.([^=]+)', arg)
  if match is None:
    return None
  node, path = config, 'config'
  for name in match.group(1).split('.'):
    if not isinstance(node, ml_collections.ConfigDict):
      return f'unknown config key {match.group(1)!r}: {path} is a value, not a group of keys'
    if name not in node and node is config and name in config_layout.FLAT_LAYOUT:
      moved = config_layout.FLAT_LAYOUT[name]
      return (f'unknown config key {match.group(1)!r}: since version 0.2.0 the field is {moved!r} '
              f'(--config.{moved}{match.group(1)[len(name):]}=...)')
    if name not in node:
      return f'unknown config key {match.group(1)!r}; allowed keys of {path}: {", ".join(sorted(node.keys()))}'
    node, path = node[name], f'{path}.{name}'
  return None


def define_config_overrides(config: ml_collections.ConfigDict, help_text: str):
  """`--config.<key>=value` overrides of `config` for a tool (`config_flags.DEFINE_config_dict`).

  config_flags parses the overrides when the flag is defined, at import; an unknown key would be a
  traceback there. It is left out here and reported by `parse_flags` as one line instead.
  """
  argv = [arg for arg in sys.argv if override_problem(arg, config) is None]
  return config_flags.DEFINE_config_dict('config', config, help_text, sys_argv=argv)


def parse_flags(argv: list[str], config_flag=None, *, example: str = 'configs/default.py',
                config: ml_collections.ConfigDict | None = None) -> list[str]:
  """absl flag parsing whose failures are one line, not a traceback or a usage dump.

  With `config_flag` (a `config_flags.DEFINE_config_file` holder) the config file is required and must load;
  `--config.<key>` overrides must name fields of it, or of `config` (a tool's `define_config_overrides`).
  """
  if config_flag is not None and not set(argv[1:]) & {'--help', '-h', '-?', '--helpshort', '--helpfull'}:
    specs = [arg.split('=', 1)[1] for arg in argv if re.match(r'^--?config=', arg)]
    if not specs or not specs[-1]:
      fail(f'--config is required, e.g. --config={example}')
    config = load_config_file(specs[-1])
  for arg in argv:
    problem = override_problem(arg, config) if config is not None else None
    if problem:
      fail(problem)
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as e:
    fail(str(e).splitlines()[0])
  if config_flag is not None:
    try:
      config_flag.value.keys()  # A config file that failed to load is only reported on first use.
    except Exception as e:  # pylint: disable=broad-except
      fail(f'could not load --config: {str(e).splitlines()[0] if str(e) else type(e).__name__}')
  return remaining


def absolute_workdir(path: str) -> str:
  """`path` made absolute, unless it is a bucket URL such as gs://bucket/run (kept as given)."""
  return path if '://' in path else os.path.abspath(path)


def quiet_orbax_info() -> None:
  """Orbax logs several INFO lines per save, a warning whenever a tool opens checkpoints read-only (as asked)
  and tracebacks with each failed save (its own, and asyncio's for the save's other writes); keep its other
  warnings and its errors, one line each."""
  from absl import logging  # pylint: disable=g-import-not-at-top

  def keep(record) -> bool:
    if '/asyncio/' in record.pathname and 'orbax' in record.getMessage():
      return False  # a failed save's other writes, after the failure that is reported
    if '/orbax/' not in record.pathname:
      return True
    record.exc_info = record.exc_text = None  # the error that matters is reported once, as `error: ...`
    return (record.levelno >= logging.converter.STANDARD_WARNING
            and not str(record.msg).startswith('Given directory is read only'))
  logging.get_absl_handler().addFilter(keep)


def hide_gpus_from_tensorflow() -> None:
  """tf.data only feeds the host; keep TensorFlow off the accelerators jax owns."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
