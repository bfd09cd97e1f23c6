"""`python -m aigc_jax.evaluate --workdir=DIR [--num_samples=N] [--baseline=...] [--config.eval.<key>=value]`.

Scores the generator of the newest usable checkpoint, or of `--step=N` (FID, KID, IS, precision/recall with
the configured feature network; for a VAE, its decoder's mean on prior latents) and prints one JSON line; the EMA generator when the
run has one (`"ema": true` in the line), unless `--config.sample_with_ema=False`. `--baseline=noise` scores
uniform noise images instead and
`--baseline=real_halves` one half of the real data against the other (the floor). Bad input ends with one
`error:` line and exit status 2.
"""
import json
import os
import sys

from absl import app, flags

from aigc_jax import cli
from configs import default

_WORKDIR = flags.DEFINE_string('workdir', None, 'A training workdir with checkpoints.')
_STEP = flags.DEFINE_integer('step', None, 'The checkpoint step to use (default: the newest usable one).')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', None, 'Generated samples (default: config.eval.num_samples).')
_BASELINE = flags.DEFINE_enum('baseline', 'generator', ['generator', 'noise', 'real_halves'],
                              'What to score: the generator, uniform noise images, or half the real data.')
_CONFIG = cli.define_config_overrides(default.get_config(),
                                      'Overrides of the run config, e.g. --config.eval.inception_weights=PATH.')


def parse_flags(argv: list[str]) -> list[str]:
  remaining = cli.parse_flags(argv, config=default.get_config())
  if not _WORKDIR.value:
    cli.fail('--workdir is required')
  if _NUM_SAMPLES.value is not None and _NUM_SAMPLES.value < 10:
    cli.fail(f'--num_samples={_NUM_SAMPLES.value} is not allowed; allowed: an integer >= 10')
  return remaining


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.quiet_orbax_info()
  cli.hide_gpus_from_tensorflow()
  from aigc_jax import restored_run  # pylint: disable=g-import-not-at-top  (jax and TF: after flag checks)
  from aigc_jax.checkpointing import CheckpointError  # pylint: disable=g-import-not-at-top
  from aigc_jax.config_errors import ConfigError  # pylint: disable=g-import-not-at-top
  from aigc_jax.evaluation import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top

  overrides = restored_run.config_overrides(sys.argv[1:], _CONFIG.value)
  if _NUM_SAMPLES.value is not None:
    overrides['eval.num_samples'] = _NUM_SAMPLES.value
  try:
    run = restored_run.restore(os.path.abspath(_WORKDIR.value), overrides, step=_STEP.value)
    evaluator = evaluator_lib.Evaluator(run.config, mesh=run.mesh, generate=run.family.generate,
                                        builder=run.builder, image_shape=run.info.image_shape,
                                        state_shardings=run.state_shardings)
  except ConfigError as e:
    cli.fail(str(e))
  except CheckpointError as e:
    cli.fail(str(e), status=cli.EXIT_RUN_FAILED)
  scores = {'generator': lambda: evaluator(run.state), 'noise': evaluator.noise_baseline,
            'real_halves': evaluator.real_halves_baseline}[_BASELINE.value]()
  num_samples = len(evaluator.reference) // 2 if _BASELINE.value == 'real_halves' else run.config.eval.num_samples
  num_reference = len(evaluator.reference) - num_samples if _BASELINE.value == 'real_halves' else len(evaluator.reference)
  print(json.dumps({'workdir': os.path.abspath(_WORKDIR.value), 'step': run.step, 'source': _BASELINE.value,
                    'ema': _BASELINE.value == 'generator' and evaluator.uses_ema,
                    'feature_network': evaluator.network.weights_id, 'num_samples': num_samples,
                    'num_reference': num_reference, **scores}), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
