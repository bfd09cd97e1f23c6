"""`python -m aigc_jax.quality --config=configs/X.py --root=DIR [--seeds=3] [-- --config.<field>=value ...]`.

The quality protocol: GAN results vary from run to run, so a quality figure is a mean over seeds with its
spread. For each seed S the config trains once in its own workdir `DIR/seedS` (`--config.seed=S`, plus any
overrides after `--`), timed from the command's start to its end, and is then scored by
`python -m aigc_jax.evaluate --reference=half`: as many samples as the real-halves floor has on each side.
The floor (one half of the real data against the other) and uniform noise are scored with the same counts.

It writes, under DIR:
- `seedS.log`: the training command and its console output; `seedS.json`: its wall time and scores;
- `quality.json`: every seed, the floor, noise, and mean ± sample std over seeds of each metric;
- `quality.md`: the same as a Markdown table, and one row for the README's quality table;
- `samples.png`: 100 samples from seed 0's generator (a class-conditional one's: one class per row).

`python -m aigc_jax.quality --tabulate=DIR1,DIR2,... --readme=README.md` trains nothing: it rewrites the
table between the README's quality-table markers from those runs' `quality.json` (the floor, the rows
already there with each given run's row replacing its config's, new runs after them, noise), the held-out
likelihoods of the VAE runs among them between its likelihood-table markers, and publishes each run beside
the README: its `quality.json` as `docs/quality/<root's name>.json` and its `samples.png` as
`docs/images/<root's name>.png`. A published report can be given in place of its root, so the table can be
rebuilt after the runs are gone: `--tabulate=docs/quality/default.json,...`. With `--nokeep_other_rows` the
tables hold the given runs only.

Re-running with the same config and overrides reuses the seeds that finished (their `seedS.json`) and
resumes an interrupted run from its checkpoints (its wall time is then not recorded). A finished seed of
another config file, another `get_config()` result (the file or one it imports was edited) or other
overrides is refused, since its scores would be reported as this config's. Exit status: 0 when every seed
trained and was scored, 1 when a run failed (the line names its log), 2 for bad input.
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any

import ml_collections
from absl import app, flags

from aigc_jax import cli
from aigc_jax.config_errors import one_line
from aigc_jax.evaluation import quality_table

_CONFIG = flags.DEFINE_string('config', None, 'The config file to measure, e.g. configs/default.py.')
_ROOT = flags.DEFINE_string('root', None, 'Directory for the runs (DIR/seedS) and the results.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds 0..N-1, one training run each.')
_TABULATE = flags.DEFINE_list('tabulate', None, 'Roots of finished quality runs (or their published reports, '
                              'docs/quality/<name>.json): write their rows into --readme\'s tables instead of '
                              'training, and publish each report and sample grid under docs/.')
_README = flags.DEFINE_string('readme', None, 'With --tabulate: the Markdown file whose quality table to rewrite.')
_KEEP_OTHER_ROWS = flags.DEFINE_boolean('keep_other_rows', True, 'With --tabulate: keep the rows of configs not '
                                        'given; --nokeep_other_rows writes a table of the given runs only.')

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _module(name: str, *args: str) -> list[str]:
  return [sys.executable, '-m', f'aigc_jax.{name}', *args]


def _last_error_line(output: str) -> str:
  errors = [line for line in output.splitlines() if line.startswith('error:')]
  return errors[-1] if errors else (output.strip().splitlines() or ['(no output)'])[-1]


class RunFailed(Exception):
  pass


def _run(argv: list[str], log_path: str | None = None) -> str:
  """Runs a command to completion; its stdout, or RunFailed naming the command's last error line."""
  result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
  if log_path:
    with open(log_path, 'w') as log:
      log.write(' '.join(argv) + '\n' + result.stdout + result.stderr)
  if result.returncode:
    where = f' (full output: {log_path})' if log_path else ''
    raise RunFailed(f'{" ".join(argv[1:4])} ... exited with status {result.returncode}: '
                    f'{_last_error_line(result.stderr + result.stdout)}{where}')
  return result.stdout


def _scores(stdout: str) -> dict[str, Any]:
  """The JSON line `evaluate` prints."""
  lines = [line for line in stdout.splitlines() if line.startswith('{')]
  if not lines:
    raise RunFailed(f'evaluate printed no JSON line: {stdout.strip()[-300:]}')
  return json.loads(lines[-1])


