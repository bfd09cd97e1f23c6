"""The benchmark end to end on the 8 fake CPU devices: a valid JSON line, a report, one-line errors."""
import json
import os
import subprocess
import sys

import pytest

from aigc_jax import cpu
from aigc_jax.benchmark import measure, report
from tests.conftest import REPO_ROOT, env_with_devices

REQUIRED_KEYS = ('model', 'batch_size', 'device_kind', 'device_count', 'images_per_sec',
                 'images_per_sec_per_device', 'step_ms', 'compile_s', 'model_tflops_per_sec_per_device', 'mfu')
TINY = ['--config=configs/benchmark.py', '--config.batch_size=16', '--config.model.width_multiplier=0.125',
        '--config.data.shuffle_buffer=64', '--config.benchmark.warmup_steps=2', '--config.benchmark.timed_steps=3',
        '--config.benchmark.pipeline_batches=3', '--config.benchmark.gemm_size=128']


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'aigc_jax.benchmark', *args], cwd=REPO_ROOT, env=dict(os.environ),
                        capture_output=True, text=True, timeout=600)


@pytest.fixture(scope='module')
def results_file(tmp_path_factory, tfds_data_dir):
  """Two real runs on the fake devices, appended to one file: dcgan synthetic and mlp end to end."""
  path = tmp_path_factory.mktemp('bench') / 'results.jsonl'
  for extra in (['--config.model.name=dcgan', '--config.benchmark.mode=synthetic'],
                ['--config.model.name=mlp', '--config.benchmark.mode=pipeline', '--config.compute_dtype=bfloat16']):
    result = _run(*TINY, f'--config.data.dir={tfds_data_dir}', f'--results={path}', *extra)
    assert result.returncode == 0, result.stderr[-3000:]
  return path


def test_each_run_appends_one_valid_json_line(results_file):
  records = [json.loads(line) for line in results_file.read_text().splitlines()]
  assert [(r['model'], r['mode'], r['compute_dtype']) for r in records] == [
      ('dcgan', 'synthetic', 'float32'), ('mlp', 'pipeline', 'bfloat16')]
  for record in records:
    assert all(key in record for key in REQUIRED_KEYS), sorted(set(REQUIRED_KEYS) - set(record))
    assert record['device_count'] == 8 and record['process_count'] == 1 and record['device_kind'] == 'cpu'
    assert record['timed_steps'] == 3 and record['batch_size'] == 16
    assert 0 < record['step_ms'] <= record['step_ms_p90']
    assert record['images_per_sec'] == pytest.approx(16 / (record['step_ms'] / 1e3))
    assert record['window_step_ms'] > 0
    assert record['window_images_per_sec'] == pytest.approx(16 / (record['window_step_ms'] / 1e3))
    assert record['images_per_sec_per_device'] == pytest.approx(record['images_per_sec'] / 8)
    assert record['peak_source'] == 'measured 128^2 GEMM' and record['peak_tflops_per_device'] > 0
    assert record['mfu'] == pytest.approx(record['model_tflops_per_sec_per_device']
                                          / record['peak_tflops_per_device'])
    assert record['model_flops_per_step'] > 0 and record['xla_flops_per_step_per_device'] > 0
    assert record['pipeline_images_per_sec'] > 0 and record['compile_s'] > 0
    assert record['peak_memory_bytes'] is None  # CPU keeps no allocator statistics
    assert record['compiled_memory_bytes'] > 0
    # The CPU fast path in float32 only; the record says so, with the options the step was compiled with.
    fast_path = record['compute_dtype'] == 'float32'
    assert record['cpu_fast_path'] is fast_path
    assert record['compiler_options'] == (cpu.COMPILER_OPTIONS if fast_path else None)
    assert record['malloc_huge_pages'] is ('glibc.malloc.hugetlb=1' in os.environ.get('GLIBC_TUNABLES', ''))


def test_report_writes_a_table_and_a_plot(results_file, tmp_path):
  out = tmp_path / 'report'
  result = _run('report', str(results_file), str(results_file), f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  table = (tmp_path / 'report.md').read_text()
  assert table == result.stdout
  rows = table.splitlines()[2:]
  assert len(rows) == 2 and '| cpu x8 | dcgan | float32 | synthetic | 16 |' in rows[0]
  assert rows[0].split('|')[7].strip() == '2'  # the same file twice: two runs of each configuration
  assert (tmp_path / 'report.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('args,message', [
    (['--config.benchmark.mode=fast'], "config.benchmark.mode='fast' is not allowed; allowed: synthetic, pipeline"),
    (['--config.benchmark.timed_steps=0'], 'config.benchmark.timed_steps=0 is not allowed; allowed: an integer >= 1'),
    (['--config.model.name=vit'], "config.model.name='vit' is not allowed; allowed: mlp, dcgan"),
    ([], '--results is required'),
])
def test_bad_input_is_one_clear_line(args, message, tfds_data_dir, tmp_path):
  results = [] if not args else [f'--results={tmp_path / "r.jsonl"}']
  result = _run(*TINY, f'--config.data.dir={tfds_data_dir}', *results, *args)
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert errors == [f'error: {message}'] or (len(errors) == 1 and message in errors[0]), result.stderr[-3000:]
  assert not (tmp_path / 'r.jsonl').exists()


