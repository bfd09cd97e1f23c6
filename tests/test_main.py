"""Bad input to `python -m aigc_jax.main`: one clear line, exit status 2, no traceback, workdir untouched."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, snapshot_files


def _run_main(*args, env_extra=None):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run([sys.executable, '-m', 'aigc_jax.main', *args], cwd=REPO_ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


@pytest.fixture(scope='module')
def existing_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('existing')
  (workdir / 'checkpoints' / '10').mkdir(parents=True)
  (workdir / 'checkpoints' / '10' / 'state').write_bytes(b'precious checkpoint bytes')
  (workdir / 'config.json').write_text('{"model": "mlp"}')
  return workdir


BAD_INPUTS = {
    'unknown key': (['--config.optimizer.learning_rat=0.1'],
                    "unknown config key 'optimizer.learning_rat'; allowed keys of config.optimizer: .*learning_rate"),
    'a field by its flat name of 0.1.0': (['--config.learning_rate=0.1'],
                                          "unknown config key 'learning_rate': since version 0.2.0 the field is "
                                          r"'optimizer.learning_rate' \(--config.optimizer.learning_rate=...\)"),
    'unknown nested key': (['--config.eval.bogus=1'], "unknown config key 'eval.bogus'; allowed keys of config.eval: "
                           'batch_size, cache_dir'),
    'a key below a value': (['--config.batch_size.x=1'],
                            "unknown config key 'batch_size.x': config.batch_size is a value, not a group of keys"),
    'image size too large': (['--config.data.image_size=100000'],
                             r"config.data.image_size=100000 is not allowed; allowed: 0 .* or an integer in \[1, 1024\]"),
    'unknown train split': (['--config.data.train_split=bogus'],
                            "config.data.train_split='bogus' is not a split of 'mnist5k'; allowed: test, train"),
    'unknown image feature': (['--config.data.image_key=bogus'],
                              "config.data.image_key='bogus' is not an image feature of 'mnist5k'; allowed: image"),
    'config file with a syntax error': (['--config={syntax_error_config}'],
                                        'syntax_error.py: syntax error at line 1 of .*syntax_error.py'),
    'image folder that does not exist': (['--config.data.name=folder:/no/such/aigc_images'],
                                         "config.data.name='folder:/no/such/aigc_images': '/no/such/aigc_images' does "
                                         'not exist'),
    'image folder that is a file': (['--config.data.name=folder:{wrong_type_config}'], 'is a file, not a folder'),
    'image folder without images': (['--config.data.name=folder:{empty_folder}'], 'holds no PNG or JPEG images'),
    'config file without get_config': (['--config={no_get_config}'],
                                       r'no_get_config.py defines no get_config\(\); allowed: a Python file'),
    'wrong type on the command line': (['--config.batch_size=abc'], 'batch_size=abc'),
    'wrong type in the config': (['--config={wrong_type_config}'], "config.batch_size must be int, got str '128'"),
    'unknown dataset': (['--config.data.name=no_such_data'], "unknown dataset 'no_such_data'; allowed: mnist5k"),
    'batch not divisible by devices': (['--config.batch_size=12'],
                                       'batch_size=12 .* not divisible by the device count 8; allowed: a multiple of 8'),
    'missing config file': (['--config=configs/nope.py'], "--config=configs/nope.py: 'configs/nope.py' is not a file"),
}


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_is_one_clear_line(case, existing_workdir, tfds_data_dir):
  extra, pattern = BAD_INPUTS[case]
  wrong_type_config = existing_workdir.parent / 'wrong_type_config.py'
  wrong_type_config.write_text(
      'import ml_collections\nfrom configs import base\n\ndef get_config():\n'
      '  fields = base.get_config().to_dict()\n  fields["batch_size"] = "128"\n'
      '  return ml_collections.ConfigDict(fields)\n')
  (existing_workdir.parent / 'syntax_error.py').write_text('def get_config(:\n')
  (existing_workdir.parent / 'no_get_config.py').write_text('x = 1\n')
  (existing_workdir.parent / 'empty_folder' / 'sub').mkdir(parents=True, exist_ok=True)
  extra = [arg.format(wrong_type_config=wrong_type_config, syntax_error_config=existing_workdir.parent / 'syntax_error.py',
                      no_get_config=existing_workdir.parent / 'no_get_config.py',
                      empty_folder=existing_workdir.parent / 'empty_folder') for arg in extra]
  args = ['--config=configs/mlp_gan_mnist.py', f'--workdir={existing_workdir}', f'--config.data.dir={tfds_data_dir}']
  if extra[0].startswith('--config='):
    args[0] = extra[0]
    args = [a for a in args if not a.startswith('--config.')]
  else:
    args += extra
  before = snapshot_files(existing_workdir)
  result = _run_main(*args)
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, result.stderr[-2000:]
  assert re.search(pattern, errors[0]), errors[0]
  assert snapshot_files(existing_workdir) == before


def test_unwritable_workdir(tmp_path, tfds_data_dir):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  result = _run_main('--config=configs/mlp_gan_mnist.py', f'--workdir={blocker}/run',
                     f'--config.data.dir={tfds_data_dir}')
  assert result.returncode == 2
  assert 'Traceback' not in result.stderr
  assert f"error: workdir '{blocker}/run' is not writable" in result.stderr
  assert blocker.read_text() == 'not a directory'


# Values the field table refuses, each with the one-line message `main` prints (the command-line path itself
# is covered above, e.g. by image_size), checked here without a process each.
REFUSED_VALUES = {
    'model.name': ('stylegan9', "config.model.name='stylegan9' is not allowed; allowed: mlp, dcgan"),
    'gan.loss': ('nope', "config.gan.loss='nope' is not allowed; allowed: non_saturating, minimax"),
    'gan.n_critic': (0, 'config.gan.n_critic=0 is not allowed; allowed: an integer >= 1'),
    'model.hierarchical_latent': (True, "config.model.hierarchical_latent=True is not used by "
                                        "config.model.name='mlp'; allowed: False (models that use it: biggan)"),
    'cpu_fast_path': ('on', "config.cpu_fast_path='on' is not allowed; allowed: auto, off"),
    'xla_compiler_options': ('autotune',
                             "config.xla_compiler_options='autotune' is not allowed; allowed: comma-separated"),
}


@pytest.mark.parametrize('field', sorted(REFUSED_VALUES))
def test_refused_values_are_one_clear_line(field):
  from aigc_jax import config_checks
  from aigc_jax.config_errors import ConfigError
  from configs import base
  value, message = REFUSED_VALUES[field]
  config = base.get_config()
  config.update_from_flattened_dict({field: value})
  with pytest.raises(ConfigError) as refused:
    config_checks.validate(config, device_count=8, process_count=1, check_dataset=False)
  assert str(refused.value).startswith(message) and '\n' not in str(refused.value)
