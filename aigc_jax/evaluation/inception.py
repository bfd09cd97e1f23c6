"""The FID InceptionV3 in Flax: the network every FID paper uses, with the 2015-12-05 TensorFlow weights.

Architecture as in pytorch-fid's `FIDInceptionV3` (itself a port of TensorFlow's FID graph): torchvision's
InceptionV3 layout with the FID-specific blocks (average pools that exclude padding in A, C and the first
E block; a max pool in the last E block), bilinear resize of the input to 299x299, batch-norm eps 1e-3,
2048-d average-pooled features and a 1008-way classifier (for the Inception Score).

Weights are never downloaded: the user supplies pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`
(read with torch when it is installed) or the `.npz` that `tools/convert_inception_weights.py` makes from
it. Parameter names follow the PyTorch state dict, so the conversion is a renaming and transposition.
"""
import hashlib
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.config_checks import ConfigError

WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
WEIGHTS_URL = 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/' + WEIGHTS_FILE
WEIGHTS_SHA256_PREFIX = '6726825d'  # as published in the file name (torch.hub's hash-prefix convention)
WEIGHTS_ENV = 'AIGC_INCEPTION_WEIGHTS'
NETWORK_ID = 'inception_fid-2015-12-05'
FEATURE_DIM = 2048
NUM_LOGITS = 1008
INPUT_SIZE = 299


class BasicConv(nn.Module):
  """Conv (no bias) -> batch norm (eps 1e-3, running statistics) -> ReLU."""
  features: int
  kernel: tuple[int, int]
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    pad = tuple((p, p) for p in self.padding)
    x = nn.Conv(self.features, self.kernel, strides=self.strides, padding=pad, use_bias=False, name='conv')(x)
    return nn.relu(nn.BatchNorm(use_running_average=True, epsilon=1e-3, name='bn')(x))


def _avg_pool(x):
  # TF's FID graph averages over the valid pixels only: PyTorch's count_include_pad=False.
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_s2(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2))


