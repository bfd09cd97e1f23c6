"""What the user documents and launch scripts tell users to type names real config fields."""
import glob
import os
import re

import pytest

from configs import benchmark
from tests.conftest import REPO_ROOT

_OVERRIDE = re.compile(r'--config\.([A-Za-z_][\w.]*\w)')
_PLACEHOLDER = 'key'  # `--config.key=value`, the form the help texts show


def _user_files():
  patterns = ('README.md', 'docs/*.md', 'launch/*', 'configs/*.py', 'configs/sweeps/*.py', 'benchmarks/*.md')
  return sorted(path for pattern in patterns for path in glob.glob(os.path.join(REPO_ROOT, pattern)))


def _is_field(config, dotted: str) -> bool:
  node = config
  for name in dotted.split('.'):
    if not hasattr(node, 'keys') or name not in node:
      return False
    node = node[name]
  return True


@pytest.mark.parametrize('path', _user_files(), ids=lambda path: os.path.relpath(path, REPO_ROOT))
def test_every_config_override_a_document_names_is_a_field(path):
  config = benchmark.get_config()  # every training field, and the benchmark's own group
  with open(path, encoding='utf-8') as f:
    named = set(_OVERRIDE.findall(f.read())) - {_PLACEHOLDER}
  unknown = sorted(key for key in named if not _is_field(config, key))
  assert not unknown, f'{os.path.relpath(path, REPO_ROOT)} names config fields that do not exist: {unknown}'
