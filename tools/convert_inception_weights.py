"""Converts pytorch-fid's FID Inception weights to a torch-free `.npz` that `aigc_jax` loads.

    pip install torch   # only for this conversion
    python tools/convert_inception_weights.py pt_inception-2015-12-05-6726825d.pth inception_fid.npz

The `.pth` comes from https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/
pt_inception-2015-12-05-6726825d.pth; its sha256 must start with 6726825d (checked here, and recorded in
the `.npz` so the loader can check it again).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aigc_jax.evaluation import inception  # noqa: E402  (after the path set-up)


def main(argv: list[str]) -> int:
  if len(argv) != 3 or not argv[1].endswith('.pth') or not argv[2].endswith('.npz'):
    print('error: usage: convert_inception_weights.py INPUT.pth OUTPUT.npz', file=sys.stderr)
    return 2
  source, target = argv[1], argv[2]
  try:
    variables = inception.load_variables(inception.weights_path(source))  # checks hash and every entry
  except inception.ConfigError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  np.savez(target, source_sha256=inception.sha256_of(source), **inception.to_torch_layout(variables))
  print(f'wrote {target}')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
