"""Per-model XLA compiler options for the train step: the choice, and that each model's step computes the
same with them (the options are experimental in XLA; one of them miscompiles, shown below)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import compiler_options, families, losses, models
from configs import default


def _config(model, setting='auto'):
  config = default.get_config()
  config.model, config.xla_cpu_library_fusions = model, setting
  return config


@pytest.mark.parametrize('model,setting,library_fusions', [
    ('dcgan', 'auto', 'LIBRARY_FUSION_TYPE_REDUCE'),
    ('mlp', 'auto', None),
    ('dcgan', 'xla', None),
])
def test_cpu_options_by_model_and_setting(model, setting, library_fusions):
  options = compiler_options.train_step_compiler_options(_config(model, setting), 'cpu')
  expected = dict(compiler_options.CPU_COPY_INSERTION_OPTION)
  if library_fusions:
    expected['xla_cpu_experimental_ynn_fusion_type'] = library_fusions
  assert options == expected


@pytest.mark.parametrize('platform', ['gpu', 'tpu'])
def test_no_options_off_cpu(platform):
  assert compiler_options.train_step_compiler_options(_config('dcgan'), platform) is None


def _f32_copies(compiled) -> int:
  return len(re.findall(r'= f32\[[0-9,]*\]\{[0-9,]*\} copy\(', compiled.as_text()))


@pytest.mark.parametrize('update', losses.GAN_UPDATES)
def test_cpu_copy_insertion_updates_the_donated_state_in_place_and_computes_the_same(update):
  # As train.py and the benchmark compile it: the state donated. XLA's default copy insertion copies the
  # Adam moments (the reason for the option; when the first assertion fails, XLA no longer needs it).
  config = _config('mlp')
  config.batch_size, config.width_multiplier, config.gan_update = 16, 0.25, update
  family = families.create(config, (28, 28, 1), 10)
  batch = {'image': jax.random.uniform(jax.random.key(1), (1, 16, 28, 28, 1), minval=-1, maxval=1),
           'label': jnp.zeros((1, 16), jnp.int32)}
  state = family.init_state(jax.random.key(0))
  default_step, our_step = (
      jax.jit(family.train_step, donate_argnums=0).lower(state, batch, jax.random.key(2)).compile(
          compiler_options=options)
      for options in (None, compiler_options.train_step_compiler_options(config, 'cpu')))
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


@pytest.mark.parametrize('model', sorted(compiler_options.AUTO_CPU_LIBRARY_FUSIONS))
def test_networks_compute_the_same_with_the_models_options(model, eight_point_winograd_tiles):
  # G's and D's gradients, and R1's second-order one, with and without the options: rounding apart.
  config = _config(model)
  config.width_multiplier = 0.25
  gan = models.create_gan(config, (28, 28, 1))
  z = jax.random.normal(jax.random.key(0), (16, config.latent_dim))
  x = jax.random.uniform(jax.random.key(1), (16, 28, 28, 1), minval=-1, maxval=1)
  g_vars = gan.generator.init(jax.random.key(2), z, train=False)
  d_params = gan.discriminator.init(jax.random.key(3), x, train=False)['params']
  weights = jax.random.normal(jax.random.key(4), (16, 28, 28, 1))
  d_fn = lambda p: lambda x: gan.discriminator.apply({'params': p}, x, train=True, rngs={'dropout': jax.random.key(5)})

  def g_loss(p, z):
    images, _ = gan.generator.apply({**g_vars, 'params': p}, z, train=True, mutable=['batch_stats'])
    return jnp.sum(images * weights)

  cases = [(g_loss, (g_vars['params'], z)), (lambda p, x: jnp.sum(jnp.sin(d_fn(p)(x))), (d_params, x)),
           (lambda p, x: losses.r1_penalty(d_fn(p), x), (d_params, x))]
  options = compiler_options.train_step_compiler_options(config, 'cpu')
  for loss, args in cases:
    grad = jax.jit(jax.grad(loss, (0, 1))).lower(*args)
    want, have = grad.compile()(*args), grad.compile(compiler_options=options)(*args)
    for a, b in zip(jax.tree.leaves(have), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.max(jnp.abs(b))))


@pytest.mark.parametrize('model', sorted(compiler_options.AUTO_CPU_LIBRARY_FUSIONS))
def test_train_steps_compute_the_same_with_the_models_options(model, eight_point_winograd_tiles):
  # Techniques on, so their extra passes (R1's double backward, EMA) are compiled too. Not augmentation:
  # its cutout zeros whole regions, where D's first pre-activations are exactly its still-zero biases, and
  # LeakyReLU's slope at 0 then follows the rounding of each program (a few % of D's bias gradients).
  config = _config(model)
  config.batch_size, config.width_multiplier = 16, 0.25
  config.r1_gamma, config.r1_every, config.ema_decay = 1.0, 1, 0.9
  family = families.create(config, (28, 28, 1), 10)
  batch = {'image': jax.random.uniform(jax.random.key(1), (1, 16, 28, 28, 1), minval=-1, maxval=1),
           'label': jnp.zeros((1, 16), jnp.int32)}
  options = compiler_options.train_step_compiler_options(config, 'cpu')
  assert options
  state = family.init_state(jax.random.key(0))
  step_a, step_b = (jax.jit(family.train_step).lower(state, batch, jax.random.key(2)).compile(compiler_options=o)
                    for o in (None, options))
  # Both programs take each step from the same state: carried separately, their different rounding moves
  # pre-activations across LeakyReLU's kink, and small gradient elements with them (chaos, not a miscompile).
  for i in range(2):
    (state_a, metrics_a), (state_b, metrics_b) = (step(state, batch, jax.random.key(i)) for step in (step_a, step_b))
    for key in metrics_a:
      np.testing.assert_allclose(metrics_b[key], metrics_a[key], rtol=1e-3, atol=1e-4, err_msg=key)
    for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
      if jnp.issubdtype(a.dtype, jnp.floating):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3)
    state = state_a


def test_the_dot_fusion_miscompiles_a_broadcast_operand():
  # Why arbitrary fusion lists are not a setting: with jax 0.10.2, handing dots to YNNPACK computes garbage
  # for a matmul by a broadcast constant. When this fails, XLA fixed it: revisit compiler_options.py.
  x = jax.random.normal(jax.random.key(0), (324, 8))
  f = lambda x: x @ jnp.ones((8, 5))
  fused = jax.jit(f).lower(x).compile(compiler_options=compiler_options.cpu_library_fusion_option(('dot',)))
  np.testing.assert_allclose(jax.jit(f)(x), np.asarray(x) @ np.ones((8, 5)), rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(fused(x)) - np.asarray(x) @ np.ones((8, 5))).max() > 1.0
