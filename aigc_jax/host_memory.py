"""Transparent huge pages for glibc's malloc, which XLA:CPU's buffers come from (the entry points ask).

XLA:CPU allocates a train step's temporary buffers afresh on every execution; glibc serves allocations
over 32 MiB with new mmaps, so the kernel faults in and zeroes every 4 KiB page of them on every step.
With `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` (glibc >= 2.35) malloc asks for transparent huge pages
(`madvise`), 512x fewer faults: the dcgan b256 CPU step went from ~650 ms to ~540 ms (TF/Keras moved 2 %;
`benchmarks/RESULTS.md`). glibc reads tunables only at start-up, so the entry points re-execute themselves
once, same pid and arguments, with the tunable added, before anything heavy is imported.
`AIGC_MALLOC_HUGETLB=0` turns this off; nothing happens off Linux/glibc, when the kernel's THP mode is
`never` (nothing to ask for) or `always` (already in effect), or when GLIBC_TUNABLES already sets it.
"""
import os
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb=1'
OPT_OUT = 'AIGC_MALLOC_HUGETLB'
_THP_MODE = '/sys/kernel/mm/transparent_hugepage/enabled'


def huge_pages_requested() -> bool:
  """Whether this process's malloc was started with the huge-page tunable."""
  return TUNABLE in os.environ.get('GLIBC_TUNABLES', '').split(':')


def _thp_mode() -> str:
  try:
    with open(_THP_MODE) as f:
      text = f.read()
  except OSError:
    return 'never'
  return text[text.find('[') + 1:text.find(']')] if '[' in text else 'never'


def needs_reexec(environ) -> bool:
  """Whether an entry point started with `environ` re-executes itself to ask for huge pages."""
  if environ.get(OPT_OUT, '1') == '0' or 'glibc.malloc.hugetlb=' in environ.get('GLIBC_TUNABLES', ''):
    return False
  return sys.platform == 'linux' and platform.libc_ver()[0] == 'glibc' and _thp_mode() == 'madvise'


def reexec_with_huge_pages() -> None:
  """Re-executes this process with `GLIBC_TUNABLES` asking for huge pages, when that would change anything.

  Call it first thing in an entry point's `__main__` block; it returns only when no re-execution is needed."""
  if not needs_reexec(os.environ):
    return
  env = dict(os.environ)
  env['GLIBC_TUNABLES'] = ':'.join(filter(None, (env.get('GLIBC_TUNABLES'), TUNABLE)))
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)
