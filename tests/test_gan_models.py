"""The ResNet GAN families (sngan_resnet, biggan): shapes and published sizes, spectral norm, class
conditioning from the model to the CLI, the orthogonal regulariser, and a few real training steps of each
published config on the offline digits."""
import functools
import importlib
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from aigc_jax import config_checks, flops, gan_steps, image_grid, input_pipeline, losses, models, optimizers, train
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax.evaluation import evaluator as evaluator_lib
from aigc_jax.models import resnet_gan
from configs import base
from tests import compiled_steps
from tests.conftest import REPO_ROOT, set_fields


def _config(model, **fields):
  config = base.get_config()
  config.model.name = model
  return set_fields(config, **fields)


def _abstract_outputs(gan, size, channels, latent_dim, batch=2):
  """G's images and D's logits as shapes only (jax.eval_shape: nothing is computed or allocated)."""
  z = jnp.zeros((batch, latent_dim))
  images = jnp.zeros((batch, size, size, channels))
  labels = {'labels': jnp.zeros((batch,), jnp.int32)} if gan.conditional else {}
  g_vars = jax.eval_shape(lambda: gan.generator.init(jax.random.key(0), z, train=False, **labels))
  d_vars = jax.eval_shape(lambda: gan.discriminator.init(jax.random.key(0), images, train=False, **labels))
  fake = jax.eval_shape(lambda v: gan.generator.apply(v, z, train=True, mutable=['batch_stats'], **labels)[0],
                        g_vars)
  logits = jax.eval_shape(lambda v: gan.discriminator.apply(v, images, train=True, mutable=['batch_stats'],
                                                            **labels)[0], d_vars)
  return fake, logits, g_vars, d_vars


_BIGGAN_CONDITIONAL = dict(conditional=True, hierarchical_latent=True, shared_embedding_dim=128, latent_dim=120)


@pytest.mark.parametrize('model,size,fields', [
    ('sngan_resnet', 28, {}), ('sngan_resnet', 32, {'attention_resolution': 16}), ('sngan_resnet', 48, {}),
    ('sngan_resnet', 64, {'conditional': True}), ('sngan_resnet', 128, {}),
    ('biggan', 28, {}), ('biggan', 32, {**_BIGGAN_CONDITIONAL, 'latent_dim': 128, 'depth_multiplier': 2}),
    ('biggan', 64, {**_BIGGAN_CONDITIONAL, 'attention_resolution': 32}),
    ('biggan', 128, {**_BIGGAN_CONDITIONAL, 'attention_resolution': 64}),
])
def test_shapes_at_each_resolution(model, size, fields):
  config = _config(model, width_multiplier=0.25, **fields)
  gan = models.create_gan(config, (size, size, 3), num_classes=10)
  assert gan.num_classes == (10 if config.model.conditional else 0)
  fake, logits, g_vars, d_vars = _abstract_outputs(gan, size, 3, config.model.latent_dim)
  assert fake.shape == (2, size, size, 3) and fake.dtype == jnp.float32
  assert logits.shape == (2,) and logits.dtype == jnp.float32
  plan = (models.sngan_resnet if model == 'sngan_resnet' else models.biggan).layout(size)
  blocks = lambda tree: sorted(k for k in tree['params'] if k.startswith('block'))
  assert len(blocks(g_vars)) == len(plan.g_blocks) * config.model.depth_multiplier
  assert len(blocks(d_vars)) == len(plan.d_blocks) * config.model.depth_multiplier
  for tree in (g_vars, d_vars):
    assert ('attention' in tree['params']) == bool(config.model.attention_resolution)
  # Spectral norm's power-iteration state: in D always, in G for biggan only.
  sn_states = lambda tree: [p for p, _ in jax.tree_util.tree_leaves_with_path(tree.get('batch_stats', {}))
                            if str(p[-1]).endswith("/u']")]
  assert sn_states(d_vars)
  assert bool(sn_states(g_vars)) == (model == 'biggan')
  assert ('class_embedding' in d_vars['params']) == gan.conditional


