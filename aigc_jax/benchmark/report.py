"""The report over benchmark results gathered on one machine or many: a markdown table and a plot.

  python -m aigc_jax.benchmark report FILE... [--out=benchmarks/report] [--torch=FILE]

One row per configuration (device, model, dtype, mode, batch, width, update, label): the run with the
median images/s. With `--torch`, PyTorch eager lines (`benchmarks/torch_reference.py`) on the same device
and batch are set beside ours. The plot needs matplotlib (the `plot` extra); without it only the table is
written.
"""
import json
import os
from typing import Any

_GROUP_KEYS = ('device_kind', 'device_count', 'model', 'compute_dtype', 'mode', 'batch_size', 'width_multiplier')


def _json_lines(path: str):
  """`(line number, record)` for each non-empty line of `path`; raises ValueError naming a bad line."""
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield number, json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{number} is not a JSON line: {e.msg}') from None


def load_results(paths: list[str]) -> list[dict[str, Any]]:
  """Every JSON line of every file; raises ValueError naming the file and line of a bad one."""
  results = []
  for path in paths:
    for number, record in _json_lines(path):
      missing = [key for key in _GROUP_KEYS + ('images_per_sec_per_device', 'step_ms') if key not in record]
      if missing:
        raise ValueError(f'{path}:{number} lacks key {missing[0]!r}; is it a benchmark result file?')
      results.append(record)
  return results


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One row per configuration and label: the run with the median images/s (repeated runs damp a noisy
  machine; `config.benchmark.label` keeps variants such as ablations apart)."""
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for record in results:
    key = (*(record[key] for key in _GROUP_KEYS), _update_of(record), record.get('label') or '')
    groups.setdefault(key, []).append(record)
  rows = []
  for key in sorted(groups, key=lambda k: tuple(str(v) for v in k)):
    runs = sorted(groups[key], key=lambda r: r['images_per_sec'])
    rows.append({**runs[(len(runs) - 1) // 2], 'runs': len(runs)})
  return rows


def _update_of(record: dict[str, Any]) -> str:
  from aigc_jax.models import VAE_FAMILIES  # pylint: disable=g-import-not-at-top  (flax; measuring imports it)
  # Results written before the option existed are alternating-update GAN steps.
  return record.get('gan_update') or ('-' if record['model'] in VAE_FAMILIES else 'alternating')


def _model_label(record: dict[str, Any]) -> str:
  label = f"{record['model']} (simultaneous)" if _update_of(record) == 'simultaneous' else record['model']
  return f"{label} [{record['label']}]" if record.get('label') else label


def _fmt(value, spec: str) -> str:
  return '-' if value is None else format(value, spec)


def markdown_table(rows: list[dict[str, Any]]) -> str:
  header = ('| device | model | dtype | mode | batch | width | runs | step ms (median / p90 / min) | img/s | windowed img/s '
            '| img/s/device '
            '| input img/s | compile s | model TFLOP/s/device | XLA TFLOP/s/device | peak TFLOP/s (source) | MFU |')
  lines = [header, '|' + '---|' * (header.count('|') - 1)]
  for r in rows:
    lines.append(
        f"| {r['device_kind']} x{r['device_count']} | {_model_label(r)} | {r['compute_dtype']} | {r['mode']} "
        f"| {r['batch_size']} | {r['width_multiplier']:g} | {r['runs']} "
        f"| {r['step_ms']:.1f} / {r['step_ms_p90']:.1f} / {_fmt(r.get('step_ms_min'), '.1f')} "
        f"| {r['images_per_sec']:.0f} | {_fmt(r.get('window_images_per_sec'), '.0f')} "
        f"| {r['images_per_sec_per_device']:.0f} | {_fmt(r.get('pipeline_images_per_sec'), '.0f')} "
        f"| {_fmt(r.get('compile_s'), '.1f')} | {_fmt(r.get('model_tflops_per_sec_per_device'), '.4f')} "
        f"| {_fmt(r.get('xla_tflops_per_sec_per_device'), '.4f')} "
        f"| {_fmt(r.get('peak_tflops_per_device'), '.3f')} ({r.get('peak_source') or '-'}) "
        f"| {_fmt(r.get('mfu'), '.1%')} |")
  return '\n'.join(lines) + '\n'


def plot(rows: list[dict[str, Any]], path: str) -> None:
  """Two bar charts, images/s per device and MFU, one bar per configuration."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  labels = [f"{r['device_kind']} x{r['device_count']}\n{_model_label(r)} b{r['batch_size']} w{r['width_multiplier']:g} "
            f"{r['compute_dtype']} {r['mode']}" for r in rows]
  kinds = sorted({r['device_kind'] for r in rows})  # one colour per accelerator
  fig, axes = plt.subplots(1, 2, figsize=(14, max(3.0, 0.45 * len(rows) + 1.5)), sharey=True)
  for ax, key, title in ((axes[0], 'images_per_sec_per_device', 'images/s per device'),
                         (axes[1], 'mfu', 'MFU (model FLOP/s / peak)')):
    values = [r.get(key) or 0.0 for r in rows]
    ax.barh(range(len(rows)), values, color=[f'C{kinds.index(r["device_kind"]) % 10}' for r in rows])
    ax.set_title(title)
    ax.grid(axis='x', alpha=0.3)
  axes[0].set_yticks(range(len(rows)), labels, fontsize=7)
  axes[0].invert_yaxis()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def load_torch_results(path: str) -> list[dict[str, Any]]:
  """The JSON lines of `benchmarks/torch_reference.py` runs; raises ValueError naming a bad line."""
  results = []
  for number, record in _json_lines(path):
    if not {'framework', 'model', 'batch_size', 'images_per_sec'} <= set(record):
      raise ValueError(f'{path}:{number} is not a torch_reference.py result line')
    results.append(record)
  return results


