"""The quality protocol's summary over seeds and its Markdown table (`python -m aigc_jax.quality` runs the
protocol; these functions only read its per-seed records)."""
from typing import Any

import numpy as np

# The figures of the table, in order: (metric suffix, column title). Absent ones (e.g. label accuracy of an
# unconditional model) are left out.
METRICS = (('fid', 'FID'), ('kid', 'KID'), ('precision', 'precision'), ('recall', 'recall'), ('is', 'IS'),
           ('rarest_class_share', 'rarest class'), ('label_accuracy', 'label accuracy'),
           ('nearest_train_ratio', 'nearest-train ratio'),
           ('heldout_neg_elbo', 'held-out negative ELBO (nats)'), ('heldout_nll', 'held-out NLL, IWAE (nats)'))


def metric(scores: dict[str, Any], suffix: str) -> float | None:
  """The figure `<feature network>_<suffix>` of an evaluate line (a VAE's held-out likelihood: `<suffix>`),
  or None."""
  network = scores.get('feature_network', '').split('-')[0]
  return scores.get(f'{network}_{suffix}', scores.get(suffix))


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
  """Mean, sample std (None for one seed: no spread to measure) and count over seeds of each metric and of
  the training wall time."""
  summary = {}
  for suffix, _ in METRICS:
    values = [metric(seed['scores'], suffix) for seed in per_seed]
    values = [v for v in values if v is not None]
    if values:
      summary[suffix] = _mean_and_std(values)
  walls = [seed['train_wall_s'] for seed in per_seed if seed.get('train_wall_s') is not None]
  if walls:
    summary['train_wall_s'] = _mean_and_std(walls)
  return summary


def _mean_and_std(values: list[float]) -> dict[str, Any]:
  return {'mean': float(np.mean(values)), 'std': float(np.std(values, ddof=1)) if len(values) > 1 else None,
          'n': len(values)}


def _mean_spread(entry: dict[str, Any], show=None) -> str:
  """`mean ± std`, the std to the mean's decimals (or shown like it by `show`); the mean alone for one seed."""
  if show is None:
    mean = figure(entry['mean'])
    decimals = len(mean.split('.')[1]) if '.' in mean and 'e' not in mean else 0
    return mean + (f' ± {entry["std"]:.{decimals}f}' if entry['std'] is not None else '')
  return show(entry['mean']) + (f' ± {show(entry["std"])}' if entry['std'] is not None else '')


def figure(value: float | None) -> str:
  """A table cell: three significant digits below 100 (trailing zeros kept), whole numbers above, '–' for
  none."""
  if value is None:
    return '–'
  return f'{value:#.3g}' if abs(value) < 100 else f'{value:.0f}'


def markdown(config: str, overrides: list[str], summary: dict[str, dict[str, float]], floor: dict[str, Any],
             noise: dict[str, Any], network: str, num_samples: int, num_reference: int) -> str:
  """The protocol's table (one metric a row) and a one-line row for the README's quality table."""
  n = max((entry['n'] for entry in summary.values()), default=0)
  title = f'`{config}`' + (f' `{" ".join(overrides)}`' if overrides else '')
  lines = [f'Quality of {title} over {n} seed(s): {network} features, {num_samples} samples against '
           f'{num_reference} real images (the floor: two disjoint real halves of those sizes).', '',
           '| metric | mean ± std over seeds | real halves (floor) | uniform noise |', '|---|---|---|---|']
  for suffix, heading in METRICS:
    if suffix in summary:
      lines.append(f'| {heading} | {_mean_spread(summary[suffix])} | '
                   f'{figure(metric(floor, suffix))} | {figure(metric(noise, suffix))} |')
  if 'train_wall_s' in summary:
    wall = summary['train_wall_s']
    lines.append(f'| training wall time (s) | {_mean_spread(wall, lambda v: f"{v:.0f}")} | | |')
  lines += ['', 'README row (config | seeds | FID | precision | recall | rarest class | label accuracy | '
            'nearest-train ratio | wall):', '', readme_row(title, summary, floor)]
  return '\n'.join(lines) + '\n'