def _has_checkpoints(workdir: str) -> bool:
  directory = os.path.join(workdir, 'checkpoints')
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def config_fingerprint(config: ml_collections.ConfigDict) -> str:
  """A digest of every value of `config`: a finished seed is reused only under the config that trained it."""
  return hashlib.sha256(config.to_json_best_effort(sort_keys=True).encode()).hexdigest()[:16]


def _finished_seed(root: str, seed: int) -> dict[str, Any] | None:
  path = os.path.join(root, f'seed{seed}.json')
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    cli.fail(f'--root: {path} cannot be read ({one_line(e)}); allowed: a new directory, or one a previous '
             'quality run wrote')


def check_finished_seeds(root: str, seeds: int, key: dict[str, Any]) -> None:
  """Refuses a root whose finished seeds were trained under another config file, config or overrides."""
  for seed in range(seeds):
    record = _finished_seed(root, seed)
    if record is not None and any(record.get(name) != value for name, value in key.items()):
      changed = next(name for name, value in key.items() if record.get(name) != value)
      what = {'config': 'another config file', 'config_fingerprint': 'another version of the config',
              'overrides': 'other overrides'}[changed]
      cli.fail(f'--root={root}: seed {seed} there was trained with {what} ({changed} {record.get(changed)!r}, '
               f'now {key[changed]!r}); allowed: a new --root, or the config and overrides it was trained with')


def measure_seed(key: dict[str, Any], root: str, seed: int) -> dict[str, Any]:
  """Trains (or reuses) seed `seed` of `key` (config file, its fingerprint, overrides) and scores it against
  the floor's half; the seed's record."""
  config, overrides = key['config'], key['overrides']
  record_path = os.path.join(root, f'seed{seed}.json')
  record = _finished_seed(root, seed)
  if record is not None:
    print(f'seed {seed}: reusing {record_path}', flush=True)
    return record
  workdir = os.path.join(root, f'seed{seed}')
  resumed = _has_checkpoints(workdir)
  start = time.monotonic()
  _run(_module('main', f'--config={config}', f'--workdir={workdir}', f'--config.seed={seed}', *overrides),
       os.path.join(root, f'seed{seed}.log'))
  wall = None if resumed else time.monotonic() - start
  scores = _scores(_run(_module('evaluate', f'--workdir={workdir}', '--reference=half')))
  record = {**key, 'seed': seed, 'workdir': workdir, 'train_wall_s': wall, 'resumed': resumed, 'scores': scores}
  with open(record_path + '.tmp', 'w') as f:
    json.dump(record, f, indent=1)
  os.replace(record_path + '.tmp', record_path)
  took = f'trained in {wall:.0f} s' if wall is not None else 'resumed (wall time not recorded)'
  print(f'seed {seed}: {took}; FID {quality_table.figure(quality_table.metric(scores, "fid"))}', flush=True)
  return record


def _report_path(source: str) -> str:
  """A --tabulate entry's quality.json: the entry itself when it is a .json file, else DIR/quality.json."""
  return source if source.endswith('.json') else os.path.join(source, 'quality.json')


def _published_name(source: str) -> str:
  """The name a run is published under: its root's name, or the report file's name without .json."""
  return os.path.basename(os.path.normpath(source)).removesuffix('.json')


def tabulate(sources: list[str], readme_path: str, keep_other_rows: bool = True) -> None:
  """Rewrites the quality tables of `readme_path` from the reports of `sources` (protocol roots, or reports
  published before), keeping the rows of other configs unless `keep_other_rows` is False, and publishes each
  report and sample grid beside the README: `docs/quality/<name>.json`, `docs/images/<name>.png`."""
  reports = []
  for source in sources:
    try:
      with open(_report_path(source)) as f:
        reports.append(json.load(f))
      quality_table.check_report(reports[-1])
    except (OSError, ValueError) as e:
      cli.fail(f'--tabulate: {source} holds no readable quality.json ({one_line(e)}); allowed: roots of '
               'finished quality runs, or their published docs/quality/<name>.json')
  try:
    with open(readme_path) as f:
      readme = f.read()
    kept = lambda begin, end: quality_table.between(readme, begin, end) if keep_other_rows else None
    readme = quality_table.with_readme_table(
        readme, quality_table.readme_table(reports, kept(quality_table.README_BEGIN, quality_table.README_END)),
        quality_table.likelihood_table(reports, kept(quality_table.LIKELIHOOD_BEGIN, quality_table.LIKELIHOOD_END)))
  except (OSError, ValueError) as e:
    cli.fail(f'--readme={readme_path}: {one_line(e)}')
  docs = os.path.join(os.path.dirname(os.path.abspath(readme_path)), 'docs')
  for source in sources:
    name = _published_name(source)
    published = [(_report_path(source), 'quality', '.json')]
    if not source.endswith('.json'):  # a published report's grid is already docs/images/<name>.png
      published.append((os.path.join(source, 'samples.png'), 'images', '.png'))
    for found, folder, suffix in published:
      target = os.path.join(docs, folder, name + suffix)
      if os.path.exists(found) and not (os.path.exists(target) and os.path.samefile(found, target)):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(found, target)
        print(f'{found} -> {target}')
  with open(readme_path + '.tmp', 'w') as f:
    f.write(readme)
  os.replace(readme_path + '.tmp', readme_path)
  print(f'wrote the quality table of {len(reports)} run(s) into {readme_path}')


