"""Config validation: every field's type and range, checked before anything is built or written.

A bad config raises `ConfigError` whose message is one line naming the field, what was given and what is
allowed; `main` prints it and exits non-zero.
"""
import os
import re
import uuid
from typing import Any

import ml_collections
from etils import epath

from aigc_jax import augment as augment_lib
from aigc_jax import compile as compile_lib
from aigc_jax import cpu
from aigc_jax import sharding as sharding_lib
from aigc_jax.config_errors import ConfigError
from aigc_jax.latent_mixture import SAMPLERS as VAE_SAMPLERS
from aigc_jax.losses import GAN_LOSSES, GAN_UPDATES
from aigc_jax.models import FAMILY_OPTIONS, FAMILY_SPECIFIC_FIELDS, GAN_FAMILIES, VAE_FAMILIES
from aigc_jax.models.resnet_gan import WEIGHT_INITS
from aigc_jax.optimizers import LR_SCHEDULES
from aigc_jax.vae_losses import BINARIZATIONS, LIKELIHOODS
from configs import base

COMPUTE_DTYPES = ('float32', 'bfloat16')
MAX_IMAGE_SIZE = 1024  # the largest of the field's GANs (StyleGAN's FFHQ); beyond it memory, not quality, rules


_positive = (lambda v: v >= 1, 'an integer >= 1')
_non_negative = (lambda v: v >= 0, 'an integer >= 0')
_positive_float = (lambda v: v > 0, 'a number > 0')
_beta = (lambda v: 0 <= v < 1, 'a number in [0, 1)')
_non_negative_float = (lambda v: v >= 0, 'a number >= 0 (0 = off)')


def _is_policy(policy: str) -> bool:
  try:
    augment_lib.parse_policy(policy)
  except ValueError:
    return False
  return True


def _are_compiler_options(text: str) -> bool:
  try:
    compile_lib.parse_compiler_options(text)
  except ConfigError:
    return False
  return True


def _rule_problem(rule: Any) -> str | None:
  """Why `rule` is not a (regex, spec) partition rule, or None if it is one."""
  if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
    return f'{rule!r} is not a (regex, spec) pair'
  pattern, spec = rule
  try:
    re.compile(pattern)
  except re.error as e:
    return f'{pattern!r} is not a regular expression ({e})'
  if isinstance(spec, str):
    return None if spec in sharding_lib.RULE_METHODS else f'spec {spec!r} is not a method'
  if not isinstance(spec, (tuple, list)):
    return f'spec {spec!r} is neither a method nor a tuple'
  for entry in spec:
    axes = (entry,) if isinstance(entry, str) or entry is None else entry
    if not isinstance(axes, (tuple, list)) or any(a is not None and a not in sharding_lib.MESH_AXES for a in axes):
      return f'spec {spec!r} names an unknown mesh axis in {entry!r}'
  return None


Field = tuple[tuple[type, ...], Any, str]  # (allowed types, check or None, description of allowed values)
Schema = dict[str, 'Field | Schema']       # a group maps its fields (or subgroups) by name

