"""`pip install .`: the package and its configs install, train from any folder, and pin what requirements.txt pins."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO_ROOT


def _pins(lines):
  return dict(re.fullmatch(r'([A-Za-z0-9_.-]+)==(\S+)', line.strip()).groups() for line in lines
              if line.strip() and not line.lstrip().startswith('#'))


def test_pyproject_pins_what_requirements_txt_pins_and_keeps_test_and_plot_apart():
  with open(os.path.join(REPO_ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  with open(os.path.join(REPO_ROOT, 'requirements.txt')) as f:
    requirements = _pins(f)
  runtime = _pins(project['dependencies'])
  extras = {name: _pins(deps) for name, deps in project['optional-dependencies'].items()}
  assert set(extras) == {'plot', 'test'}
  assert not {'pytest', 'pytest-xdist', 'matplotlib'} & set(runtime)
  # requirements.txt is exactly the runtime set plus the extras, at the same versions.
  assert requirements == {**runtime, **extras['plot'], **extras['test']}


@pytest.mark.skipif(not (importlib.util.find_spec('setuptools') and importlib.util.find_spec('wheel')),
                    reason='building the wheel offline needs setuptools and wheel in this Python')
def test_the_installed_package_trains_from_another_folder(tmp_path, tfds_data_dir):
  target, elsewhere, source = tmp_path / 'site', tmp_path / 'elsewhere', tmp_path / 'source'
  elsewhere.mkdir()
  # A copy of what a source distribution holds: the build writes its scratch files beside the source.
  source.mkdir()
  for name in ('pyproject.toml', 'README.md'):
    shutil.copy(os.path.join(REPO_ROOT, name), source / name)
  for name in ('aigc_jax', 'configs', 'tests'):
    shutil.copytree(os.path.join(REPO_ROOT, name), source / name, ignore=shutil.ignore_patterns('__pycache__'))
  # --no-deps and no build isolation: nothing is downloaded; the dependencies are this environment's.
  install = subprocess.run([sys.executable, '-m', 'pip', 'install', '--quiet', '--no-deps', '--no-build-isolation',
                            f'--target={target}', str(source)], capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
  assert install.returncode == 0, install.stderr[-2000:]
  assert (target / 'aigc_jax' / 'models' / 'dcgan.py').exists() and (target / 'configs' / 'default.py').exists()
  assert not (target / 'tests').exists()
  # The digits classifier's published weights travel with the package, so its scores match the repository's.
  assert list((target / 'aigc_jax' / 'evaluation' / 'digits_classifier_weights').glob('*/params.msgpack'))
  # A user's own config, building on the installed ones, run from a folder outside the repository.
  (elsewhere / 'my_config.py').write_text(
      'from configs import base\n\n\ndef get_config():\n  config = base.get_config()\n'
      f'  config.data.dir = {str(tfds_data_dir)!r}\n  config.num_train_steps = 2\n  config.batch_size = 16\n'
      '  config.model.width_multiplier = 0.125\n  config.data.shuffle_buffer = 64\n  return config\n')
  env = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
  env['PYTHONPATH'] = str(target)
  run = subprocess.run([sys.executable, '-m', 'aigc_jax.main', '--config=my_config.py', '--workdir=run'],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-2000:]
  assert 'done: step 2 of 2' in run.stderr
  where = subprocess.run([sys.executable, '-c', 'import aigc_jax; print(aigc_jax.__file__)'], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
  assert where.stdout.strip().startswith(str(target))  # the installed copy, not the repository's
  assert (elsewhere / 'run' / 'checkpoints' / '2').is_dir()
