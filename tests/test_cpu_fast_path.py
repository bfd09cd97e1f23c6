"""The CPU fast path (aigc_jax/cpu): one switch, the same parameters and function as flax's layers, in value
and gradient (second order too, as R1 and WGAN-GP take it), never off CPU or in bfloat16."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import compile as compile_lib
from aigc_jax import cpu, families, losses, models
from aigc_jax.config_errors import ConfigError
from aigc_jax.cpu import layers as fast
from aigc_jax.models.layers import Layers
from configs import base
from tests.conftest import set_fields

# Of the largest value: Winograd's rounding with 9-point tiles (F(7, 3) on 7x7 maps, measured up to 1e-4);
# the other forms round like XLA's direct convolution.
_NINE_POINT_TOLERANCE, _TOLERANCE = 2e-4, 2e-5


def _config(model='dcgan', **fields):
  config = base.get_config()
  config.model.name = model
  return set_fields(config, **fields)


@pytest.mark.parametrize('platform,dtype,mode,active', [
    ('cpu', 'float32', 'auto', True), ('cpu', 'float32', 'off', False), ('cpu', 'bfloat16', 'auto', False),
    ('gpu', 'float32', 'auto', False), ('tpu', 'float32', 'auto', False), ('cuda', 'float32', 'auto', False)])
def test_the_switch_applies_on_cpu_in_float32_only(platform, dtype, mode, active):
  config = _config(compute_dtype=dtype, cpu_fast_path=mode)
  assert cpu.is_active(config, platform) == active
  layers = cpu.model_layers(config, platform)
  assert (layers == Layers()) == (not active)
  if active:
    assert layers == Layers(conv=fast.Conv, conv_transpose=fast.ConvTranspose, dropout=fast.Dropout)
  assert (compile_lib.compiler_options(config, platform) or {}) == (cpu.COMPILER_OPTIONS if active else {})


def _assert_same_values_and_gradients(fast_layer, plain, x, tolerance=_TOLERANCE, second_order=False):
  """`fast_layer` has `plain`'s parameters and computes its function, value and gradients, to `tolerance`
  of the largest value; with `second_order`, also the gradient of an input-gradient penalty."""
  variables = plain.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, fast_layer.init(jax.random.key(1), x)) == jax.tree.map(jnp.shape, variables)
  expected = plain.apply(variables, x)
  np.testing.assert_allclose(fast_layer.apply(variables, x), expected,
                             atol=tolerance * float(jnp.max(jnp.abs(expected))))

  def loss(module, v, x):
    value = jnp.sum(jnp.sin(module.apply(v, x)))
    if second_order:
      value += jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(module.apply(v, x))))(x) ** 2)
    return value

  for a, b in zip(jax.tree.leaves(jax.grad(loss, (1, 2))(fast_layer, variables, x)),
                  jax.tree.leaves(jax.grad(loss, (1, 2))(plain, variables, x))):
    np.testing.assert_allclose(a, b, atol=tolerance * float(jnp.max(jnp.abs(b))))


# Channels pick the algorithm: many on both sides Winograd, few on one side XLA's convolution; even kernels
# keep XLA's stride-1 convolution inside the polyphase form. Sizes cover odd maps and 'SAME' padding's edges.
@pytest.mark.parametrize('kernel,stride,size,channels,features', [
    (5, 2, 28, 1, 16), (5, 2, 14, 16, 24), (5, 2, 15, 16, 24), (5, 2, 7, 3, 4), (4, 2, 8, 3, 4),
    (4, 2, 14, 16, 16), (3, 2, 5, 3, 4), (3, 3, 7, 16, 4), (5, 1, 7, 16, 24), (3, 1, 9, 2, 3), (4, 1, 8, 3, 5)])
def test_conv_is_flax_conv(kernel, stride, size, channels, features):
  x = jax.random.normal(jax.random.key(0), (2, size, size, channels))
  args = dict(features=features, kernel_size=(kernel, kernel), strides=(stride, stride), padding='SAME')
  winograd = kernel % 2 and min(channels * stride ** 2, features) >= fast.WINOGRAD_MIN_CHANNELS
  _assert_same_values_and_gradients(fast.Conv(**args), nn.Conv(**args), x,
                                    _NINE_POINT_TOLERANCE if winograd else _TOLERANCE, second_order=True)


@pytest.mark.parametrize('kernel,stride,size,channels,features', [
    (5, 2, 7, 16, 8), (5, 2, 14, 16, 8), (5, 2, 7, 16, 1), (5, 2, 14, 3, 4), (4, 2, 8, 3, 4), (3, 2, 5, 3, 4),
    (3, 3, 4, 3, 4), (5, 1, 7, 8, 6), (5, 1, 7, 32, 16), (4, 1, 6, 3, 2)])
def test_conv_transpose_is_flax_conv_transpose(kernel, stride, size, channels, features):
  x = jax.random.normal(jax.random.key(0), (2, size, size, channels))
  args = dict(features=features, kernel_size=(kernel, kernel), strides=(stride, stride), padding='SAME')
  _assert_same_values_and_gradients(fast.ConvTranspose(**args), nn.ConvTranspose(**args), x, _NINE_POINT_TOLERANCE)


@pytest.mark.parametrize('layer,args', [
    (fast.Conv, dict(padding='VALID')), (fast.Conv, dict(strides=(2, 1))),
    (fast.ConvTranspose, dict(padding=((1, 1), (1, 1)))), (fast.ConvTranspose, dict(strides=(3, 3)))])
def test_layers_refuse_forms_they_do_not_compute(layer, args):
  with pytest.raises(ValueError, match='cpu_fast_path=off'):
    layer(4, (2, 2), **args).init(jax.random.key(0), jnp.zeros((1, 6, 6, 2)))


@pytest.mark.parametrize('impl', ['threefry2x32', 'rbg'])
def test_random_bits16_are_uniform_and_independent_across_the_hash_words(impl):
  # threefry keys take four draws per hash (both words, split in halves); other keys jax.random.bits' words.
  key = jax.random.key(0, impl=impl)
  bits = np.asarray(fast.random_bits16(key, (512, 3, 37)), np.int64)
  assert bits.shape == (512, 3, 37)
  # Each position within a hash (last index mod 4) is uniform on [0, 2**16): mean and the top bit's rate
  # within 5 standard errors (~14k draws per position).
  for position in range(4):
    draws = bits[..., position::4]
    assert abs(draws.mean() / 2 ** 16 - 0.5) < 5 * np.sqrt(1 / 12 / draws.size)
    assert abs((draws >= 2 ** 15).mean() - 0.5) < 5 * np.sqrt(0.25 / draws.size)
  # The halves of one hash are not related (their correlation is noise), and examples differ.
  correlation = np.corrcoef(bits[..., :36].reshape(-1, 4).astype(float).T)
  assert np.abs(correlation - np.eye(4)).max() < 5 / np.sqrt(bits[..., :36].size / 4)
  assert len({row.tobytes() for row in bits.reshape(512, -1)}) == 512
  assert not np.array_equal(bits, np.asarray(fast.random_bits16(jax.random.key(1, impl=impl), (512, 3, 37))))


def test_dropout_keeps_units_at_the_rate_and_scales_them_as_flax_does():
  x = jnp.ones((64, 8, 8, 33))  # an odd channel count: the last 16-bit half of a word is unused
  rngs = {'dropout': jax.random.key(0)}
  y = fast.Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs)
  kept = np.asarray(y != 0)
  # 135,168 units: the kept fraction is within 4 standard errors of 0.7, as flax's is.
  flax_kept = np.asarray(nn.Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs) != 0)
  for fraction in (kept.mean(), flax_kept.mean()):
    assert abs(fraction - 0.7) < 4 * np.sqrt(0.7 * 0.3 / kept.size)
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.7, rtol=1e-6)
  # Every channel and every example drops units (the bits are not shared across the last axis).
  assert kept.mean(axis=(0, 1, 2)).min() > 0.5 and kept.mean(axis=(0, 1, 2)).max() < 0.9
  other = fast.Dropout(0.3).apply({}, x, deterministic=False, rngs={'dropout': jax.random.key(1)})
  assert not np.array_equal(np.asarray(other != 0), kept)
  grad = jax.grad(lambda x: jnp.sum(fast.Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs)))(x)
  np.testing.assert_allclose(grad, np.where(kept, 1 / 0.7, 0.0), rtol=1e-6)
  assert fast.Dropout(0.3).apply({}, x, deterministic=True) is x
  assert fast.Dropout(0.3, deterministic=True).apply({}, x) is x
  assert not np.any(fast.Dropout(1.0).apply({}, x, deterministic=False, rngs=rngs))


def _network_outputs(module, variables, x):
  """The network's training-mode output and its gradients in params and input (dropout switched off, as
  the fast path draws other masks from the same key)."""
  def forward(params, x):
    out = module.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'],
                       rngs={'dropout': jax.random.key(2)})
    return out[0] if isinstance(out, tuple) else out
  return forward(variables['params'], x), jax.grad(lambda p, x: jnp.sum(jnp.sin(forward(p, x))), (0, 1))(
      variables['params'], x)


def _float64(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


# Whole networks are compared in float64, where only the wiring can differ. In float32 the two round
# differently (Winograd F(7x7, 3x3) to ~5e-5 of a layer's largest output), and in a network batch-normed over
# 4 examples that can move a pre-activation across LeakyReLU's kink and a batch-norm gradient by percents:
# flax's own layers with noise of 1e-5 of their largest output added do the same (measured on an Intel Xeon
# with AMX). Each layer's float32 accuracy, value and gradients, is tested above.
_FLOAT64_TOLERANCE = 1e-6


@pytest.mark.parametrize('network', ['generator', 'discriminator'])
def test_dcgan_is_the_same_network_either_way(network):
  # The models never name the fast layers: both trees come from one model file with other `Layers`.
  config = _config('dcgan')
  gan = models.create_gan(config, (28, 28, 1))
  module = getattr(gan, network)
  assert module.layers == cpu.model_layers(config) != Layers()   # these tests run on CPU in float32
  if network == 'discriminator':
    module = module.clone(dropout_rate=0.0)
  x = (jax.random.normal(jax.random.key(0), (4, config.model.latent_dim)) if network == 'generator'
       else jax.random.uniform(jax.random.key(0), (4, 28, 28, 1), minval=-1, maxval=1))
  plain = module.clone(layers=Layers())
  variables = plain.init(jax.random.key(1), x, train=False)
  assert jax.tree.map(jnp.shape, module.init(jax.random.key(1), x, train=False)) == jax.tree.map(jnp.shape, variables)
  # The float32 outputs agree to the layers' rounding (the output is continuous across a kink).
  expected = _network_outputs(plain, variables, x)[0]
  np.testing.assert_allclose(_network_outputs(module, variables, x)[0], expected,
                             atol=_NINE_POINT_TOLERANCE * float(jnp.max(jnp.abs(expected))))
  with jax.enable_x64(True):
    module, plain = module.clone(dtype=jnp.float64), plain.clone(dtype=jnp.float64)
    for a, b in zip(jax.tree.leaves(_network_outputs(module, _float64(variables), _float64(x))),
                    jax.tree.leaves(_network_outputs(plain, _float64(variables), _float64(x)))):
      np.testing.assert_allclose(a, b, atol=_FLOAT64_TOLERANCE * float(jnp.max(jnp.abs(b))))


def test_vae_conv_is_the_same_network_either_way():
  config = _config('vae_conv')
  vae = models.create_vae(config, (28, 28, 1), learned_std=False)
  assert vae.encoder.layers != Layers()
  plain = vae.clone(encoder=vae.encoder.clone(layers=Layers()), decoder=vae.decoder.clone(layers=Layers()))
  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
  eps = jax.random.normal(jax.random.key(1), (4, config.model.latent_dim))
  variables = plain.init(jax.random.key(2), x, eps)
  assert jax.tree.map(jnp.shape, vae.init(jax.random.key(2), x, eps)) == jax.tree.map(jnp.shape, variables)
  with jax.enable_x64(True):
    in_float64 = lambda vae: vae.clone(encoder=vae.encoder.clone(dtype=jnp.float64),
                                       decoder=vae.decoder.clone(dtype=jnp.float64))
    loss = lambda module: lambda v, x: jnp.sum(jnp.sin(in_float64(module).apply(v, x, _float64(eps))[0]))
    for a, b in zip(jax.tree.leaves(jax.grad(loss(vae), (0, 1))(_float64(variables), _float64(x))),
                    jax.tree.leaves(jax.grad(loss(plain), (0, 1))(_float64(variables), _float64(x)))):
      np.testing.assert_allclose(a, b, atol=_FLOAT64_TOLERANCE * float(jnp.max(jnp.abs(b))))


def test_a_checkpoint_moves_between_the_two():
  # The full train state (params, batch stats, optimiser state) has one tree and shape either way.
  shapes = {}
  for mode in cpu.MODES:
    family = families.create(_config('dcgan', cpu_fast_path=mode), (28, 28, 1), 10)
    shapes[mode] = jax.tree.map(lambda a: (a.shape, a.dtype), jax.eval_shape(family.init_state, jax.random.key(0)))
  assert jax.tree.structure(shapes['auto']) == jax.tree.structure(shapes['off'])
  assert jax.tree.leaves(shapes['auto']) == jax.tree.leaves(shapes['off'])


def _f32_copies(compiled) -> int:
  return len(re.findall(r'= f32\[[0-9,]*\]\{[0-9,]*\} copy\(', compiled.as_text()))


@pytest.mark.xla_canary
@pytest.mark.parametrize('update', ['alternating', 'simultaneous'])
def test_copy_insertion_option_updates_the_donated_state_in_place_and_computes_the_same(update):
  # Donated as train.py compiles it. XLA's default copy insertion copies the Adam moments each step (the
  # reason for the option; when the first assertion fails, XLA no longer needs it).
  config = _config('mlp', batch_size=16, width_multiplier=0.25, update_scheme=update)
  family = families.create(config, (28, 28, 1), 10)
  batch = {'image': jax.random.uniform(jax.random.key(1), (1, 16, 28, 28, 1), minval=-1, maxval=1),
           'label': jnp.zeros((1, 16), jnp.int32)}
  state = family.init_state(jax.random.key(0))
  default_step, our_step = (
      jax.jit(family.train_step, donate_argnums=0).lower(state, batch, jax.random.key(2)).compile(
          compiler_options=options)
      for options in (None, compile_lib.compiler_options(config, 'cpu')))
  assert _f32_copies(default_step) >= 8
  assert _f32_copies(our_step) == 0
  # Only buffer assignment differs: the same arithmetic, bit for bit, over steps that reuse the buffers.
  states = {step: jax.tree.map(jnp.copy, state) for step in (default_step, our_step)}
  for i in range(3):
    metrics = {}
    for step in states:
      states[step], metrics[step] = step(states[step], batch, jax.random.key(i))
    jax.tree.map(np.testing.assert_array_equal, states[our_step], states[default_step])
    jax.tree.map(np.testing.assert_array_equal, metrics[our_step], metrics[default_step])


def test_dcgan_computes_the_same_with_the_fast_paths_compiler_options(eight_point_winograd_tiles):
  # G's and D's gradients and R1's second-order one, compiled with XLA's defaults and with the fast path's
  # options: the same up to the order of float32 sums. Library-fusion options failed this: handing
  # reductions to YNNPACK changed G's batch-norm gradients by 2.5e-3 of the largest value on an Intel Xeon
  # with AMX. (8 devices against 1: tests/test_gan_steps.py.)
  config = _config('dcgan', width_multiplier=0.25)
  options = compile_lib.compiler_options(config, 'cpu')
  assert options == cpu.COMPILER_OPTIONS
  gan = models.create_gan(config, (28, 28, 1))
  z = jax.random.normal(jax.random.key(0), (16, config.model.latent_dim))
  x = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1), minval=-1, maxval=1)
  g_vars = gan.generator.init(jax.random.key(2), z, train=False)
  d_params = gan.discriminator.init(jax.random.key(3), x, train=False)['params']
  weights = jax.random.normal(jax.random.key(4), (16, 28, 28, 1))
  d_fn = lambda p: lambda x: gan.discriminator.apply({'params': p}, x, train=True, rngs={'dropout': jax.random.key(5)})
  g_loss = lambda p, z: jnp.sum(gan.generator.apply({**g_vars, 'params': p}, z, train=True,
                                                    mutable=['batch_stats'])[0] * weights)
  cases = [(g_loss, (g_vars['params'], z)), (lambda p, x: jnp.sum(jnp.sin(d_fn(p)(x))), (d_params, x)),
           (lambda p, x: losses.r1_penalty(d_fn(p), x), (d_params, x))]
  for loss, args in cases:
    grad = jax.jit(jax.grad(loss, (0, 1))).lower(*args)
    want, have = grad.compile()(*args), grad.compile(compiler_options=options)(*args)
    for a, b in zip(jax.tree.leaves(have), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, atol=2e-4 * float(jnp.max(jnp.abs(b))))


def test_compiler_options_string():
  assert compile_lib.parse_compiler_options('') == {}
  assert compile_lib.parse_compiler_options(
      'xla_gpu_autotune_level=0, xla_cpu_copy_insertion_use_region_analysis=false,xla_x=1.5,xla_y=abc') == {
          'xla_gpu_autotune_level': 0, 'xla_cpu_copy_insertion_use_region_analysis': False, 'xla_x': 1.5,
          'xla_y': 'abc'}
  for bad in ('xla_gpu_autotune_level', 'autotune=1', '=1'):
    with pytest.raises(ConfigError, match='allowed: comma-separated name=value'):
      compile_lib.parse_compiler_options(bad)
  # The config's own options override the fast path's.
  config = _config('mlp', xla_compiler_options='xla_cpu_copy_insertion_use_region_analysis=false')
  assert compile_lib.compiler_options(config, 'cpu') == {'xla_cpu_copy_insertion_use_region_analysis': False}
  config.xla_compiler_options += ',xla_cpu_enable_fast_min_max=false'
  assert compile_lib.compiler_options(config, 'cpu') == {'xla_cpu_copy_insertion_use_region_analysis': False,
                                                          'xla_cpu_enable_fast_min_max': False}
  assert compile_lib.compiler_options(_config('mlp', cpu_fast_path='off'), 'cpu') is None
