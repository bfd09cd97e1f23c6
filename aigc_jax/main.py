"""Entry point: `python -m aigc_jax.main --config=configs/default.py --workdir=DIR [--config.key=value ...]`.

Bad input (a config file that does not load, an unknown key, a value of the wrong type or out of range, an
unwritable workdir, a batch the devices cannot split) ends with one `error:` line and exit status 2; a run
that cannot continue (a checkpoint that cannot be saved or restored, too many non-finite steps) with one
`error:` line and exit status 1. SIGTERM/SIGINT save a checkpoint and exit 0 (during set-up, before the first
step: they exit 0 with no checkpoint written).

The console shows the set-up, one line per log interval, one per evaluation and a closing summary;
`--verbosity=1` (`-v 1`) adds the libraries' own lines (TensorFlow, TFDS, Orbax, JAX), `-v 2` debug lines.

Multi-process (multi-host) runs: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I` on each
process, or nothing under SLURM / Open MPI, or `--distributed=on` on TPU pods; see `distributed.py`.
"""
import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from aigc_jax import cli, console, distributed

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file with get_config().',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and samples.')


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing whose failures are one line, not a traceback or a usage dump."""
  remaining = cli.parse_flags(argv, _CONFIG)
  if not _WORKDIR.value:
    cli.fail('--workdir is required')
  try:
    distributed.check(distributed.settings_from_flags())
  except distributed.DistributedError as e:
    cli.fail(str(e))
  return remaining


def _stopped_while_starting(signum, frame) -> None:
  del frame
  print(f'stopped on request ({signal.Signals(signum).name}) while starting, before the set-up; nothing was '
        'written', file=sys.stderr, flush=True)
  os._exit(0)  # pylint: disable=protected-access  (imports or the join of a multi-process run may be under way)


def main(argv: list[str]) -> None:
  # Until training takes over SIGTERM and SIGINT (or, on a multi-process run, JAX's preemption notifier).
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, _stopped_while_starting)
  console.configure(flags.FLAGS.verbosity)
  cli.quiet_orbax_info()
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.hide_gpus_from_tensorflow()
  settings = distributed.settings_from_flags()
  if distributed.should_initialize(settings, os.environ):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # JAX's preemption notifier takes SIGTERM over as the run forms
  try:
    peers = distributed.initialize(settings)  # before anything touches a jax backend
  except distributed.DistributedError as e:
    cli.fail(str(e))
  from aigc_jax import train  # pylint: disable=g-import-not-at-top
  from aigc_jax.checkpointing import CheckpointError  # pylint: disable=g-import-not-at-top
  from aigc_jax.config_errors import ConfigError  # pylint: disable=g-import-not-at-top

  try:
    train.train_and_evaluate(_CONFIG.value, cli.absolute_workdir(_WORKDIR.value))
  except train.StoppedDuringSetup as e:
    logging.warning('%s; no checkpoint was written', e)
  except BaseException as e:  # pylint: disable=broad-except
    lost = distributed.failed_across_processes(e)  # e.g. a collective with a process that died
    if lost is not None:
      distributed.exit_failed_across_processes(lost, status=cli.EXIT_RUN_FAILED, peers=peers)
    if peers:
      peers.fail()  # the other processes stop too, naming this one
    fail = cli.fail if peers is None else distributed.exit_with_error
    if isinstance(e, ConfigError):
      fail(str(e), status=cli.EXIT_BAD_INPUT)
    if isinstance(e, (CheckpointError, train.TrainingStopped)):
      fail(str(e), status=cli.EXIT_RUN_FAILED)
    raise
  if peers:
    peers.finish()


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
