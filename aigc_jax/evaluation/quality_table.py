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
  """`mean ± std`, or the mean alone for one seed."""
  show = show or figure
  return show(entry['mean']) + (f' ± {show(entry["std"])}' if entry['std'] is not None else '')


def figure(value: float | None) -> str:
  """A table cell: three significant digits below 100, whole numbers above, '–' for none."""
  if value is None:
    return '–'
  return f'{value:.3g}' if abs(value) < 100 else f'{value:.0f}'


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
  fid, floor_fid = summary.get('fid'), metric(floor, 'fid')
  ratio = f' ({fid["mean"] / floor_fid:.1f}× floor)' if fid and floor_fid else ''
  cells = [f'{_mean_spread(fid)}{ratio}' if fid else '–']
  for suffix in ('precision', 'recall', 'rarest_class_share', 'label_accuracy', 'nearest_train_ratio'):
    cells.append(_mean_spread(summary[suffix]) if suffix in summary else '–')
  wall = summary.get('train_wall_s')
  cells.append(f'{wall["mean"] / 60:.1f} min' if wall else '–')
  lines += ['', 'README row (config | seeds | FID | precision | recall | rarest class | label accuracy | '
            'nearest-train ratio | wall):', '', f'| {title} | {n} | ' + ' | '.join(cells) + ' |']
  return '\n'.join(lines) + '\n'
