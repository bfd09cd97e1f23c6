"""`python -m aigc_jax.evaluate --workdir=DIR [--num_samples=N] [--baseline=...] [--config.eval.<key>=value]`.

Scores the generator of the newest usable checkpoint, or of `--step=N`, and prints one JSON line: FID, KID,
IS and precision/recall with the configured feature network, from the EMA generator when the run has one
(`"ema": true` in the line) unless `--config.gan.sample_with_ema=False`; for a VAE, from its decoder's mean on
latents from its `vae.sampler` (the prior, or a mixture fitted to the training images), and the line adds its held-out negative ELBO and the negative log-likelihood estimated with
`vae.iwae_samples` importance samples (`evaluation/vae_likelihood.py`).

`--baseline=noise` scores uniform noise images instead, and `--baseline=real_halves` one half of the real
data against the other (the floor). `--reference=half` scores the generator (or noise) against the floor's
reference half, with as many samples as the floor's other half: equal sample counts on both sides, so its
FID compares directly with the floor's (`python -m aigc_jax.quality` does this). Bad input ends with one
`error:` line and exit status 2.

Each line is also kept in the run's workdir, beside (never inside) what training writes: appended to
`WORKDIR/evaluations/evaluations.jsonl`, and a generator's scores as TensorBoard scalars `eval/<metric>` at
the checkpoint's step in `WORKDIR/evaluations/` (TensorBoard shows it as the run `evaluations`).
`--record=False` keeps nothing.
"""
import json
import os
import sys

from absl import app, flags

from aigc_jax import cli, console
from configs import base

_WORKDIR = flags.DEFINE_string('workdir', None, 'A training workdir with checkpoints.')
_STEP = flags.DEFINE_integer('step', None, 'The checkpoint step to use (default: the newest usable one).')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', None, 'Generated samples (default: config.eval.num_samples).')
_BASELINE = flags.DEFINE_enum('baseline', 'generator', ['generator', 'noise', 'real_halves'],
                              'What to score: the generator, uniform noise images, or half the real data.')
_REFERENCE = flags.DEFINE_enum('reference', 'all', ['all', 'half'],
                               'Score against all reference images, or against the floor\'s half with as many '
                               'samples as its other half (figures comparable with --baseline=real_halves).')
_RECORD = flags.DEFINE_bool('record', True, 'Also append the line to WORKDIR/evaluations/evaluations.jsonl '
                             'and write the scores to TensorBoard there.')
_CONFIG = cli.define_config_overrides(base.get_config(),
                                      'Overrides of the run config, e.g. --config.eval.inception_weights=PATH.')


def parse_flags(argv: list[str]) -> list[str]:
  remaining = cli.parse_flags(argv, config=base.get_config())
  if not _WORKDIR.value:
    cli.fail('--workdir is required')
  if _NUM_SAMPLES.value is not None and _NUM_SAMPLES.value < 10:
    cli.fail(f'--num_samples={_NUM_SAMPLES.value} is not allowed; allowed: an integer >= 10')
  if _REFERENCE.value == 'half' and _NUM_SAMPLES.value is not None:
    cli.fail('--num_samples cannot be combined with --reference=half, which takes as many samples as the '
             "floor's second half; allowed: one of the two")
  return remaining


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    cli.fail(f'unexpected arguments: {" ".join(argv[1:])}')
  console.configure(flags.FLAGS.verbosity)
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
    evaluator = evaluator_lib.Evaluator(run.config, mesh=run.mesh, generate=restored_run.sampler(run),
                                        num_classes=run.family.num_classes,
                                        builder=run.builder, image_shape=run.info.image_shape,
                                        state_shardings=run.state_shardings)
  except ConfigError as e:
    cli.fail(str(e))
  except CheckpointError as e:
    cli.fail(str(e), status=cli.EXIT_RUN_FAILED)
  half = _REFERENCE.value == 'half'
  scores = {'generator': lambda: evaluator(run.state, against_half=half),
            'noise': lambda: evaluator.noise_baseline(against_half=half),
            'real_halves': evaluator.real_halves_baseline}[_BASELINE.value]()
  if _BASELINE.value == 'generator' and run.family.kind == 'vae':
    scores.update(heldout_likelihood(run))
  first, second = evaluator.reference_halves()
  if half or _BASELINE.value == 'real_halves':
    num_samples, num_reference = len(second), len(first)
  else:
    num_samples, num_reference = run.config.eval.num_samples, len(evaluator.reference)
  line = {'workdir': os.path.abspath(_WORKDIR.value), 'step': run.step, 'source': _BASELINE.value,
          'reference': _REFERENCE.value, 'ema': _BASELINE.value == 'generator' and evaluator.uses_ema,
          'feature_network': evaluator.network.weights_id, 'num_samples': num_samples,
          'num_reference': num_reference, **scores}
  print(json.dumps(line), flush=True)
  if _RECORD.value:
    record(os.path.abspath(_WORKDIR.value), line, scores if _BASELINE.value == 'generator' else None)


def heldout_likelihood(run) -> dict[str, float]:
  """A VAE's held-out negative ELBO and, with `vae.iwae_samples` > 0, its importance-sampled NLL."""
  from aigc_jax.evaluation import vae_likelihood  # pylint: disable=g-import-not-at-top
  likelihood = vae_likelihood.likelihood_of(run.config)
  targets = vae_likelihood.heldout_targets(run.config, run.builder, likelihood)
  heldout = vae_likelihood.HeldoutLikelihood(run.config, targets, mesh=run.mesh, state_shardings=run.state_shardings,
                                             vae=run.family.modules, likelihood=likelihood)
  return heldout(run.state, importance_samples=run.config.vae.iwae_samples)


def record(workdir: str, line: dict, scores: dict | None) -> None:
  """Appends `line` to WORKDIR/evaluations/evaluations.jsonl and writes `scores` (if any) to TensorBoard there;
  a workdir that cannot take them gets one warning, and the printed line stands."""
  from clu import metric_writers  # pylint: disable=g-import-not-at-top
  directory = os.path.join(workdir, 'evaluations')
  try:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, 'evaluations.jsonl'), 'a') as f:
      f.write(json.dumps(line) + '\n')
    if scores is not None:
      writer = metric_writers.SummaryWriter(directory)
      writer.write_scalars(line['step'], console.tensorboard_scalars(scores, 'eval'))
      writer.close()
  except Exception as e:  # pylint: disable=broad-except  (OSError; TensorFlow's own I/O errors)
    print(f'warning: the scores were not kept in {directory}: {" ".join(str(e).split())[:200]}', file=sys.stderr)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