def test_biggan_128_has_the_published_parameter_count():
  # compare_gan's resnet_biggan_test pins the BigGAN paper's ImageNet-128 networks (ch 96, z 120 hierarchical,
  # 128-d shared embedding, attention at 64, 1000 classes) at these counts; BigGAN-PyTorch's are the same.
  config = importlib.import_module('configs.biggan_imagenet128').get_config()
  gan = models.create_gan(config, (128, 128, 3), num_classes=1000)
  _, _, g_vars, d_vars = _abstract_outputs(gan, 128, 3, config.model.latent_dim)
  count = lambda tree: sum(leaf.size for leaf in jax.tree.leaves(tree['params']))
  # G leaves out the biases that feed batch norm (see resnet_gan): its input layer's (4 x 4 x 16ch) and each
  # block's conv1, conv2 and shortcut ones (3 x its width; widths 16ch, 8ch, 4ch, 2ch, ch), ch = 96.
  cancelled_biases = 4 * 4 * 16 * 96 + 3 * 96 * (16 + 8 + 4 + 2 + 1)
  assert (count(g_vars) + cancelled_biases, count(d_vars)) == (70_433_988, 87_982_370)


class _SpectralLayer(nn.Module):
  conv: bool

  @nn.compact
  def __call__(self, x, *, train):
    layer = nn.Conv(6, (3, 3), name='layer') if self.conv else nn.Dense(6, name='layer')
    return resnet_gan.apply_layer(layer, x, spectral_norm=True, train=train, eps=1e-12)


