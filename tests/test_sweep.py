"""Sweeps: expansion into runs with their own workdirs and device counts, validation, the dry run, and the
launch script's shell hygiene."""
import os
import shutil
import subprocess
import sys

import pytest

from aigc_jax import sweep
from aigc_jax.config_checks import ConfigError
from tests.conftest import REPO_ROOT


def test_the_scaling_sweeps_expand_into_distinct_validated_runs(tmp_path):
  base, runs = sweep.load_sweep(os.path.join(REPO_ROOT, 'configs/sweeps/dcgan_scaling.py'))
  assert base == 'configs/dcgan_mnist.py' and len(runs) == 4 * 3 * 2
  sweep.validate_runs(base, runs)
  expanded = sweep.expand(base, runs, str(tmp_path), platform='cpu', extra_args=('--config.seed=3',))
  assert len({run.workdir for run in expanded}) == len(runs)
  first, last = expanded[0], expanded[-1]
  assert first.workdir == os.path.join(str(tmp_path), 'devices1-model.width_multiplier0.5-batch_size32')
  assert first.env['XLA_FLAGS'].endswith('--xla_force_host_platform_device_count=1')
  assert last.env['XLA_FLAGS'].endswith('--xla_force_host_platform_device_count=8')
  assert last.argv[1:] == ['-m', 'aigc_jax.main', '--config=configs/dcgan_mnist.py', f'--workdir={last.workdir}',
                           '--config.model.width_multiplier=2.0', '--config.batch_size=512', '--config.num_train_steps=1000',
                           '--config.fsdp_devices=8', '--config.param_sharding=fsdp', '--config.seed=3']
  gpu = sweep.expand(base, runs, str(tmp_path), platform='gpu')
  assert gpu[-1].env == {'CUDA_VISIBLE_DEVICES': '0,1,2,3,4,5,6,7'}
  mlp_base, mlp_runs = sweep.load_sweep(os.path.join(REPO_ROOT, 'configs/sweeps/mlp_scaling.py'))
  sweep.validate_runs(mlp_base, mlp_runs)
  assert len(sweep.expand(mlp_base, mlp_runs, str(tmp_path))) == 4 * 3 * 3


def test_a_bad_run_is_one_error_naming_it(tmp_path):
  with pytest.raises(ConfigError, match=r'^run 1 of the sweep \(devices3\): config.batch_size=16 \(global\) is not '
                                        r'divisible by the device count 3'):
    sweep.validate_runs('configs/mlp_gan_mnist.py', [{'devices': 2, 'batch_size': 16}, {'devices': 3, 'batch_size': 16}])
  with pytest.raises(ConfigError, match="^run 0 of the sweep .*unknown config key 'widht'"):
    sweep.validate_runs('configs/mlp_gan_mnist.py', [{'widht': 2.0}])
  with pytest.raises(ValueError, match='same overrides'):
    sweep.expand('configs/mlp_gan_mnist.py', [{'devices': 2}, {'devices': 2}], str(tmp_path))


def test_dry_run_prints_the_commands_and_writes_nothing(tmp_path):
  root = tmp_path / 'sweep'
  result = subprocess.run([os.path.join(REPO_ROOT, 'launch', 'sweep.sh'), 'configs/sweeps/mlp_scaling.py', str(root),
                           '--dry_run', '--', '--config.eval.every_steps=0'],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
                          env={**os.environ, 'PATH': os.path.dirname(sys.executable) + os.pathsep + os.environ['PATH']})
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 36 and all(' -m aigc_jax.main --config=configs/mlp_gan_mnist.py ' in line for line in lines)
  assert lines[0].startswith('XLA_FLAGS=') and lines[0].endswith('--config.eval.every_steps=0')
  assert not root.exists()


@pytest.mark.skipif(shutil.which('shellcheck') is None, reason='shellcheck is not installed')
def test_launch_script_passes_bash_n_and_shellcheck():
  script = os.path.join(REPO_ROOT, 'launch', 'sweep.sh')
  subprocess.run(['bash', '-n', script], check=True)
  result = subprocess.run(['shellcheck', script], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout
