"""Entry point: `python -m aigc_jax.main --config=configs/default.py --workdir=DIR [--config.key=value ...]`.

Bad input (a config file that does not load, an unknown key, a value of the wrong type or out of range, an
unwritable workdir, a batch the devices cannot split) ends with one `error:` line and exit status 2.
"""
import importlib.util
import os

from absl import app, flags, logging
from ml_collections import config_flags

from aigc_jax import cli

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file with get_config().',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and samples.')
_fail = cli.fail


def _config_keys(argv: list[str]) -> list[str]:
  """Top-level keys of the config file named on the command line (for error messages)."""
  for arg in argv:
    if arg.startswith('--config='):
      path = arg.split('=', 1)[1].split(':')[0]
      spec = importlib.util.spec_from_file_location('_config_for_keys', path)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      return sorted(module.get_config().keys())
  return []


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose failures are one line, not a traceback or a usage dump."""
  remaining = cli.parse_flags(argv, _config_keys)
  if _CONFIG.value is None:
    _fail('--config is required, e.g. --config=configs/default.py')
  try:
    _CONFIG.value.keys()  # A config file that failed to load is only reported on first use.
  except Exception as e:  # pylint: disable=broad-except
    _fail(f'could not load --config: {str(e).splitlines()[0] if str(e) else type(e).__name__}')
  if not _WORKDIR.value:
    _fail('--workdir is required')
  return remaining


def main(argv: list[str]) -> None:
  cli.quiet_orbax_info()
  if len(argv) > 1:
    _fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.hide_gpus_from_tensorflow()
  import jax  # pylint: disable=g-import-not-at-top
  from aigc_jax import train  # pylint: disable=g-import-not-at-top
  from aigc_jax.config_checks import ConfigError  # pylint: disable=g-import-not-at-top

  logging.info('jax %s: %d process(es), %d device(s)', jax.__version__, jax.process_count(), jax.device_count())
  try:
    train.train_and_evaluate(_CONFIG.value, os.path.abspath(_WORKDIR.value))
  except ConfigError as e:
    _fail(str(e))


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