@pytest.mark.parametrize('conv', [False, True])
def test_spectral_norm_estimate_converges_to_the_largest_singular_value(conv):
  x = jnp.zeros((1, 4, 4, 3) if conv else (1, 8))
  module = _SpectralLayer(conv)
  variables = module.init(jax.random.key(0), x, train=False)
  kernel_shape = variables['params']['layer']['kernel'].shape
  rng = np.random.default_rng(0)
  rows = int(np.prod(kernel_shape[:-1]))
  # A fixed weight with known singular values (gap 3 : 2 so power iteration converges in tens of steps).
  u, _ = np.linalg.qr(rng.normal(size=(rows, 6)))
  v, _ = np.linalg.qr(rng.normal(size=(6, 6)))
  kernel = (u * np.array([3.0, 2.0, 1.5, 1.0, 0.5, 0.1])) @ v.T
  params = {'layer': {**variables['params']['layer'], 'kernel': jnp.asarray(kernel.reshape(kernel_shape))}}
  largest = np.linalg.svd(kernel, compute_uv=False)[0]
  state = variables['batch_stats']
  step = jax.jit(lambda state: module.apply({'params': params, 'batch_stats': state}, x, train=True,
                                            mutable=['batch_stats'])[1]['batch_stats'])
  sigma = lambda state: float(state['layer_sn']['layer/kernel/sigma'])
  state = step(state)
  assert sigma(state) <= largest * (1 + 1e-6)  # u^T W v never exceeds the top singular value
  for _ in range(60):
    state = step(state)
  assert sigma(state) == pytest.approx(largest, rel=1e-5)
  if not conv:  # the normalised map itself has spectral norm 1
    normalised = module.apply({'params': params, 'batch_stats': state}, jnp.eye(8), train=False)
    assert np.linalg.svd(np.asarray(normalised), compute_uv=False)[0] == pytest.approx(1.0, rel=1e-5)
  # Inference reads the state and never writes it.
  _, written = module.apply({'params': params, 'batch_stats': state}, x, train=False, mutable=['batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, written['batch_stats'], state)


_TINY = (16, 16, 1)  # two up-blocks in G, the cheapest shape that still has a hierarchical latent


def _tiny_conditional(model):
  fields = dict(_BIGGAN_CONDITIONAL, latent_dim=12, shared_embedding_dim=8) if model == 'biggan' else {
      'conditional': True}
  config = _config(model, width_multiplier=0.0625, num_classes=10, **fields)
  return config, models.create_gan(config, _TINY, num_classes=10)


def _tiny_state(config, gan, image_shape=_TINY):
  return jax.jit(functools.partial(
      state_lib.init_train_state, gan=gan, g_tx=optimizers.create_optimizer(config, 'generator'),
      d_tx=optimizers.create_optimizer(config, 'discriminator'), image_shape=image_shape,
      latent_dim=config.model.latent_dim))(jax.random.key(0))


@pytest.fixture(scope='module')
def tiny_sngan(tfds_data_dir):
  """A class-conditional sngan_resnet on 16x16 digits and its initial train state (initialised once: the
  tests below share it)."""
  config, gan = _tiny_conditional('sngan_resnet')
  config.data.dir, config.data.image_size, config.data.shuffle_buffer, config.gan.loss = tfds_data_dir, _TINY[0], 64, 'hinge'
  config.batch_size = 16
  return config, gan, _tiny_state(config, gan)


@pytest.mark.parametrize('model', ['sngan_resnet', 'biggan'])
def test_labels_reach_generator_and_discriminator(model, request):
  if model == 'sngan_resnet':
    config, gan, state = request.getfixturevalue('tiny_sngan')
  else:
    config, gan = _tiny_conditional(model)
    state = _tiny_state(config, gan)
  z = jax.random.normal(jax.random.key(0), (4, config.model.latent_dim))
  labels = jnp.array([0, 1, 2, 3])
  other = jnp.array([0, 1, 7, 3])   # only sample 2's class differs
  # Trained-looking norm gains and biases (sngan's start at the identity): perturb every parameter.
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda p: np.asarray(p) + np.float32(0.1) * rng.standard_normal(p.shape, np.float32),
                        state.generator.params)
  g_vars = {'params': params, **state.generator.variables}
  generate = jax.jit(lambda y: gan.generator.apply(g_vars, z, labels=y, train=False))
  images, changed = generate(labels), generate(other)
  per_sample = np.abs(np.asarray(images - changed)).reshape(4, -1).max(axis=1)
  assert per_sample[2] > 1e-3 and np.all(per_sample[[0, 1, 3]] == 0)
  d_vars = {'params': state.discriminator.params, **state.discriminator.variables}
  score = jax.jit(lambda y: gan.discriminator.apply(d_vars, images, labels=y, train=False))
  # The projection term: sample 2's logit moves with its own label; no other logit moves.
  difference = np.asarray(score(labels) - score(other))
  assert abs(difference[2]) > 1e-6 and np.all(difference[[0, 1, 3]] == 0)
  with pytest.raises(ValueError, match='iff it is class-conditional'):
    jax.eval_shape(lambda: gan.generator.apply(g_vars, z, train=False))


def _differs(a, b):
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_steps_route_labels_and_own_their_spectral_norm_state(tiny_sngan):
  config, gan, state = tiny_sngan
  images = jax.random.uniform(jax.random.key(4), (4,) + _TINY, minval=-1, maxval=1)
  batch = {'image': images, 'label': jnp.array([0, 1, 2, 3])}
  loss = losses.get_gan_loss(config.gan.loss)
  d_step = jax.jit(functools.partial(gan_steps.discriminator_step, gan=gan, loss=loss, latent_dim=config.model.latent_dim,
                                     d_tx=optimizers.create_optimizer(config, 'discriminator')))
  rng = jax.random.key(5)
  after, metrics = d_step(state, batch, rng)
  _, relabelled = d_step(state, {**batch, 'label': jnp.array([9, 8, 7, 6])}, rng)
  # Real images are scored with their own labels; the fakes with the labels G drew them for.
  assert float(metrics['d_real']) != float(relabelled['d_real'])
  assert float(metrics['d_fake']) == pytest.approx(float(relabelled['d_fake']), abs=1e-6)

  @jax.jit
  def fakes_scored_with_their_labels(state, rng):
    z_rng, g_rng, d_rng, label_rng = jax.random.split(rng, 4)
    fake_labels = gan_steps.sample_labels(label_rng, 4, gan.num_classes)
    z = jax.random.normal(z_rng, (4, config.model.latent_dim))
    fake, _ = gan_steps.apply_network(gan.generator, state.generator, z, train=True, rng=g_rng, labels=fake_labels)
    fake_out, _ = gan_steps.apply_network(gan.discriminator, state.discriminator, fake, train=True, rng=d_rng,
                                      labels=fake_labels)
    return jnp.mean(fake_out)
  assert float(metrics['d_fake']) == pytest.approx(float(fakes_scored_with_their_labels(state, rng)), rel=1e-5,
                                                   abs=1e-6)
  # D's spectral-norm state moves in the D step only; G's batch-norm statistics in the G step only.
  assert _differs(state.discriminator.variables, after.discriminator.variables)
  assert not _differs(state.generator, after.generator)
  g_after, _ = jax.jit(functools.partial(gan_steps.generator_step, gan=gan, loss=loss, latent_dim=config.model.latent_dim,
                                         g_tx=optimizers.create_optimizer(config, 'generator')))(
                                             state, batch, jax.random.key(6))
  assert not _differs(state.discriminator, g_after.discriminator)
  assert _differs(state.generator.variables, g_after.generator.variables)


def _on_mesh(config, gan, state, mesh):
  """`state` laid out on `mesh` as training lays it out, and its shardings."""
  _, abstract = state_lib.sharded_initializer(
      mesh, gan=gan, g_tx=optimizers.create_optimizer(config, 'generator'),
      d_tx=optimizers.create_optimizer(config, 'discriminator'), image_shape=_TINY, latent_dim=config.model.latent_dim)
  shardings = state_lib.shardings_of(abstract)
  return jax.device_put(state, shardings), shardings


def test_conditional_step_over_8_devices_equals_1_device(tiny_sngan):
  # Labels are split over the devices with their images; batch norm and the spectral-norm state see the
  # global batch. Same numbers as on one device. (sngan_resnet: biggan's extra parts are per-example maps.)
  config, _, initial = tiny_sngan
  batches = compiled_steps.real_batches(config, 2)
  assert len(set(batches[0]['label'].ravel().tolist())) > 1
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    _, _, step, shardings = compiled_steps.compiled_train_step(config, sharding_lib.create_mesh(devices), _TINY,
                                                               num_classes=10)
    state = jax.device_put(initial, shardings)
    for batch in batches:
      state, metrics = step(state, batch, jax.random.key(7))
    results.append(jax.device_get((state, metrics)))
  assert int(results[0][0].step) == 2 and int(results[0][0].skipped_steps) == 0
  for a, b in zip(jax.tree.leaves(results[0]), jax.tree.leaves(results[1])):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_orthogonal_regularization_value_and_effect():
  rng = np.random.default_rng(0)
  conv, dense = rng.normal(size=(3, 3, 4, 5)), rng.normal(size=(6, 7))
  params = {'block': {'conv': {'kernel': conv, 'bias': rng.normal(size=5)}},
            'shared_embedding': {'embedding': rng.normal(size=(10, 8))}, 'out': {'kernel': dense}}

  def off_diagonal(w):
    gram = w.T @ w
    return np.sum((gram - np.diag(np.diag(gram))) ** 2)
  expected = off_diagonal(conv.reshape(-1, 5)) + off_diagonal(dense)
  assert float(losses.orthogonal_regularization(jax.tree.map(jnp.asarray, params))) == pytest.approx(expected,
                                                                                                     rel=1e-5)
  # Orthonormal columns cost nothing; scaling them does not either (norms are free), mixing them does.
  q, _ = np.linalg.qr(rng.normal(size=(9, 4)))
  assert float(losses.orthogonal_regularization({'k': jnp.asarray(q * [1.0, 2.0, 3.0, 4.0])})) < 1e-9
  # In the generator step: the term is reported and changes the update.
  config = _config('mlp', width_multiplier=0.125)
  gan = models.create_gan(config, (28, 28, 1))
  state = _tiny_state(config, gan, (28, 28, 1))
  batch = {'image': jnp.zeros((4, 28, 28, 1)), 'label': jnp.zeros((4,), jnp.int32)}
  g_step = lambda weight: jax.jit(functools.partial(
      gan_steps.generator_step, gan=gan, loss=losses.get_gan_loss('hinge'), latent_dim=config.model.latent_dim,
      g_tx=optimizers.create_optimizer(config, 'generator'), techniques=gan_steps.Techniques(g_ortho_reg=weight)))(state, batch, jax.random.key(1))
  plain, plain_metrics = g_step(0.0)
  regularised, metrics = g_step(1.0)
  assert float(metrics['g_ortho']) == pytest.approx(
      float(losses.orthogonal_regularization(state.generator.params)), rel=1e-5)
  assert float(metrics['g_loss']) == pytest.approx(float(plain_metrics['g_loss']) + float(metrics['g_ortho']),
                                                   rel=1e-5)
  assert _differs(plain.generator.params, regularised.generator.params)


@pytest.mark.parametrize('model,fields', [('sngan_resnet', {'depth_multiplier': 2}), ('biggan', {
    **_BIGGAN_CONDITIONAL, 'attention_resolution': 16})])
def test_flops_formula_matches_xla_cost_analysis(model, fields):
  # XLA's count of the traced step (no compilation): the convolutions dominate, so the two agree closely.
  config = _config(model, width_multiplier=0.5, batch_size=64, **fields)
  image_shape = (32, 32, 3)
  gan = models.create_gan(config, image_shape, num_classes=10)
  g_tx, d_tx = (optimizers.create_optimizer(config, net) for net in ('generator', 'discriminator'))
  state = jax.eval_shape(functools.partial(state_lib.init_train_state, gan=gan, g_tx=g_tx, d_tx=d_tx,
                                           image_shape=image_shape, latent_dim=config.model.latent_dim), jax.random.key(0))
  step = functools.partial(gan_steps.train_step, gan=gan, loss=losses.get_gan_loss(config.gan.loss), g_tx=g_tx, d_tx=d_tx,
                           latent_dim=config.model.latent_dim)
  batch = {'image': jax.ShapeDtypeStruct((1, 64) + image_shape, jnp.float32),
           'label': jax.ShapeDtypeStruct((1, 64), jnp.int32)}
  analysis = jax.jit(step).lower(state, batch, jax.random.key(1)).cost_analysis()
  xla = (analysis if isinstance(analysis, dict) else analysis[0])['flops']
  assert 0.99 < xla / flops.train_step_flops(config, image_shape) < 1.02


def test_sample_grid_rows_show_classes():
  assert image_grid.row_labels(9, 10).tolist() == [0, 0, 0, 3, 3, 3, 6, 6, 6]   # 3 rows over 10 classes
  assert image_grid.row_labels(100, 10).tolist() == [c for c in range(10) for _ in range(10)]
  assert image_grid.row_labels(6, 2, columns=2).tolist() == [0, 0, 1, 1, 0, 0]   # more rows than classes


@pytest.mark.parametrize('fields,message', [
    ({'model': 'mlp', 'attention_resolution': 16}, "config.model.attention_resolution=16 is not used by config.model.name='mlp'"),
    ({'model': 'sngan_resnet', 'hierarchical_latent': True}, 'models that use it: biggan'),
    ({'model': 'biggan', 'num_classes': 10}, 'applies to class-conditional training only'),
    ({'model': 'biggan', 'weight_init': 'he'}, "config.model.weight_init='he' is not allowed; allowed: default, orthogonal"),
])
def test_model_fields_are_checked(fields, message):
  with pytest.raises(config_checks.ConfigError, match=message):
    config_checks.validate(_config(**fields), device_count=8, process_count=1)


@pytest.mark.parametrize('fields,classes,message', [
    ({'conditional': True}, 0, 'needs class labels'),
    ({'conditional': True, 'num_classes': 5}, 10, 'fewer than the dataset'),
    ({**_BIGGAN_CONDITIONAL, 'latent_dim': 102}, 10, 'allowed: a multiple of 4'),
    ({'conditional': True, 'hierarchical_latent': True}, 10, 'allowed: shared_embedding_dim > 0'),
    ({'attention_resolution': 32}, 10, 'allowed: 0 \\(off\\) or 8, 16'),
])
def test_impossible_biggan_settings_are_one_line_errors(fields, classes, message):
  with pytest.raises(ValueError, match=message):
    models.create_gan(_config('biggan', **fields), (32, 32, 3), num_classes=classes)


def test_the_evaluator_samples_classes_for_a_conditional_generator(tiny_sngan, tmp_path):
  config, gan, state = tiny_sngan
  config = config.copy_and_resolve_references()
  config.eval.cache_dir = str(tmp_path)
  config.eval.num_samples, config.eval.batch_size, config.eval.num_reference = 32, 16, 64
  config.eval.kid_subsets, config.eval.kid_subset_size = 2, 16
  # A stand-in feature network (pixel samples as features): the plumbing is under test, not the features.
  network = evaluator_lib.FeatureNetwork(
      'pixels', 'pixels-v1', lambda _, images: (images.reshape(images.shape[0], -1)[:, ::32],
                                                images.reshape(images.shape[0], -1)[:, :10]), {})
  mesh = sharding_lib.create_mesh()
  state, shardings = _on_mesh(config, gan, state, mesh)
  evaluator = evaluator_lib.Evaluator(config, mesh=mesh, gan=gan, builder=train.prepare_dataset(config),
                                      image_shape=_TINY, state_shardings=shardings, network=network)
  scores = evaluator(state)  # gan_steps.generate refuses a conditional generator without labels
  assert scores and all(np.isfinite(value) for value in scores.values())


# --- The published configs: a few real steps each on the offline digits, at tiny widths. ---

# Image size (mnist5k resized; channels stay 1) and width multiplier. ImageNet's 128 layout compiles and runs
# slowly on CPU; its shapes and published size are tested above, and here the config runs at 16 with its
# attention at 8 (its latent, shared embedding, regulariser and optimiser settings unchanged).
# biggan_cifar10 is BigGAN without the hierarchical latent and attention that biggan_imagenet128 trains with:
# its values are validated, and the model's forms are tested above.
_CONFIG_SIZES = {'sngan_cifar10': (32, 0.125), 'biggan_imagenet128': (16, 1 / 12), 'biggan_mnist': (28, 0.125)}


def _published(name, data_dir):
  config = importlib.import_module(f'configs.{name}').get_config()
  size, width_multiplier = _CONFIG_SIZES[name]
  config.data.name, config.data.dir, config.data.image_size = 'mnist5k', data_dir, size
  config.model.width_multiplier = width_multiplier
  if config.model.attention_resolution:
    config.model.attention_resolution = size // 2
  config.batch_size, config.data.shuffle_buffer, config.num_train_steps = 16, 64, 2
  config.gan.n_critic = 1  # n_critic is tested in test_steps; here it would only multiply the compile time
  config.log_every_steps = config.sample_every_steps = config.checkpoint_every_steps = 2
  config.num_sample_images = 20
  return config


@pytest.fixture(scope='module')
def published_runs(tmp_path_factory, tfds_data_dir):
  """`{config name: (workdir, final state)}`, trained lazily, each at most once per module."""
  runs = {}

  def get(name):
    if name not in runs:
      workdir = str(tmp_path_factory.mktemp(name) / 'run')
      runs[name] = workdir, train.train_and_evaluate(_published(name, tfds_data_dir), workdir)
    return runs[name]
  return get


def test_biggan_cifar10_values_are_valid():
  config_checks.validate(importlib.import_module('configs.biggan_cifar10').get_config(), device_count=2,
                         process_count=1)


@pytest.mark.parametrize('name', sorted(_CONFIG_SIZES))
def test_published_config_trains(name, published_runs, tfds_data_dir):
  config = _published(name, tfds_data_dir)
  config_checks.validate(importlib.import_module(f'configs.{name}').get_config(), device_count=2,
                         process_count=1)  # the published values themselves (on devices their batch fits)
  workdir, state = published_runs(name)
  assert int(state.step) == 2 and int(state.skipped_steps) == 0
  for tree in (state.generator, state.discriminator):
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(tree))
  assert os.path.exists(os.path.join(workdir, 'samples', 'step_0000002.png'))
  info = input_pipeline.dataset_info(config, train.prepare_dataset(config))
  assert models.create_gan(config, info.image_shape, info.num_classes).num_classes == (
      10 if config.model.conditional else 0)


