"""The Flax FID InceptionV3: shapes, weight conversion, and agreement with pytorch-fid.

Two tests need optional extras and say so when they skip: agreement with pytorch-fid's network on random
weights needs torch and pytorch-fid installed; agreement with the real FID activations also needs the
weights file (`$AIGC_INCEPTION_WEIGHTS` = pt_inception-2015-12-05-6726825d.pth).
"""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax.config_checks import ConfigError
from aigc_jax.evaluation import inception



def _reference_importable() -> bool:
  if not all(importlib.util.find_spec(m) for m in ('torch', 'pytorch_fid')):
    return False
  try:
    import pytorch_fid.inception  # noqa: F401  (imports torchvision, whose compiled ops must match torch)
    return True
  except Exception:  # pylint: disable=broad-except
    return False


_HAS_REFERENCE = _reference_importable()


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


def _pytorch_fid_pool_features(state_dict, images):
  """pytorch-fid's own FID network and preprocessing on `images` in [-1, 1] NHWC, fed `state_dict`."""
  import torch
  from pytorch_fid import inception as reference
  original = reference.load_state_dict_from_url
  reference.load_state_dict_from_url = lambda *a, **k: {n: torch.from_numpy(np.asarray(v)) for n, v in state_dict.items()}
  try:
    model = reference.InceptionV3([reference.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=True,
                                  normalize_input=True, use_fid_inception=True).eval()
  finally:
    reference.load_state_dict_from_url = original
  batch = torch.from_numpy(np.ascontiguousarray(((images + 1) / 2).transpose(0, 3, 1, 2)))
  if batch.shape[1] == 1:
    batch = batch.repeat(1, 3, 1, 1)
  with torch.no_grad():
    return model(batch)[0][:, :, 0, 0].numpy()


@pytest.mark.skipif(not _HAS_REFERENCE, reason='needs torch, torchvision and pytorch-fid importable (optional: pip install torch pytorch-fid)')
def test_matches_pytorch_fid_on_random_weights():
  variables = _random_variables()
  state_dict = inception.to_torch_layout(variables)
  images = _images(count=3, size=32, channels=3)
  ours = np.asarray(jax.jit(inception.apply)(variables, images)[0])
  theirs = _pytorch_fid_pool_features(state_dict, images)
  np.testing.assert_allclose(ours, theirs, rtol=2e-3, atol=2e-3 * np.abs(theirs).max())


_WEIGHTS = os.environ.get(inception.WEIGHTS_ENV)

_WEIGHTS_SKIP = (f'the FID weights file is absent (set ${inception.WEIGHTS_ENV} to {inception.WEIGHTS_FILE} '
                 f'from {inception.WEIGHTS_URL})' if not (_WEIGHTS and os.path.isfile(_WEIGHTS))
                 else None if _HAS_REFERENCE else 'needs torch, torchvision and pytorch-fid importable to compute '
                 'the reference activations')


@pytest.mark.skipif(_WEIGHTS_SKIP is not None, reason=_WEIGHTS_SKIP or '')
def test_matches_reference_activations_with_the_fid_weights():
  variables = inception.load_variables(_WEIGHTS)
  images = _images(count=4, size=28, channels=1)
  ours = np.asarray(jax.jit(inception.apply)(variables, images)[0])
  # pytorch-fid gets the file's own tensors, not our conversion of them back.
  if _WEIGHTS.endswith('.pth'):
    state_dict = inception.read_torch_weights(_WEIGHTS)
  else:
    with np.load(_WEIGHTS) as data:
      state_dict = {k: data[k] for k in data.files if k != 'source_sha256'}
  theirs = _pytorch_fid_pool_features(state_dict, images)
  np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3 * np.abs(theirs).max())