MODEL_FIELDS: Schema = {
    'name': ((str,), lambda v: v in GAN_FAMILIES or v in VAE_FAMILIES, ', '.join([*GAN_FAMILIES, *VAE_FAMILIES])),
    'latent_dim': ((int,), *_positive),
    'width_multiplier': ((int, float), *_positive_float),
    'conditional': ((bool,), None, 'True or False'),
    'num_classes': ((int,), lambda v: v >= 0, "an integer >= 0 (0 = the dataset's class count)"),
    'base_channels': ((int,), lambda v: v >= 0, "an integer >= 0 (0 = the family's width)"),
    'depth_multiplier': ((int,), *_positive),
    'attention_resolution': ((int,), lambda v: v >= 0, 'an integer >= 0 (0 = off)'),
    'weight_init': ((str,), lambda v: v in WEIGHT_INITS, ', '.join(WEIGHT_INITS)),
    'hierarchical_latent': ((bool,), None, 'True or False'),
    'shared_embedding_dim': ((int,), lambda v: v >= 0, 'an integer >= 0 (0 = per-layer class embeddings)'),
    'discriminator_dropout': ((type(None), int, float), lambda v: v is None or 0 <= v < 1,
                              "a number in [0, 1), or None (the family's rate)"),
}
GAN_FIELDS: Schema = {
    'loss': ((str,), lambda v: v in GAN_LOSSES, ', '.join(GAN_LOSSES)),
    'n_critic': ((int,), *_positive),
    'update_scheme': ((str,), lambda v: v in GAN_UPDATES, ', '.join(GAN_UPDATES)),
    'r1_gamma': ((int, float), *_non_negative_float),
    'r1_every': ((int,), *_positive),
    'gp_weight': ((int, float), *_non_negative_float),
    'g_ortho_reg': ((int, float), lambda v: v >= 0, 'a number >= 0 (0 = off)'),
    'ema_decay': ((int, float), lambda v: 0 <= v < 1, 'a number in [0, 1) (0 = no EMA), e.g. 0.999'),
    'ema_start_step': ((int,), *_non_negative),
    'sample_with_ema': ((bool,), None, 'True or False'),
    'augment_p': ((int, float), lambda v: 0 <= v <= 1, 'a number in [0, 1] (0 = off)'),
    'augment_policy': ((str,), _is_policy,
                       f'comma-separated names from {", ".join(augment_lib.POLICY_NAMES)}, e.g. color,translation'),
}
DATA_FIELDS: Schema = {
    'name': ((str,), None, 'a TFDS dataset name, or folder:DIR'),
    'dir': ((str, type(None)), None, 'a directory or None'),
    'train_split': ((str,), None, 'a TFDS split'),
    'image_key': ((str,), None, 'a feature name'),
    'label_key': ((str,), None, 'a feature name'),
    'image_size': ((int,), lambda v: 0 <= v <= MAX_IMAGE_SIZE,
                   f"0 (the dataset's own size) or an integer in [1, {MAX_IMAGE_SIZE}]"),
    'shuffle_buffer': ((int,), *_positive),
}
OPTIMIZER_FIELDS: Schema = {
    'learning_rate': ((int, float), *_positive_float),
    'g_learning_rate': ((int, float, type(None)), lambda v: v is None or v > 0, 'a number > 0 or None'),
    'd_learning_rate': ((int, float, type(None)), lambda v: v is None or v > 0, 'a number > 0 or None'),
    'adam_b1': ((int, float), *_beta),
    'adam_b2': ((int, float), *_beta),
    'adam_eps': ((int, float), *_positive_float),
    'lr_schedule': ((str,), lambda v: v in LR_SCHEDULES, ', '.join(LR_SCHEDULES)),
    'warmup_steps': ((int,), *_non_negative),
    'grad_clip_norm': ((int, float), lambda v: v >= 0, 'a number >= 0 (0 = off)'),
}
FEATURE_NETWORKS = ('digits_classifier', 'inception')
EVAL_FIELDS: Schema = {
    'every_steps': ((int,), lambda v: v >= 0, 'an integer >= 0 (0 = off)'),
    'feature_network': ((str,), lambda v: v in FEATURE_NETWORKS, ', '.join(FEATURE_NETWORKS)),
    'num_samples': ((int,), lambda v: v >= 10, 'an integer >= 10'),
    'batch_size': ((int,), *_positive),
    'reference_split': ((str,), None, 'a TFDS split'),
    'num_reference': ((int,), lambda v: v == 0 or v >= 10, '0 (the whole split) or an integer >= 10'),
    'heldout_split': ((str,), None, "'auto', '' (off) or a TFDS split"),
    'seed': ((int,), *_non_negative),
    'kid_subsets': ((int,), lambda v: v >= 2, 'an integer >= 2'),
    'kid_subset_size': ((int,), lambda v: v >= 2, 'an integer >= 2'),
    'pr_k': ((int,), *_positive),
    'inception_weights': ((str, type(None)), None, 'a file path or None'),
    'classifier_train_steps': ((int,), *_positive),
    'cache_dir': ((str, type(None)), None, 'a directory or None'),
}

# The `vae` block: read by the VAE models only.
VAE_FIELDS: Schema = {
    'likelihood': ((str,), lambda v: v in LIKELIHOODS, ', '.join(LIKELIHOODS)),
    'binarize': ((str,), lambda v: v in BINARIZATIONS, ', '.join(BINARIZATIONS)),
    'gaussian_std': ((int, float, type(None)), lambda v: v is None or v > 0, 'a number > 0 (fixed) or None (learned)'),
    'beta': ((int, float), lambda v: v >= 0, 'a number >= 0'),
    'kl_warmup_steps': ((int,), *_non_negative),
    'heldout_split': ((str,), None, 'a TFDS split'),
    'heldout_every_steps': ((int,), *_positive),
    'iwae_samples': ((int,), lambda v: 0 <= v <= 100_000, 'an integer in [0, 100000]'),
    'sample_temperature': ((int, float), lambda v: 0 < v <= 2, 'a number in (0, 2]'),
    'sampler': ((str,), lambda v: v in VAE_SAMPLERS, ', '.join(VAE_SAMPLERS)),
    'gmm_components': ((int,), lambda v: 1 <= v <= 1_000, 'an integer in [1, 1000]'),
    'gmm_fit_examples': ((int,), *_non_negative),
}