def test_evaluate_cli_scores_a_conditional_generator_by_class(published_runs, eval_cache):
  workdir, _ = published_runs('biggan_mnist')
  result = subprocess.run(
      [sys.executable, '-m', 'aigc_jax.evaluate', f'--workdir={workdir}', '--num_samples=32', '--record=False',
       f'--config.eval.cache_dir={eval_cache}', '--config.eval.classifier_train_steps=40',
       '--config.eval.num_reference=200', '--config.eval.batch_size=16', '--config.eval.kid_subsets=2',
       '--config.eval.kid_subset_size=16'], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  scores = json.loads(result.stdout)
  assert scores['step'] == 2 and 0 <= scores['digits_classifier_label_accuracy'] <= 1


def _sample(*args):
  return subprocess.run([sys.executable, '-m', 'aigc_jax.sample', *args], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=300)


def test_sample_cli_generates_the_asked_class(published_runs, tmp_path):
  workdir, _ = published_runs('biggan_mnist')
  result = _sample(f'--workdir={workdir}', '--num_samples=9', '--label=3', f'--output={tmp_path}/three.npz')
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(tmp_path / 'three.npz') as saved:
    assert saved['images'].shape == (9, 28, 28, 1) and saved['labels'].tolist() == [3] * 9
    threes = saved['images']
  # Without --label a PNG grid shows one class per row (3 rows over 10 classes: 0, 3, 6), from the same
  # latents: its middle row is the class-3 samples of the same seed.
  result = _sample(f'--workdir={workdir}', '--num_samples=9', f'--output={tmp_path}/grid.png')
  assert result.returncode == 0, result.stderr[-3000:]
  grid = np.asarray(Image.open(tmp_path / 'grid.png'), np.int32)
  expected = image_grid.make_grid(threes.astype(np.float32) / 127.5 - 1.0)[..., 0].astype(np.int32)
  assert grid.shape == expected.shape == (3 * 30 + 2, 3 * 30 + 2)
  middle_row = slice(32, 32 + 28)
  assert np.abs(grid[middle_row] - expected[middle_row]).max() <= 1
  assert np.abs(grid[2:30] - expected[2:30]).max() > 1  # the first row is another class (0)
  result = _sample(f'--workdir={workdir}', '--num_samples=6', '--label=10', f'--output={tmp_path}/ten.npz')
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  assert errors == ['error: --label=10 is not allowed; allowed: a class in [0, 9]']
  assert not (tmp_path / 'ten.npz').exists()
