"""launch/device_check.sh: its CPU smoke run end to end (every row, the report), and its one-line refusals.
The benchmark it runs imports none of TensorFlow, TFDS, CLU or Orbax."""
import json
import os
import subprocess
import sys

from tests.conftest import REPO_ROOT, env_with_devices

_BLOCKED = ('tensorflow', 'tensorflow_datasets', 'clu', 'orbax')
# Runs the benchmark's entry point with those packages made unimportable, as in a bare GPU container.
_WITHOUT_HEAVY_PACKAGES = f'''
import importlib.abc, runpy, sys
class Blocked(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in {_BLOCKED!r}:
      raise ImportError(f'{{name}} is blocked in this test')
sys.meta_path.insert(0, Blocked())
sys.argv = ['aigc_jax.benchmark'] + sys.argv[1:]
try:
  runpy.run_module('aigc_jax.benchmark', run_name='__main__', alter_sys=True)
finally:
  print('LOADED', sorted({{m.split('.')[0] for m in sys.modules}} & set({_BLOCKED!r})), file=sys.stderr)
'''


def _env():
  return env_with_devices(None)


def test_synthetic_benchmark_needs_no_tensorflow_tfds_clu_or_orbax(tmp_path):
  out = tmp_path / 'r.jsonl'
  result = subprocess.run(
      [sys.executable, '-c', _WITHOUT_HEAVY_PACKAGES, '--config=configs/benchmark.py', f'--results={out}',
       '--config.model.name=dcgan', '--config.batch_size=8', '--config.model.width_multiplier=0.125',
       '--config.benchmark.image_shape=(32,32,3)', '--config.benchmark.warmup_steps=1',
       '--config.benchmark.timed_steps=1', '--config.benchmark.gemm_size=128'],
      cwd=REPO_ROOT, env={k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}, capture_output=True, text=True,
      timeout=600)  # XLA's default flags: the one test that compiles at the default optimisation level
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'LOADED []' in result.stderr
  record = json.loads(out.read_text())
  assert record['dataset'] == 'synthetic' and record['image_shape'] == [32, 32, 3] and record['step_ms'] > 0


def test_smoke_check_runs_every_row_and_writes_the_report(tmp_path):
  result = subprocess.run(['bash', 'launch/device_check.sh', '--smoke', '--out', str(tmp_path)], cwd=REPO_ROOT,
                          env=_env(), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  records = [json.loads(line) for line in (tmp_path / 'results.jsonl').read_text().splitlines()]
  assert sorted((r['model'], r['compute_dtype']) for r in records) == sorted(
      (model, dtype) for model in ('mlp', 'dcgan', 'sngan_resnet', 'biggan') for dtype in ('float32', 'bfloat16'))
  assert all(r['dataset'] == 'synthetic' and r['label'] == 'device-check' for r in records)
  # PyTorch is not a dependency: without it, its rows are recorded as failed and the check goes on.
  errors = (tmp_path / 'errors.txt').read_text().splitlines()
  assert all(line.startswith('pytorch ') for line in errors), errors
  table = (tmp_path / 'report.md').read_text()
  assert '| cpu x1 | biggan [device-check] |' in table and '| cpu x1 | mlp [device-check] |' in table
  assert '== done: 8 benchmark rows' in result.stdout


def test_without_a_gpu_the_full_check_refuses_in_one_line(tmp_path):
  result = subprocess.run(['bash', 'launch/device_check.sh', '--out', str(tmp_path)], cwd=REPO_ROOT,
                          env={**_env(), 'JAX_PLATFORMS': 'cpu'}, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'error: no GPU here (jax backend: cpu); run with --smoke for the CPU check']
  assert not (tmp_path / 'results.jsonl').exists()


def test_bad_arguments_are_one_line(tmp_path):
  for args, message in ((['--smoke'], 'error: --out DIR is required'),
                        (['--out', str(tmp_path), '--fast'], "error: unknown argument '--fast'"),
                        (['--out', str(tmp_path), '--wheels', str(tmp_path)], 'holds no .whl files')):
    result = subprocess.run(['bash', 'launch/device_check.sh', *args], cwd=REPO_ROOT, env=_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_rows_past_the_time_budget_are_recorded_as_skipped(tmp_path):
  result = subprocess.run(['bash', 'launch/device_check.sh', '--smoke', '--out', str(tmp_path)], cwd=REPO_ROOT,
                          env={**_env(), 'CHECK_SECONDS': '1'}, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
  errors = (tmp_path / 'errors.txt').read_text().splitlines()
  assert len([line for line in errors if line.endswith("skipped, the check's 1 s are spent")]) == 8, errors
  assert not (tmp_path / 'results.jsonl').read_text()
  assert '== done: 0 benchmark rows' in result.stdout