class InceptionA(nn.Module):
  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(64, (1, 1), name='branch1x1')(x)
    b5 = BasicConv(48, (1, 1), name='branch5x5_1')(x)
    b5 = BasicConv(64, (5, 5), padding=(2, 2), name='branch5x5_2')(b5)
    b3 = BasicConv(64, (1, 1), name='branch3x3dbl_1')(x)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(b3)
    b3 = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_3')(b3)
    bp = BasicConv(self.pool_features, (1, 1), name='branch_pool')(_avg_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(384, (3, 3), strides=2, name='branch3x3')(x)
    bd = BasicConv(64, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv(96, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = BasicConv(96, (3, 3), strides=2, name='branch3x3dbl_3')(bd)
    return jnp.concatenate([b3, bd, _max_pool_s2(x)], axis=-1)


class InceptionC(nn.Module):
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = BasicConv(192, (1, 1), name='branch1x1')(x)
    b7 = BasicConv(c7, (1, 1), name='branch7x7_1')(x)
    b7 = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7_3')(b7)
    bd = BasicConv(c7, (1, 1), name='branch7x7dbl_1')(x)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_2')(bd)
    bd = BasicConv(c7, (1, 7), padding=(0, 3), name='branch7x7dbl_3')(bd)
    bd = BasicConv(c7, (7, 1), padding=(3, 0), name='branch7x7dbl_4')(bd)
    bd = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7dbl_5')(bd)
    bp = BasicConv(192, (1, 1), name='branch_pool')(_avg_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  @nn.compact
  def __call__(self, x):
    b3 = BasicConv(192, (1, 1), name='branch3x3_1')(x)
    b3 = BasicConv(320, (3, 3), strides=2, name='branch3x3_2')(b3)
    b7 = BasicConv(192, (1, 1), name='branch7x7x3_1')(x)
    b7 = BasicConv(192, (1, 7), padding=(0, 3), name='branch7x7x3_2')(b7)
    b7 = BasicConv(192, (7, 1), padding=(3, 0), name='branch7x7x3_3')(b7)
    b7 = BasicConv(192, (3, 3), strides=2, name='branch7x7x3_4')(b7)
    return jnp.concatenate([b3, b7, _max_pool_s2(x)], axis=-1)


class InceptionE(nn.Module):
  max_pool: bool  # FID's last block (Mixed_7c) pools with max, the one before (Mixed_7b) with average

  @nn.compact
  def __call__(self, x):
    b1 = BasicConv(320, (1, 1), name='branch1x1')(x)
    b3 = BasicConv(384, (1, 1), name='branch3x3_1')(x)
    b3 = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3_2a')(b3),
                          BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3_2b')(b3)], axis=-1)
    bd = BasicConv(448, (1, 1), name='branch3x3dbl_1')(x)
    bd = BasicConv(384, (3, 3), padding=(1, 1), name='branch3x3dbl_2')(bd)
    bd = jnp.concatenate([BasicConv(384, (1, 3), padding=(0, 1), name='branch3x3dbl_3a')(bd),
                          BasicConv(384, (3, 1), padding=(1, 0), name='branch3x3dbl_3b')(bd)], axis=-1)
    pooled = (nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1))) if self.max_pool
              else _avg_pool(x))
    bp = BasicConv(192, (1, 1), name='branch_pool')(pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)


class FidInceptionV3(nn.Module):
  """Images in [-1, 1], `[B, H, W, 1 or 3]`, any size -> (pool features [B, 2048], logits [B, 1008])."""

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = images.astype(jnp.float32)
    if x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    # Bilinear with half-pixel centres and no antialiasing: PyTorch's align_corners=False. The network
    # expects [-1, 1], which the resize (linear) keeps.
    x = jax.image.resize(x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, 3), 'bilinear', antialias=False)
    x = BasicConv(32, (3, 3), strides=2, name='Conv2d_1a_3x3')(x)
    x = BasicConv(32, (3, 3), name='Conv2d_2a_3x3')(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name='Conv2d_2b_3x3')(x)
    x = _max_pool_s2(x)
    x = BasicConv(80, (1, 1), name='Conv2d_3b_1x1')(x)
    x = BasicConv(192, (3, 3), name='Conv2d_4a_3x3')(x)
    x = _max_pool_s2(x)
    x = InceptionA(32, name='Mixed_5b')(x)
    x = InceptionA(64, name='Mixed_5c')(x)
    x = InceptionA(64, name='Mixed_5d')(x)
    x = InceptionB(name='Mixed_6a')(x)
    x = InceptionC(128, name='Mixed_6b')(x)
    x = InceptionC(160, name='Mixed_6c')(x)
    x = InceptionC(160, name='Mixed_6d')(x)
    x = InceptionC(192, name='Mixed_6e')(x)
    x = InceptionD(name='Mixed_7a')(x)
    x = InceptionE(max_pool=False, name='Mixed_7b')(x)
    x = InceptionE(max_pool=True, name='Mixed_7c')(x)
    features = jnp.mean(x, axis=(1, 2))
    return features, nn.Dense(NUM_LOGITS, name='fc')(features)


def apply(variables: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  return FidInceptionV3().apply(variables, images)


def abstract_variables() -> Any:
  """Shapes and dtypes of the variables (`params` and `batch_stats`)."""
  return jax.eval_shape(FidInceptionV3().init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))


# PyTorch state-dict leaf -> (Flax collection, Flax leaf, transform of the array).
_LEAVES = {
    'conv.weight': ('params', 'conv/kernel', lambda w: w.transpose(2, 3, 1, 0)),  # OIHW -> HWIO
    'bn.weight': ('params', 'bn/scale', lambda w: w),
    'bn.bias': ('params', 'bn/bias', lambda w: w),
    'bn.running_mean': ('batch_stats', 'bn/mean', lambda w: w),
    'bn.running_var': ('batch_stats', 'bn/var', lambda w: w),
    'fc.weight': ('params', 'fc/kernel', lambda w: w.T),
    'fc.bias': ('params', 'fc/bias', lambda w: w),
}


