"""What a training run prints, and how its scalars are named in TensorBoard.

The console is quiet by default: the libraries' INFO lines (TensorFlow's C++ start-up, TFDS, Orbax, CLU,
JAX's backend probing) are hidden and lines carry a short time prefix. A run prints its set-up, one line per
log interval (step, images seen, speed, ETA, losses), one line per evaluation and a closing summary.
`--verbosity=1` (`-v 1`) brings the library lines and absl's full prefixes back; `-v 2` adds debug lines.

TensorBoard tags are grouped: `train/…` (losses, D's outputs and accuracy, gradient norms, learning rates),
`eval/…` (FID & co., a VAE's held-out figures), `perf/…` (steps/s, images/s, images seen in kimg) and
`health/…` (counts of skipped non-finite steps).
"""
import logging as std_logging
import os
import time

from absl import logging

_HEALTH = ('skipped_steps', 'consecutive_skipped', 'skipped_in_window')
_PREFIX = '%(asctime)s %(message)s'
# The figures of the interval line, in this order when a run has them.
_LINE_METRICS = ('d_loss', 'g_loss', 'd_acc_real', 'd_acc_fake', 'loss', 'elbo')
_EVAL_METRICS = ('fid', 'kid', 'precision', 'recall', 'is', 'rarest_class_share', 'label_accuracy',
                 'nearest_train_ratio', 'heldout_neg_elbo', 'heldout_bits_per_dim')
# Figures of the closing line, lower is better: the last value, and the best with its step when it was earlier.
_BEST_TRACKED = ('_fid', 'heldout_neg_elbo')


def configure(verbosity: int) -> None:
  """Quiet console unless `verbosity` >= 1 (absl's `--verbosity`); imports TensorFlow (call this first)."""
  if verbosity >= 1:
    logging.set_verbosity(logging.DEBUG if verbosity >= 2 else logging.INFO)
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')  # TensorFlow's and XLA's C++ INFO lines
  _import_tensorflow_silently()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (after TensorFlow's silent import)
  tfds.disable_progress_bar()  # a dataset's first preparation would draw a dozen progress bars
  handler = logging.get_absl_handler()
  handler.setFormatter(std_logging.Formatter(_PREFIX, datefmt='%H:%M:%S'))

  def ours_or_warning(record) -> bool:
    return record.levelno >= std_logging.WARNING or f'{os.sep}aigc_jax{os.sep}' in record.pathname
  handler.addFilter(ours_or_warning)


def _import_tensorflow_silently() -> None:
  """Imports TensorFlow with file descriptor 2 closed off: its C++ start-up lines (oneDNN, CPU features) are
  written before any log level applies. An import error still raises, with its Python message."""
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def tensorboard_scalars(metrics: dict[str, float], group: str) -> dict[str, float]:
  """`metrics` named for TensorBoard: `<group>/<name>`, with the skip counters under `health/`."""
  return {(f'health/{name}' if name in _HEALTH else f'{group}/{name}'): value for name, value in metrics.items()}


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f'{hours}h{rest // 60:02d}m' if hours else f'{rest // 60}m{rest % 60:02d}s'


def _number(value: float) -> str:
  return f'{value:.4g}'


def compile_line(seconds: float, memory) -> str:
  """`compiled the train step in 3.1 s; device memory per device: 0.07 GiB (...)` from `memory_analysis()`."""
  if memory is None:
    return f'compiled the train step in {seconds:.1f} s'
  gib = lambda n: f'{n / 2**30:.2f}' if n >= 2**30 / 10 else f'{n / 2**30:.2g}'
  total = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
           + memory.temp_size_in_bytes)
  return (f'compiled the train step in {seconds:.1f} s; device memory: {gib(total)} GiB per device '
          f'(state and batch {gib(memory.argument_size_in_bytes)}, temporaries {gib(memory.temp_size_in_bytes)})')


class Progress:
  """The interval lines and the closing summary of a run from `first_step` to `num_train_steps` (printed when
  `enabled`: process 0 of a multi-process run)."""

  def __init__(self, *, first_step: int, num_train_steps: int, images_per_step: int, enabled: bool = True):
    self._total, self._images_per_step, self._enabled = num_train_steps, images_per_step, enabled
    self._first_step = first_step
    self._start = self._last_time = time.monotonic()
    self._last_step = first_step
    self.last_metrics: dict[str, float] = {}
    # Per figure, over every evaluation hook (a VAE has two): (its last value, at that step), and for the
    # lower-is-better ones (its lowest value, at that step).
    self.last_eval: dict[str, tuple[float, int]] = {}
    self.best: dict[str, tuple[float, int]] = {}

  def kimg(self, step: int) -> float:
    """Thousands of real images shown to the model by the end of `step`."""
    return step * self._images_per_step / 1000

  def _log(self, *args) -> None:
    if self._enabled:
      logging.info(*args)

  def interval(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
    """Logs the line for `step` and returns the `perf/` scalars of the interval since the last one."""
    now = time.monotonic()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    self.last_metrics = metrics
    eta = (self._total - step) / rate if rate > 0 else 0.0
    figures = '  '.join(f'{name} {_number(metrics[name])}' for name in _LINE_METRICS if name in metrics)
    width = len(f'{self._total:,}')
    self._log('step %*s/%s  %.1f kimg  %.1f steps/s  ETA %s  %s', width, f'{step:,}', f'{self._total:,}',
              self.kimg(step), rate, _duration(eta), figures)
    return {'perf/steps_per_sec': rate, 'perf/images_per_sec': rate * self._images_per_step,
            'perf/kimg': self.kimg(step)}

  def evaluation(self, step: int, scores: dict[str, float]) -> None:
    """Logs one line of an evaluation's main figures, and keeps the best (lowest) FID and held-out negative
    ELBO seen so far with their steps."""
    for name, value in scores.items():
      self.last_eval[name] = (value, step)
      if name.endswith(_BEST_TRACKED) and (name not in self.best or value < self.best[name][0]):
        self.best[name] = (value, step)
    shown = []
    for metric in _EVAL_METRICS:
      for name, value in scores.items():
        if name == metric or name.endswith('_' + metric):
          shown.append(f'{metric} {_number(value)}')
    networks = sorted({name[:-len(metric) - 1] for name in scores for metric in _EVAL_METRICS
                       if name.endswith('_' + metric) and not name.startswith('heldout')})
    self._log('step %s evaluation%s: %s', f'{step:,}', f' ({", ".join(networks)})' if networks else '',
              '  '.join(shown))

  def finish(self, step: int, workdir: str) -> None:
    """Logs the closing line: steps, wall time, the last figures (an evaluation's with its best step, where
    an earlier one was better) and where the results are."""
    wall = time.monotonic() - self._start
    figures = [f'{n} {_number(self.last_metrics[n])}' for n in _LINE_METRICS if n in self.last_metrics]
    for name, (value, step_of_value) in self.last_eval.items():
      if name.endswith(_BEST_TRACKED):
        best, best_step = self.best[name]
        figures.append(f'{name} {_number(value)}'
                       + ('' if best_step == step_of_value else f' (best {_number(best)} at step {best_step:,})'))
    self._log('done: step %s of %s (%s this run, in %s); %s; results in %s', f'{step:,}', f'{self._total:,}',
              f'{step - self._first_step:,}', _duration(wall), '  '.join(figures) or 'no metrics logged', workdir)
