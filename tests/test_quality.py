"""The quality protocol, `python -m aigc_jax.quality`: real training runs over two seeds on the offline digits,
scored against the real-halves floor with equal sample counts."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from aigc_jax.evaluation import quality_table
from tests.conftest import REPO_ROOT, snapshot_files


def _quality(*args):
  return subprocess.run([sys.executable, '-m', 'aigc_jax.quality', *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=900)


def _tiny_overrides(data_dir, cache_dir):
  return [f'--config.data.dir={data_dir}', '--config.batch_size=16', '--config.num_train_steps=4',
          '--config.model.width_multiplier=0.125', '--config.data.shuffle_buffer=64', '--config.log_every_steps=2',
          '--config.sample_every_steps=4', '--config.checkpoint_every_steps=4', '--config.num_sample_images=4',
          f'--config.eval.cache_dir={cache_dir}', '--config.eval.classifier_train_steps=40',
          '--config.eval.num_reference=200', '--config.eval.batch_size=32', '--config.eval.kid_subsets=10',
          '--config.eval.kid_subset_size=50']


def test_two_seeds_give_a_mean_and_spread_beside_the_floor_and_noise(tmp_path, tfds_data_dir, eval_cache):
  root = tmp_path / 'quality'
  config_file = tmp_path / 'mlp_gan.py'  # the MLP GAN's config, in a file this test may edit
  config_file.write_text('from configs import mlp_gan_mnist\n\ndef get_config():\n'
                         '  return mlp_gan_mnist.get_config()\n')
  overrides = _tiny_overrides(tfds_data_dir, eval_cache)
  result = _quality(f'--config={config_file}', f'--root={root}', '--seeds=2', '--', *overrides)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(root / 'quality.json') as f:
    report = json.load(f)
  seeds = report['seeds']
  assert [s['seed'] for s in seeds] == [0, 1]
  assert all(s['train_wall_s'] > 0 and not s['resumed'] for s in seeds)
  fids = [s['scores']['digits_classifier_fid'] for s in seeds]
  assert fids[0] != fids[1]  # two seeds, two different generators
  assert report['summary']['fid']['mean'] == pytest.approx(np.mean(fids))
  assert report['summary']['fid']['std'] == pytest.approx(np.std(fids, ddof=1))
  # Equal counts on both sides: the generator's samples and the floor's second half, against the same half.
  assert seeds[0]['scores']['num_samples'] == report['floor']['num_samples'] == 100
  assert seeds[0]['scores']['num_reference'] == report['floor']['num_reference'] == 100
  # The floor is far below both a 4-step generator and noise; the digits' classes are reported.
  floor_fid, noise_fid = report['floor']['digits_classifier_fid'], report['noise']['digits_classifier_fid']
  assert 5 * floor_fid < min(min(fids), noise_fid)
  assert 0 <= report['summary']['rarest_class_share']['mean'] <= 0.1
  assert report['summary']['nearest_train_ratio']['mean'] > 0
  grid = np.asarray(Image.open(root / 'samples.png'))
  assert grid.shape == (2 + 10 * 30, 2 + 10 * 30)  # 100 images of 28 + 2 padding
  table = (root / 'quality.md').read_text()
  assert '| FID |' in table and '× floor' in table
  assert table in result.stdout and 'seed 1: trained in' in result.stdout
  assert os.path.exists(root / 'seed0.log') and os.path.isdir(root / 'seed1' / 'checkpoints')

  # The README's table is rewritten from the run's quality.json, and its sample grid copied beside it.
  readme = tmp_path / 'README.md'
  readme.write_text(f'# Results\n\n{quality_table.README_BEGIN}\nold table\n{quality_table.README_END}\n\nMore.\n')
  tabulated = _quality(f'--tabulate={root}', f'--readme={readme}')
  assert tabulated.returncode == 0, tabulated.stderr[-3000:]
  text = readme.read_text()
  assert 'old table' not in text and text.startswith('# Results\n') and text.endswith('\n\nMore.\n')
  rows = [line for line in text.splitlines() if line.startswith('| ') and not line.startswith('| ---')]
  assert rows[0].startswith('| config | seeds | FID |') and len(rows) == 4  # header, floor, the run, noise
  assert rows[2].startswith(f'| `{config_file}` `--config.data.dir=') and ' | 2 | ' in rows[2]
  assert f"| {quality_table.figure(report['summary']['fid']['mean'])} ± " in rows[2] and '× floor)' in rows[2]
  assert (tmp_path / 'docs' / 'images' / 'quality.png').read_bytes() == (root / 'samples.png').read_bytes()
  # The report is published beside the README, and rebuilds the same table once the run is gone.
  published = tmp_path / 'docs' / 'quality' / 'quality.json'
  assert json.loads(published.read_text()) == report
  # With --nokeep_other_rows, the rows of other configs go.
  table = quality_table.between(text, quality_table.README_BEGIN, quality_table.README_END)
  assert table.count('\n') == 4
  other_row = '| `configs/other.py` | 3 | 9.00 | – | – | – | – | – | 1.0 min |'
  with_other = table.replace('\n| uniform noise', f'\n{other_row}\n| uniform noise')
  readme.write_text(f'{quality_table.README_BEGIN}\n{with_other}\n{quality_table.README_END}\n')
  rebuilt = _quality(f'--tabulate={published}', f'--readme={readme}', '--nokeep_other_rows')
  assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
  assert quality_table.between(readme.read_text(), quality_table.README_BEGIN, quality_table.README_END) == table

  # Seeds trained under other overrides, or under an edited config, are never reported as this config's.
  before = snapshot_files(root)
  for args in (overrides[:-1], overrides + ['--config.optimizer.learning_rate=1e-4']):
    refused = _quality(f'--config={config_file}', f'--root={root}', '--seeds=2', '--', *args)
    assert refused.returncode == 2 and refused.stderr.startswith('error: ') and len(refused.stderr.splitlines()) == 1
    assert 'seed 0 there was trained with other overrides' in refused.stderr
  config_file.write_text(config_file.read_text().replace(
      '  return mlp_gan_mnist.get_config()', '  config = mlp_gan_mnist.get_config()\n'
      '  config.optimizer.learning_rate = 1e-4\n  return config'))
  refused = _quality(f'--config={config_file}', f'--root={root}', '--seeds=1', '--', *overrides)
  assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1
  assert 'seed 0 there was trained with another version of the config' in refused.stderr
  assert snapshot_files(root) == before


@pytest.mark.parametrize('args, message', [
    (['--seeds=0'], '--seeds=0 is not allowed; allowed: an integer >= 1'),
    (['--', '--config.seed=3'], '--config.seed is set by the protocol'),
    (['--', '--config.bogus=1'], "unknown config key 'bogus'"),
    (['--', 'extra'], "unexpected argument 'extra'"),
    (['--config=configs/no_such_config.py'], "no_such_config.py' is not a file"),
])
def test_bad_input_is_one_line_and_trains_nothing(tmp_path, args, message):
  result = _quality('--config=configs/mlp_gan_mnist.py', f'--root={tmp_path / "q"}', *args)
  assert result.returncode == 2 and result.stderr.strip().splitlines() == [f'error: {result.stderr.strip()[7:]}']
  assert message in result.stderr
  assert not os.path.exists(tmp_path / 'q')


def test_a_root_holding_other_files_is_refused_and_left_alone(tmp_path):
  root = tmp_path / 'q'
  root.mkdir()
  (root / 'notes.txt').write_text('mine')
  result = _quality('--config=configs/mlp_gan_mnist.py', f'--root={root}', '--seeds=1')
  assert result.returncode == 2 and result.stderr.startswith('error: ') and len(result.stderr.splitlines()) == 1
  assert "holds 'notes.txt', which this tool did not write" in result.stderr
  assert os.listdir(root) == ['notes.txt'] and (root / 'notes.txt').read_text() == 'mine'


def test_one_seed_is_a_mean_without_a_spread():
  seed = {'seed': 0, 'train_wall_s': 600.0,
          'scores': {'feature_network': 'digits_classifier-v1', 'digits_classifier_fid': 85.2}}
  summary = quality_table.summarise([seed])
  assert summary['fid'] == {'mean': 85.2, 'std': None, 'n': 1}
  reference = {'feature_network': 'digits_classifier-v1', 'digits_classifier_fid': 5.0}
  table = quality_table.markdown('configs/x.py', [], summary, reference, reference, 'digits_classifier', 10, 10)
  assert '| FID | 85.2 |' in table and '| `configs/x.py` | 1 | 85.2 (17.0× floor) |' in table
  assert '±' not in table.replace('mean ± std over seeds', '')


def _report(config, fid, network='digits_classifier-v1', num_samples=10):
  scores = {'feature_network': network, 'digits_classifier_fid': fid, 'num_samples': num_samples,
            'num_reference': num_samples}
  seed = {'seed': 0, 'train_wall_s': 60.0, 'scores': scores}
  return {'config': config, 'overrides': [], 'seeds': [seed], 'summary': quality_table.summarise([seed]),
          'floor': {**scores, 'digits_classifier_fid': 5.0}, 'noise': {**scores, 'digits_classifier_fid': 900.0}}


def test_the_readme_table_has_the_floor_each_run_in_order_and_noise():
  table = quality_table.readme_table([_report('configs/b.py', 50.0), _report('configs/a.py', 20.0)])
  rows = table.splitlines()[2:]
  assert [row.split(' | ')[0] for row in rows] == [
      '| real digits, one half against the other (the floor)', '| `configs/b.py`', '| `configs/a.py`',
      '| uniform noise']
  assert '| 50.0 (10.0× floor) |' in rows[1] and rows[1].endswith('| 1.0 min |') and '| 900 |' in rows[3]
  with pytest.raises(ValueError, match='scored alike'):
    quality_table.readme_table([_report('configs/a.py', 20.0), _report('configs/b.py', 9.0, num_samples=20)])
  with pytest.raises(ValueError, match='no quality table markers'):
    quality_table.with_readme_table('# a README without the markers\n', table)


def test_tabulating_some_runs_keeps_the_other_rows_of_the_table():
  table = quality_table.readme_table([_report('configs/b.py', 50.0), _report('configs/a.py', 20.0)])
  updated = quality_table.readme_table([_report('configs/a.py', 10.0), _report('configs/c.py', 30.0)], table)
  titles = [row.split(' | ')[0] for row in updated.splitlines()[2:]]
  assert titles == ['| real digits, one half against the other (the floor)', '| `configs/b.py`', '| `configs/a.py`',
                    '| `configs/c.py`', '| uniform noise']
  assert updated.splitlines()[3] == table.splitlines()[3]  # b's row, as it was
  assert '| 10.0 (2.0× floor) |' in updated.splitlines()[4] and '| 30.0 (6.0× floor) |' in updated.splitlines()[5]
  # Kept rows must compare with the new ones: a report scored against another floor is refused...
  other_floor = {**_report('configs/a.py', 10.0), 'floor': {**_report('x', 1.0)['floor'], 'digits_classifier_fid': 6.0}}
  with pytest.raises(ValueError, match="the table's floor row .* differs from these reports'"):
    quality_table.readme_table([other_floor], table)
  # ...unless it replaces every row of the table.
  assert '(1.7× floor)' in quality_table.readme_table([other_floor, {**other_floor, 'config': 'configs/b.py'}], table)


def _vae_report(nlls, elbos):
  seeds = [{'seed': i, 'train_wall_s': 60.0, 'scores': {
      'feature_network': 'digits_classifier-v1', 'digits_classifier_fid': 80.0, 'num_samples': 10,
      'num_reference': 10, 'heldout_nll': nll, 'heldout_neg_elbo': elbo, 'heldout_importance_samples': 1000}}
      for i, (nll, elbo) in enumerate(zip(nlls, elbos))]
  return {**_report('configs/vae.py', 80.0), 'seeds': seeds, 'summary': quality_table.summarise(seeds)}


def test_the_likelihood_table_has_each_vae_run_and_only_those():
  reports = [_report('configs/gan.py', 50.0), _vae_report([93.5, 94.7], [101.9, 103.1])]
  table = quality_table.likelihood_table(reports)
  assert table.splitlines()[2:] == ['| `configs/vae.py` | 2 | 1,000 | 94.1 ± 0.8 | 102.5 ± 0.8 |']
  assert quality_table.likelihood_table(reports[:1]) is None
  other = {**_vae_report([90.0], [99.0]), 'config': 'configs/vae2.py'}
  assert quality_table.likelihood_table([other], table).splitlines()[2:] == [
      '| `configs/vae.py` | 2 | 1,000 | 94.1 ± 0.8 | 102.5 ± 0.8 |', '| `configs/vae2.py` | 1 | 1,000 | 90.0 | 99.0 |']
  readme = (f'{quality_table.README_BEGIN}\n{quality_table.README_END}\n'
            f'{quality_table.LIKELIHOOD_BEGIN}\nold\n{quality_table.LIKELIHOOD_END}\n')
  written = quality_table.with_readme_table(readme, 'T', table)
  assert 'old' not in written and f'{quality_table.LIKELIHOOD_BEGIN}\n{table}\n' in written
  with pytest.raises(ValueError, match='no likelihood table markers'):
    quality_table.with_readme_table(f'{quality_table.README_BEGIN}\n{quality_table.README_END}\n', 'T', table)


@pytest.mark.parametrize('args, message', [
    (['--tabulate={empty}'], '--tabulate=DIR,... and --readme=FILE go together'),
    (['--tabulate={empty}', '--readme={readme}'], 'holds no readable quality.json'),
    (['--tabulate={unfinished}', '--readme={readme}'], 'not a finished quality report: it lacks floor, noise'),
])
def test_tabulate_bad_input_is_one_line_and_leaves_the_readme(tmp_path, args, message):
  readme = tmp_path / 'README.md'
  readme.write_text('# mine\n')
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'unfinished').mkdir()
  (tmp_path / 'unfinished' / 'quality.json').write_text(json.dumps(
      {'config': 'configs/x.py', 'overrides': [], 'seeds': [], 'summary': {}}))
  result = _quality(*[arg.format(empty=tmp_path / 'empty', unfinished=tmp_path / 'unfinished', readme=readme)
                     for arg in args])
  assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert message in result.stderr and readme.read_text() == '# mine\n'


def test_the_readme_tables_are_the_published_reports_tabulated():
  """The README's quality and likelihood tables are regenerated from docs/quality/*.json, never edited by hand:
  tabulating the published reports in the README's row order reproduces the README exactly."""
  with open(os.path.join(REPO_ROOT, 'README.md')) as f:
    readme = f.read()
  order = [row.split('`')[1] for row in quality_table.between(readme, quality_table.README_BEGIN,
                                                               quality_table.README_END).splitlines()
           if row.startswith('| `')]
  reports = []
  for config in order:
    with open(os.path.join(REPO_ROOT, 'docs', 'quality', os.path.basename(config).removesuffix('.py') + '.json')) as f:
      reports.append(json.load(f))
  assert [r['config'] for r in reports] == order
  regenerated = quality_table.with_readme_table(readme, quality_table.readme_table(reports),
                                                quality_table.likelihood_table(reports))
  assert regenerated == readme
  for config in order:  # and each row has its picture
    assert os.path.exists(os.path.join(REPO_ROOT, 'docs', 'images', os.path.basename(config).removesuffix('.py') + '.png'))