README_COLUMNS = ('config', 'seeds', 'FID', 'precision', 'recall', 'rarest class', 'label accuracy',
                  'nearest-train ratio', 'training time')
_README_FIGURES = ('precision', 'recall', 'rarest_class_share', 'label_accuracy', 'nearest_train_ratio')
README_BEGIN = '<!-- quality table: written by python -m aigc_jax.quality --tabulate; do not edit by hand -->'
README_END = '<!-- end of quality table -->'


def readme_row(title: str, summary: dict[str, dict[str, float]], floor: dict[str, Any]) -> str:
  """One config's row of the README's quality table: each figure's mean ± std over seeds, FID also as a
  multiple of the floor's, and the mean training time."""
  n = max((entry['n'] for entry in summary.values()), default=0)
  fid, floor_fid = summary.get('fid'), metric(floor, 'fid')
  ratio = f' ({fid["mean"] / floor_fid:.1f}× floor)' if fid and floor_fid else ''
  cells = [f'{_mean_spread(fid)}{ratio}' if fid else '–']
  cells += [_mean_spread(summary[suffix]) if suffix in summary else '–' for suffix in _README_FIGURES]
  wall = summary.get('train_wall_s')
  cells.append(f'{wall["mean"] / 60:.1f} min' if wall else '–')
  return f'| {title} | {n} | ' + ' | '.join(cells) + ' |'


def _reference_row(title: str, scores: dict[str, Any]) -> str:
  """The floor's or noise's row: one evaluation, so no seeds and no training time."""
  cells = [figure(metric(scores, suffix)) for suffix in ('fid', *_README_FIGURES)]
  return f'| {title} | – | ' + ' | '.join(cells) + ' | – |'


def _title(report: dict[str, Any]) -> str:
  return f'`{report["config"]}`' + (f' `{" ".join(report["overrides"])}`' if report['overrides'] else '')


def readme_table(reports: list[dict[str, Any]], current: str | None = None) -> str:
  """The README's quality table from the protocol's `quality.json` reports: the real-halves floor, one row
  per report in the given order, and uniform noise. With `current` (the table now in the README), the rows
  of configs without a report here are kept in their places, and a report's row replaces its config's.
  Raises ValueError if the reports were not scored alike (another feature network or other sample counts),
  or not like the kept rows (another floor), since their figures would not compare."""
  if not reports:
    raise ValueError('no quality report to tabulate')
  first = reports[0]['floor']
  for report in reports[1:]:
    floor = report['floor']
    if (floor.get('feature_network'), floor.get('num_samples'), floor.get('num_reference')) != (
        first.get('feature_network'), first.get('num_samples'), first.get('num_reference')):
      raise ValueError(f'the report of {report["config"]} was scored with {floor.get("feature_network")}, '
                       f'{floor.get("num_samples")} vs {floor.get("num_reference")} images, the first with '
                       f'{first.get("feature_network")}, {first.get("num_samples")} vs {first.get("num_reference")}; '
                       'allowed: reports scored alike')
  floor_row = _reference_row(FLOOR_TITLE, first)
  rows = {_title(report): readme_row(_title(report), report['summary'], report['floor']) for report in reports}
  kept = _config_rows(current, (FLOOR_TITLE, NOISE_TITLE)) if current else []
  if any(title not in rows for title, _ in kept):
    current_floor = dict(_config_rows(current, ())).get(FLOOR_TITLE)
    if current_floor != floor_row:
      raise ValueError(f'the table\'s floor row ({current_floor}) differs from these reports\' ({floor_row}), so '
                       'its other rows would not compare; allowed: reports scored like the table, or '
                       '--tabulate with every run of the table')
  body = [rows.pop(title, row) for title, row in kept] + list(rows.values())
  return '\n'.join(['| ' + ' | '.join(README_COLUMNS) + ' |', '|' + ' --- |' * len(README_COLUMNS), floor_row,
                    *body, _reference_row(NOISE_TITLE, reports[0]['noise'])])