def torch_comparison(rows: list[dict[str, Any]], torch_results: list[dict[str, Any]]) -> str:
  """A markdown table of our float32 step against PyTorch eager's for the same model, update, batch and
  device (PyTorch's `device` is 'cpu' or the GPU's name, which is JAX's `device_kind` on one GPU)."""
  lines = ['| device | model | update | batch | ours img/s | PyTorch img/s | ours / PyTorch |', '|---|---|---|---|---|---|---|']
  for t in torch_results:
    device = t.get('device', 'cpu')
    ours = [r for r in rows if r['model'] == t['model'] and r['batch_size'] == t['batch_size']
            and _update_of(r) == t.get('update', 'alternating') and r['compute_dtype'] == 'float32'
            and r['device_count'] == 1 and r['device_kind'].lower() == device.lower()]
    best = max(ours, key=lambda r: r['images_per_sec'], default=None)
    lines.append(f"| {device} | {t['model']} | {t.get('update', 'alternating')} | {t['batch_size']} "
                 f"| {_fmt(best and best['images_per_sec'], '.0f')} | {t['images_per_sec']:.0f} "
                 f"| {_fmt(best and best['images_per_sec'] / t['images_per_sec'], '.2f')} |")
  return '\n'.join(lines) + '\n'


def report(paths: list[str], out: str, torch_path: str | None = None) -> str:
  """Writes OUT.md (and OUT.png where matplotlib is installed) from result files; returns the markdown."""
  rows = summarise(load_results(paths))
  if not rows:
    raise ValueError(f'no results in {", ".join(paths)}')
  table = markdown_table(rows)
  if torch_path and os.path.isfile(torch_path) and os.path.getsize(torch_path):
    table += '\nPyTorch eager on the same device (float32):\n\n' + torch_comparison(rows, load_torch_results(torch_path))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out + '.md', 'w') as f:
    f.write(table)
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return table  # the table alone: the plot is an extra (`pip install aigc_jax[plot]`)
  plot(rows, out + '.png')
  return table