# The whole config: top-level fields and one group per concern (`configs/base.py` gives the defaults).
FIELDS: Schema = {
    'seed': ((int,), *_non_negative),
    'batch_size': ((int,), *_positive),
    'num_train_steps': ((int,), *_positive),
    'model': MODEL_FIELDS,
    'gan': GAN_FIELDS,
    'data': DATA_FIELDS,
    'optimizer': OPTIMIZER_FIELDS,
    'compute_dtype': ((str,), lambda v: v in COMPUTE_DTYPES, ', '.join(COMPUTE_DTYPES)),
    'cpu_fast_path': ((str,), lambda v: v in cpu.MODES, ', '.join(cpu.MODES)),
    'xla_compiler_options': ((str,), _are_compiler_options,
                             "comma-separated name=value XLA options, e.g. 'xla_gpu_autotune_level=0' ('' = none)"),
    'fsdp_devices': ((int,), lambda v: v == -1 or v >= 1, '-1 (all devices) or an integer >= 1 dividing the '
                     'device count'),
    'param_sharding': ((str,), lambda v: v in sharding_lib.PARAM_SHARDING_PRESETS,
                       ', '.join(sharding_lib.PARAM_SHARDING_PRESETS)),
    'param_sharding_rules': ((tuple, list), None, '(regex, spec) pairs'),  # each pair: checked in validate
    'log_every_steps': ((int,), *_positive),
    'sample_every_steps': ((int,), *_positive),
    'num_sample_images': ((int,), *_positive),
    'checkpoint_every_steps': ((int,), *_positive),
    'keep_checkpoints': ((int,), *_positive),
    'async_checkpointing': ((bool,), None, 'True or False'),
    'max_consecutive_nonfinite': ((int,), *_positive),
    'allow_config_change': ((bool,), None, 'True or False'),
    'eval': EVAL_FIELDS,
    'vae': VAE_FIELDS,
}


def _type_names(types: tuple[type, ...]) -> str:
  return ' or '.join('None' if t is type(None) else t.__name__ for t in types)


