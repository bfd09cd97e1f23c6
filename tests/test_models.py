"""Model shapes on both image sizes, the layers of the MLP and DCGAN papers, and every shipped config's
networks at its data's shape."""
import importlib
import os

import jax
import jax.numpy as jnp
import pytest

from aigc_jax import config_checks, families, models
from configs import base
from tests.conftest import REPO_ROOT


# The ResNet families (sngan_resnet, biggan): tests/test_gan_models.py, at every resolution and less cost.
@pytest.mark.parametrize('model', sorted(set(models.GAN_FAMILIES) - {'sngan_resnet', 'biggan'}))
@pytest.mark.parametrize('image_shape', [(28, 28, 1), (32, 32, 3)])
def test_gan_shapes(model, image_shape):
  config = base.get_config()
  config.model.name = model
  gan = models.create_gan(config, image_shape)
  z = jnp.zeros((3, config.model.latent_dim))
  g_vars = gan.generator.init(jax.random.key(0), z, train=False)
  images, _ = gan.generator.apply(g_vars, z, train=True, mutable=['batch_stats'])
  assert images.shape == (3,) + image_shape
  assert images.dtype == jnp.float32
  assert float(jnp.max(jnp.abs(images))) <= 1.0
  d_vars = gan.discriminator.init(jax.random.key(1), images, train=False)
  logits, _ = gan.discriminator.apply(d_vars, images, train=True, rngs={'dropout': jax.random.key(2)},
                                      mutable=['batch_stats'])  # spectral norm's state, where D has it
  assert logits.shape == (3,)


def test_mlp_matches_the_seed_layout():
  config = base.get_config()
  gan = models.create_gan(config, (28, 28, 1))
  g = gan.generator.init(jax.random.key(0), jnp.zeros((1, 100)))['params']
  d = gan.discriminator.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  assert [g[f'Dense_{i}']['kernel'].shape for i in range(4)] == [(100, 256), (256, 512), (512, 1024),
                                                                  (1024, 784)]
  assert [d[f'Dense_{i}']['kernel'].shape for i in range(3)] == [(784, 512), (512, 256), (256, 1)]


def test_dcgan_rejects_sizes_not_divisible_by_4():
  config = base.get_config()
  config.model.name = 'dcgan'
  with pytest.raises(ValueError, match='divisible by 4'):
    models.create_gan(config, (30, 30, 1))


def test_dcgan_has_the_tutorials_layers():
  config = base.get_config()
  config.model.name = 'dcgan'
  gan = models.create_gan(config, (28, 28, 1))
  g = gan.generator.init(jax.random.key(0), jnp.zeros((1, 100)), train=False)['params']
  d = gan.discriminator.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)['params']
  assert {name: g[name]['kernel'].shape for name in g if 'kernel' in g[name]} == {
      'Dense_0': (100, 7 * 7 * 256), 'ConvTranspose_0': (5, 5, 256, 128), 'ConvTranspose_1': (5, 5, 128, 64),
      'ConvTranspose_2': (5, 5, 64, 1)}
  assert sorted(name for name in g if name.startswith('BatchNorm')) == ['BatchNorm_0', 'BatchNorm_1', 'BatchNorm_2']
  assert {name: d[name]['kernel'].shape for name in d} == {
      'Conv_0': (5, 5, 1, 64), 'Conv_1': (5, 5, 64, 128), 'Dense_0': (6272, 1)}


@pytest.mark.parametrize('model, rate, differs', [('dcgan', None, True), ('dcgan', 0.0, False),
                                                  ('mlp', None, False), ('mlp', 0.3, True)])
def test_discriminator_dropout_is_the_tutorials_unless_set(model, rate, differs):
  # The DCGAN tutorial's D has dropout 0.3, the first article's MLP D none (the second article's has 0.3).
  config = base.get_config()
  config.model.name, config.model.discriminator_dropout = model, rate
  discriminator = models.create_gan(config, (28, 28, 1)).discriminator
  images = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1), minval=-1, maxval=1)
  variables = discriminator.init(jax.random.key(1), images, train=False)
  outputs = [discriminator.apply(variables, images, train=True, rngs={'dropout': jax.random.key(seed)})
             for seed in (2, 3)]
  assert (not jnp.array_equal(*outputs)) == differs  # dropout draws a new mask for each key
  assert jnp.array_equal(outputs[0], discriminator.apply(variables, images, train=False)) == (not differs)


# Image shape and class count of each shipped config's dataset (nothing is downloaded here).
_DATASETS = {'mnist5k': ((28, 28, 1), 10), 'cifar10': ((32, 32, 3), 10), 'imagenet2012': ((128, 128, 3), 1000)}
_TRAINING_CONFIGS = sorted(name[:-3] for name in os.listdir(os.path.join(REPO_ROOT, 'configs'))
                           if name.endswith('.py') and name not in ('__init__.py', 'base.py', 'benchmark.py'))


@pytest.mark.parametrize('name', _TRAINING_CONFIGS)
def test_every_config_validates_and_builds_its_networks_for_its_data(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  config_checks.validate(config, device_count=1, process_count=1)
  image_shape, classes = _DATASETS[config.data.name]
  family = families.create(config, image_shape, classes)
  state = jax.eval_shape(family.init_state, jax.random.key(0))  # shapes only: nothing is computed
  assert jax.tree.leaves(state)
  assert family.num_classes == (classes if config.model.conditional else 0)