FLOOR_TITLE = 'real digits, one half against the other (the floor)'
NOISE_TITLE = 'uniform noise'


def _config_rows(table: str, leave_out: tuple[str, ...]) -> list[tuple[str, str]]:
  """(title, row) of each data row of a Markdown table, in order, but those titled as in `leave_out`."""
  rows = []
  for line in table.splitlines()[2:]:
    if line.startswith('| '):
      title = line[2:].split(' | ')[0]
      if title not in leave_out:
        rows.append((title, line))
  return rows


LIKELIHOOD_BEGIN = ('<!-- likelihood table: written by python -m aigc_jax.quality --tabulate; '
                    'do not edit by hand -->')
LIKELIHOOD_END = '<!-- end of likelihood table -->'
_REPORT_KEYS = ('config', 'overrides', 'seeds', 'floor', 'noise', 'summary')


def check_report(report: Any) -> None:
  """ValueError unless `report` has the fields of a protocol's `quality.json`."""
  missing = [key for key in _REPORT_KEYS if not isinstance(report, dict) or key not in report]
  if missing:
    raise ValueError(f'not a finished quality report: it lacks {", ".join(missing)}')


def likelihood_table(reports: list[dict[str, Any]], current: str | None = None) -> str | None:
  """The held-out likelihoods of the reports that have them (VAEs): negative log-likelihood by importance
  sampling (IWAE bound) and negative ELBO, mean ± std over seeds; None when no report has them. With
  `current` (the table now in the README), rows of configs without a report here are kept."""
  rows = {}
  for report in reports:
    summary = report['summary']
    if 'heldout_nll' not in summary:
      continue
    counts = {seed['scores'].get('heldout_importance_samples') for seed in report['seeds']}
    k = f'{counts.pop():,}' if len(counts) == 1 and None not in counts else 'mixed'
    nats = lambda suffix: _mean_spread(summary[suffix], lambda v: f'{v:.1f}') if suffix in summary else '–'
    rows[_title(report)] = (f'| {_title(report)} | {summary["heldout_nll"]["n"]} | {k} | {nats("heldout_nll")} | '
                            f'{nats("heldout_neg_elbo")} |')
  if not rows:
    return None
  kept = _config_rows(current, ()) if current else []
  body = [rows.pop(title, row) for title, row in kept] + list(rows.values())
  return '\n'.join(['| config | seeds | importance samples | held-out NLL (nats) | held-out negative ELBO (nats) |',
                    '| --- | --- | --- | --- | --- |', *body])


def _replace_between(text: str, begin_marker: str, end_marker: str, content: str, what: str) -> str:
  begin, end = text.find(begin_marker), text.find(end_marker)
  if begin < 0 or end < begin:
    raise ValueError(f'no {what} markers: a line {begin_marker!r}, later a line {end_marker!r}')
  return text[:begin + len(begin_marker)] + '\n' + content + '\n' + text[end:]


def between(text: str, begin_marker: str, end_marker: str) -> str | None:
  """The text between two marker lines, or None when they are missing."""
  begin, end = text.find(begin_marker), text.find(end_marker)
  return text[begin + len(begin_marker):end].strip('\n') if 0 <= begin < end else None


def with_readme_table(readme: str, table: str, likelihoods: str | None = None) -> str:
  """`readme` with the text between its quality-table markers replaced by `table`, and, when given, between
  its likelihood-table markers by `likelihoods`; ValueError when the markers are missing."""
  readme = _replace_between(readme, README_BEGIN, README_END, table, 'quality table')
  if likelihoods is not None:
    readme = _replace_between(readme, LIKELIHOOD_BEGIN, LIKELIHOOD_END, likelihoods, 'likelihood table')
  return readme