def from_torch_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Flax variables from a pytorch-fid `FIDInceptionV3` state dict (names -> numpy arrays).

  Raises ValueError naming the first missing, unexpected or wrongly shaped entry.
  """
  variables: dict[str, Any] = {'params': {}, 'batch_stats': {}}
  for key, value in state_dict.items():
    if key.endswith('num_batches_tracked') or key.startswith('AuxLogits.'):
      continue  # training-only counters; the auxiliary head is not part of the FID network
    parts = key.split('.')
    leaf = '.'.join(parts[-2:]) if parts[0] != 'fc' else key
    if leaf not in _LEAVES:
      raise ValueError(f'unexpected entry {key!r} in the Inception state dict')
    collection, flax_leaf, transform = _LEAVES[leaf]
    path = (parts[:-2] if parts[0] != 'fc' else []) + flax_leaf.split('/')
    node = variables[collection]
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = np.asarray(transform(np.asarray(value, np.float32)))
  expected = abstract_variables()
  flat_expected = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(expected)}
  flat_given = {jax.tree_util.keystr(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(variables)}
  for name, shape in flat_expected.items():
    if name not in flat_given:
      raise ValueError(f'the Inception state dict lacks {name}')
    if flat_given[name] != shape:
      raise ValueError(f'Inception weight {name} has shape {flat_given[name]}, expected {shape}')
  extra = sorted(set(flat_given) - set(flat_expected))
  if extra:
    raise ValueError(f'unexpected Inception weight {extra[0]}')
  return variables


def to_torch_layout(variables: Any) -> dict[str, np.ndarray]:
  """The inverse of `from_torch_state_dict` (for tests and for exporting)."""
  inverse = {(collection, flax_leaf): (torch_leaf, transform)
             for torch_leaf, (collection, flax_leaf, transform) in _LEAVES.items()}
  out = {}
  for collection in ('params', 'batch_stats'):
    for path, value in jax.tree_util.tree_leaves_with_path(variables[collection]):
      names = [p.key for p in path]
      torch_leaf, _ = inverse[(collection, '/'.join(names[-2:]))]
      prefix = names[:-2] if names[0] != 'fc' else []
      value = np.asarray(value)
      # Every transform here is its own inverse in shape terms except the conv kernel's.
      value = value.transpose(3, 2, 0, 1) if torch_leaf == 'conv.weight' else (value.T if value.ndim == 2 else value)
      out['.'.join(prefix + [torch_leaf])] = value
  return out


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def read_torch_weights(path: str) -> dict[str, np.ndarray]:
  """The state dict of a `.pth` file as numpy arrays (needs torch, an optional dependency)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(f'reading {path} needs torch (pip install torch), or convert it once elsewhere with '
                      'tools/convert_inception_weights.py and pass the .npz') from None
  return {k: v.numpy() for k, v in torch.load(path, map_location='cpu', weights_only=True).items()}


def weights_path(configured: str | None) -> str:
  """The weights file named by the config, else by $AIGC_INCEPTION_WEIGHTS; one clear error if neither exists."""
  path = configured or os.environ.get(WEIGHTS_ENV)
  if not path:
    raise ConfigError(f'Inception features need the FID weights file {WEIGHTS_FILE} ({WEIGHTS_URL}); pass '
                      f'--config.eval.inception_weights=PATH or set ${WEIGHTS_ENV}, or use '
                      '--config.eval.feature_network=digits_classifier')
  if not os.path.isfile(path):
    raise ConfigError(f'Inception weights file not found: {path!r} (expected {WEIGHTS_FILE} from '
                      f'{WEIGHTS_URL}, or its .npz from tools/convert_inception_weights.py)')
  return path


def load_variables(path: str) -> Any:
  """Flax variables from a `.pth` (checked against the published hash prefix) or a converted `.npz`."""
  if path.endswith('.npz'):
    with np.load(path) as data:
      source_hash = str(data['source_sha256']) if 'source_sha256' in data else ''
      state_dict = {k: data[k] for k in data.files if k != 'source_sha256'}
  elif path.endswith('.pth'):
    source_hash = sha256_of(path)
    state_dict = read_torch_weights(path)
  else:
    raise ConfigError(f'Inception weights file {path!r} must end in .pth or .npz')
  if not source_hash.startswith(WEIGHTS_SHA256_PREFIX):
    raise ConfigError(f'Inception weights {path!r} are not the FID weights: sha256 {source_hash[:16] or "unknown"}'
                      f'..., expected {WEIGHTS_SHA256_PREFIX}... ({WEIGHTS_FILE})')
  try:
    return from_torch_state_dict(state_dict)
  except ValueError as e:
    raise ConfigError(f'Inception weights {path!r}: {e}') from None
