"""Test set-up: 8 fake CPU devices (before jax is imported), quiet TensorFlow, one shared TFDS data_dir."""
import hashlib
import os
import shutil
import subprocess
import tempfile

# The tests' programs are small, so their time goes mostly to XLA:CPU compiling them. At LLVM's -O0 they compile
# in about half the time; they are the same programs and only run slower. Subprocesses inherit the flag, with
# the device count they need from `env_with_devices`; test_device_check's first test compiles at the default
# level.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
_DEVICE_COUNT_FLAG = '--xla_force_host_platform_device_count'
os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS} {_DEVICE_COUNT_FLAG}=8".strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
# A persistent compilation cache for this test run, shared by the xdist workers (spawned after this runs in
# the controller, so they inherit the variable) and the training subprocesses the tests start: many tests
# compile the same small steps (the suite ran 15 % faster with it). The process that made it removes it.
_OWN_COMPILATION_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _OWN_COMPILATION_CACHE = os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='aigc_jax_tests_jit_')
  # Every program, however quick to compile: the training subprocesses compile the same small ones again.
  os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')

import jax  # noqa: E402  (after XLA_FLAGS)
import ml_collections  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_with_devices(devices: int | None = None, **extra) -> dict[str, str]:
  """This process's environment for a subprocess, with `devices` fake CPU devices (None: the subprocess or its
  launcher sets the count) and the tests' other XLA flags."""
  flags = [flag for flag in os.environ['XLA_FLAGS'].split() if not flag.startswith(_DEVICE_COUNT_FLAG)]
  if devices is not None:
    flags.append(f'{_DEVICE_COUNT_FLAG}={devices}')
  return {**os.environ, 'XLA_FLAGS': ' '.join(flags), **extra}


def snapshot_files(directory) -> dict[str, str]:
  """Every file under `directory` with its content hash: compare before and after to prove nothing changed."""
  found = {}
  for root, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, directory)] = hashlib.sha256(f.read()).hexdigest()
  return found


@pytest.fixture(scope='session')
def tfds_data_dir(tmp_path_factory):
  """A TFDS data_dir with the offline `mnist5k` digits built once for the whole session."""
  from aigc_jax import input_pipeline
  from configs import base
  config = base.get_config()
  config.data.dir = str(tmp_path_factory.mktemp('tfds'))
  input_pipeline.get_builder(config)
  return config.data.dir


@pytest.fixture
def small_filesystem(tmp_path):
  """A 24 MiB tmpfs of our own, to fill or make read-only (root and mount(2) needed; skipped otherwise)."""
  mount_point = tmp_path / 'fs'
  mount_point.mkdir()
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', str(mount_point)],
                          capture_output=True, text=True)
  if result.returncode:
    pytest.skip(f'a small file system of our own needs root and mount(2): {result.stderr.strip()}')
  yield mount_point
  subprocess.run(['umount', '-l', str(mount_point)], check=False)


@pytest.fixture(scope='session')
def eval_cache(tmp_path_factory):
  """`config.eval.cache_dir` shared by a test worker's evaluations: each feature network trains once."""
  return str(tmp_path_factory.mktemp('eval_cache'))


def make_tiny_config(data_dir: str):
  """The default config shrunk to run a few steps in seconds on real offline digits."""
  from configs import base
  config = base.get_config()
  config.data.dir = data_dir
  config.batch_size = 16
  config.num_train_steps = 4
  config.model.width_multiplier = 0.125
  config.data.shuffle_buffer = 64
  config.log_every_steps = 2
  config.sample_every_steps = 2
  config.checkpoint_every_steps = 2
  config.num_sample_images = 4
  return config


@pytest.fixture
def tiny_config(tfds_data_dir):
  return make_tiny_config(tfds_data_dir)


def pytest_report_header(config):
  del config
  return f'jax {jax.__version__}: {jax.device_count()} {jax.devices()[0].platform} devices'


def pytest_sessionfinish(session):
  del session
  if _OWN_COMPILATION_CACHE:
    shutil.rmtree(_OWN_COMPILATION_CACHE, ignore_errors=True)


@pytest.fixture
def eight_point_winograd_tiles(monkeypatch):
  """Caps Winograd's automatic tiles at 8 points a side (F(4x4, 3x3) on the dcgan's 7x7 maps, not F(7x7, 3x3))
  for tests that compare two compilations of the same dcgan step (1 vs 8 devices, the two-tape definition). Both compute the same function; their rounding differs by the order of their sums.
  F(7, 3)'s transforms magnify that difference to ~1e-4 of a layer's outputs, enough to move a few
  pre-activations across LeakyReLU's kink and a few gradient elements by ~5e-3 of the largest (measured: with
  a smooth activation in its place, the programs agree to ~1e-5 either way). F(7, 3)'s own accuracy is tested
  in tests/test_winograd.py."""
  from aigc_jax.cpu import winograd
  monkeypatch.setattr(winograd, 'MAX_AUTO_TILE_POINTS', 8)


def set_fields(config, **fields):
  """Sets each field by its name, found at the top level of `config` or in the one group that has it."""
  for name, value in fields.items():
    if name in config and not isinstance(config[name], ml_collections.ConfigDict):
      config[name] = value
      continue
    groups = [group for group in config.values() if isinstance(group, ml_collections.ConfigDict) and name in group]
    assert len(groups) == 1, f'{name!r} is in {len(groups)} groups of the config; set it by its dotted key'
    groups[0][name] = value
  return config