def main(argv: list[str]) -> None:
  if _TABULATE.value or _README.value:
    if not (_TABULATE.value and _README.value) or _CONFIG.value or _ROOT.value or len(argv) > 1:
      cli.fail('--tabulate=DIR,... and --readme=FILE go together, without --config, --root or overrides')
    tabulate(_TABULATE.value, _README.value, _KEEP_OTHER_ROWS.value)
    return
  overrides = list(argv[1:])
  bad = [arg for arg in overrides if not arg.startswith('--config.')]
  if bad:
    cli.fail(f'unexpected argument {bad[0]!r}; allowed after --: --config.<field>=<value> for every seed')
  if not _CONFIG.value or not _ROOT.value:
    cli.fail('--config and --root are required, e.g. --config=configs/default.py --root=/tmp/quality')
  if _SEEDS.value < 1:
    cli.fail(f'--seeds={_SEEDS.value} is not allowed; allowed: an integer >= 1')
  config_path = os.path.abspath(_CONFIG.value)
  config = cli.load_config_file(config_path)
  for arg in overrides:
    problem = cli.override_problem(arg, config)
    if problem:
      cli.fail(problem)
  if any(re.match(r'--config\.seed=', arg) for arg in overrides):
    cli.fail('--config.seed is set by the protocol (0..N-1); allowed: --seeds=N')
  config_name = os.path.relpath(config_path, REPO_ROOT) if config_path.startswith(REPO_ROOT + os.sep) else config_path
  root = os.path.abspath(_ROOT.value)
  if os.path.isfile(root):
    cli.fail(f'--root={_ROOT.value} is a file; allowed: a new directory, or one this tool wrote before')
  foreign = sorted(name for name in (os.listdir(root) if os.path.isdir(root) else [])
                   if not re.fullmatch(r'seed\d+(\.json|\.log|\.json\.tmp)?|quality\.(json|md)|samples\.png', name))
  if foreign:
    cli.fail(f'--root={_ROOT.value} holds {foreign[0]!r}, which this tool did not write; allowed: a new directory, '
             'or one a previous quality run wrote (its finished seeds are reused)')
  key = {'config': config_path, 'config_fingerprint': config_fingerprint(config), 'overrides': overrides}
  check_finished_seeds(root, _SEEDS.value, key)
  os.makedirs(root, exist_ok=True)
  print(f'quality of {config_name} over {_SEEDS.value} seed(s) under {root}', flush=True)
  try:
    per_seed = [measure_seed(key, root, seed) for seed in range(_SEEDS.value)]
    first = per_seed[0]['workdir']
    floor = _scores(_run(_module('evaluate', f'--workdir={first}', '--baseline=real_halves')))
    noise = _scores(_run(_module('evaluate', f'--workdir={first}', '--baseline=noise', '--reference=half')))
    _run(_module('sample', f'--workdir={first}', '--num_samples=100', f'--output={os.path.join(root, "samples.png")}'))
  except RunFailed as e:
    cli.fail(str(e), status=cli.EXIT_RUN_FAILED)
  summary = quality_table.summarise(per_seed)
  scores = per_seed[0]['scores']
  table = quality_table.markdown(config_name, overrides, summary, floor, noise, scores['feature_network'].split('-')[0],
                   scores['num_samples'], scores['num_reference'])
  with open(os.path.join(root, 'quality.json'), 'w') as f:
    json.dump({'config': config_name, 'overrides': overrides, 'seeds': per_seed, 'floor': floor, 'noise': noise,
               'summary': summary}, f, indent=1)
  with open(os.path.join(root, 'quality.md'), 'w') as f:
    f.write(table)
  print(table, end='', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv))