def test_report_rejects_a_file_that_is_not_results(tmp_path):
  bad = tmp_path / 'notes.txt'
  bad.write_text('hello\n')
  result = _run('report', str(bad), f'--out={tmp_path / "report"}')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert f'error: {bad}:1 is not a JSON line' in result.stderr


def test_peak_table_picks_the_right_accelerator():
  assert measure.table_peak_tflops('TPU v5 lite', 'bfloat16') == 197.0
  assert measure.table_peak_tflops('TPU v5p', 'bfloat16') == 459.0
  assert measure.table_peak_tflops('NVIDIA H100 80GB HBM3', 'bfloat16') == 989.0
  assert measure.table_peak_tflops('NVIDIA H200', 'float32') == 494.7
  assert measure.table_peak_tflops('cpu', 'float32') is None


def test_report_keeps_labelled_variants_apart_and_takes_the_median_run():
  base = {'model': 'dcgan', 'batch_size': 256, 'width_multiplier': 1, 'compute_dtype': 'float32', 'mode': 'synthetic',
          'device_kind': 'cpu', 'device_count': 1, 'gan_update': 'simultaneous', 'step_ms': 1.0, 'step_ms_p90': 1.0}
  runs = [{**base, 'images_per_sec': rate, 'images_per_sec_per_device': rate, 'label': label}
          for rate, label in ((700, ''), (690, ''), (680, ''), (530, 'ablation'))]
  rows = report.summarise(runs)
  assert [(r['label'], r['images_per_sec'], r['runs']) for r in rows] == [('', 690, 3), ('ablation', 530, 1)]
  table = report.markdown_table(rows)
  assert '| dcgan (simultaneous) |' in table and '| dcgan (simultaneous) [ablation] |' in table


PARTS = ['parts', '--config=configs/benchmark.py', '--config.batch_size=8', '--config.model.width_multiplier=0.125',
         "--config.benchmark.image_shape=(28,28,1)", '--config.benchmark.warmup_steps=1',
         '--config.benchmark.timed_steps=1']


def test_parts_times_each_variant_of_the_fast_path_against_the_whole(tmp_path):
  out = tmp_path / 'parts.jsonl'
  one_device = env_with_devices(1)  # as it is run: 8 devices compile slowly
  result = subprocess.run([sys.executable, '-m', 'aigc_jax.benchmark', *PARTS, '--rounds=2',
                           '--variants=off,no_winograd', f'--results={out}'], cwd=REPO_ROOT, env=one_device,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r['variant'] for r in records] == ['fast_path', 'off', 'no_winograd']  # the whole fast path first
  for record in records:
    assert record['model'] == 'dcgan' and record['rounds'] == 2 and len(record['step_ms_per_round']) == 2
    assert record['device_count'] == 1
    assert record['step_ms'] > 0 and record['compile_s'] > 0
    assert record['ratio_min'] <= record['ratio_to_fast_path'] <= record['ratio_max']
  assert records[0]['ratio_min'] == records[0]['ratio_max'] == 1.0
  rows = [line for line in result.stdout.splitlines() if line.startswith('| ') and '---' not in line][1:]
  assert [row.split('|')[1].strip() for row in rows] == ['fast_path', 'off', 'no_winograd']


@pytest.mark.parametrize('args,message', [
    (['--variants=no_winograd,fastest'],
     "--variants: 'fastest' is not a variant of model 'dcgan'; allowed: fast_path, flax_conv, "),
    (['--config.model.name=mlp', '--variants=flax_conv'],
     "--variants: 'flax_conv' is not a variant of model 'mlp'; allowed: fast_path, off"),
    (['--config.compute_dtype=bfloat16'], 'parts measures the CPU fast path, which does not apply to this run'),
    (['--rounds=0'], '--rounds=0 is not allowed; allowed: an integer >= 1'),
])
def test_parts_refuses_what_it_cannot_measure_in_one_line(args, message, tmp_path):
  result = _run(*PARTS, *args, f'--results={tmp_path / "r.jsonl"}')
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
  assert not (tmp_path / 'r.jsonl').exists()
