"""The entry points' re-execution with glibc's huge-page malloc tunable: once, same pid, opt-out honoured."""
import os
import subprocess
import sys

import pytest

from aigc_jax import host_memory
from tests.conftest import REPO_ROOT

_SCRIPT = ("import os; from aigc_jax import host_memory; print('start', os.getpid(), flush=True); "
           "host_memory.reexec_with_huge_pages(); print('tunables', os.environ.get('GLIBC_TUNABLES', ''))")


def _run(**env):
  environ = {k: v for k, v in os.environ.items() if k not in ('GLIBC_TUNABLES', host_memory.OPT_OUT)}
  result = subprocess.run([sys.executable, '-c', _SCRIPT], cwd=REPO_ROOT, env={**environ, **env},
                          capture_output=True, text=True, timeout=120, check=True)
  return result.stdout.splitlines()


def test_reexecutes_once_with_the_tunable_added_to_the_existing_ones():
  if not host_memory.needs_reexec({}):
    pytest.skip('this machine has no glibc malloc with transparent huge pages in madvise mode')
  lines = _run(GLIBC_TUNABLES='glibc.malloc.arena_max=2')
  starts = [line for line in lines if line.startswith('start')]
  assert len(starts) == 2 and starts[0] == starts[1]  # ran twice, as one process
  assert lines[-1] == 'tunables glibc.malloc.arena_max=2:' + host_memory.TUNABLE


@pytest.mark.parametrize('env', [{host_memory.OPT_OUT: '0'}, {'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'}])
def test_leaves_the_process_alone_when_told_or_already_set(env):
  lines = _run(**env)
  assert len([line for line in lines if line.startswith('start')]) == 1
  assert lines[-1] == 'tunables ' + env.get('GLIBC_TUNABLES', '')