def validate_fields(config: ml_collections.ConfigDict, fields: Schema, *, prefix: str = 'config.',
                    start_from: str = 'configs/base.py') -> None:
  """Raises `ConfigError` for the first key of `config` (groups included) not in `fields`, missing, of a wrong
  type or value."""
  unknown = sorted(set(config.keys()) - set(fields))
  if unknown:
    raise ConfigError(f'unknown config key {prefix[len("config."):] + unknown[0]!r}; '
                      f'allowed keys of {prefix[:-1]}: {", ".join(sorted(fields))}')
  missing = sorted(set(fields) - set(config.keys()))
  if missing:
    raise ConfigError(f'config is missing key {prefix[len("config."):] + missing[0]!r} (start from {start_from})')
  for name, field in fields.items():
    value = config[name]
    if isinstance(field, dict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ConfigError(f'{prefix}{name} must be a group of the keys {", ".join(sorted(field))}, got '
                          f'{type(value).__name__} {value!r}')
      validate_fields(value, field, prefix=f'{prefix}{name}.', start_from=start_from)
      continue
    types, check, allowed = field
    # bool is an int in Python; only accept it where bool is what the field is.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
      raise ConfigError(f'{prefix}{name} must be {_type_names(types)}, got {type(value).__name__} {value!r}')
    if check is not None and not check(value):
      raise ConfigError(f'{prefix}{name}={value!r} is not allowed; allowed: {allowed}')


def validate(config: ml_collections.ConfigDict, *, device_count: int, process_count: int,
             check_dataset: bool = True) -> None:
  """Raises `ConfigError` for the first unknown key, wrong type, bad value or impossible device split.
  `check_dataset=False` skips looking the dataset up in TFDS (for runs on synthetic data)."""
  validate_fields(config, FIELDS)
  if config.gan.update_scheme == 'simultaneous' and config.gan.n_critic != 1:
    raise ConfigError(f'config.gan.n_critic={config.gan.n_critic} is not allowed with config.gan.update_scheme='
                      "'simultaneous' (one forward pass updates both networks); allowed: 1, or "
                      "config.gan.update_scheme='alternating'")
  _validate_family_options(config)
  if check_dataset:
    _validate_dataset(config.data.name)
  problems = [p for p in map(_rule_problem, config.param_sharding_rules) if p]
  if problems:
    raise ConfigError(f'config.param_sharding_rules: {problems[0]}; allowed: (regex, spec) pairs, spec fsdp, '
                      f'replicated, or a tuple of None / mesh axis names ({", ".join(sharding_lib.MESH_AXES)})')
  if config.fsdp_devices != -1 and device_count % config.fsdp_devices:
    raise ConfigError(f'config.fsdp_devices={config.fsdp_devices} does not divide the device count '
                      f'{device_count}; allowed: -1 (all) or a divisor of {device_count}')
  for field, value in (('batch_size', config.batch_size), ('eval.batch_size', config.eval.batch_size)):
    for divisor, what in ((device_count, 'device count'), (process_count, 'process count')):
      if value % divisor:
        raise ConfigError(f'config.{field}={value} (global) is not divisible by the {what} '
                          f'{divisor}; allowed: a multiple of {divisor}')


def _validate_family_options(config: ml_collections.ConfigDict) -> None:
  """Fields a model does not read keep their defaults (never silently ignored): a VAE's `gan` group, and
  the family-specific fields of `model`."""
  if config.model.name in VAE_FAMILIES:
    defaults = base.get_config().gan
    for name, unused in defaults.items():
      if config.gan[name] != unused:
        raise ConfigError(f'config.gan.{name}={config.gan[name]!r} is not used by config.model.name='
                          f'{config.model.name!r}; allowed: {unused!r} (the gan group is for GANs)')
  options = FAMILY_OPTIONS.get(config.model.name, ())
  for name, unused in FAMILY_SPECIFIC_FIELDS.items():
    if name not in options and config.model[name] != unused:
      users = ', '.join(model for model, fields in FAMILY_OPTIONS.items() if name in fields)
      raise ConfigError(f'config.model.{name}={config.model[name]!r} is not used by config.model.name='
                        f'{config.model.name!r}; allowed: {unused!r} (models that use it: {users})')
  if config.model.num_classes and not config.model.conditional:
    raise ConfigError(f'config.model.num_classes={config.model.num_classes} applies to class-conditional training '
                      'only; allowed: 0, or config.model.conditional=True')


def _validate_dataset(name: str) -> None:
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top  (slow; only when needed)
  from aigc_jax.datasets import OFFLINE_DATASETS, image_folder  # pylint: disable=g-import-not-at-top  (registers them)
  if image_folder.is_folder(name):
    try:
      image_folder.scan(name)
    except image_folder.FolderError as e:
      raise ConfigError(str(e)) from None
    return
  try:
    tfds.builder_cls(name.split(':')[0].split('/')[0])
  except Exception:  # tfds raises several types for unknown names.
    raise ConfigError(f'unknown dataset {name!r}; allowed: {", ".join(OFFLINE_DATASETS)} (offline), any '
                      'TFDS catalogue name, e.g. mnist, cifar10, celeb_a, or folder:DIR (your own images)') from None


def check_workdir(workdir: str) -> None:
  """Proves that `workdir` (a local path or a bucket URL such as gs://bucket/run) can be written, without
  creating it or touching anything in it: training creates it only once everything else is ready."""
  path = epath.Path(workdir)
  if '://' not in workdir and not path.exists():
    parent = path.parent
    while not parent.exists():
      parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
      raise ConfigError(f'workdir {workdir!r} is not writable: {os.fspath(parent)!r} is not a writable directory')
    return
  if path.exists() and not path.is_dir():
    raise ConfigError(f'workdir {workdir!r} is not a directory')
  probe = path / f'.write_test_{uuid.uuid4().hex}'  # unique: every process of a multi-host run probes
  try:
    path.mkdir(parents=True, exist_ok=True)  # a bucket has no directories: this only checks access
    probe.write_bytes(b'')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except  (OSError locally; a storage client's own types)
    raise ConfigError(f'workdir {workdir!r} is not writable: {getattr(e, "strerror", None) or e}') from None
