"""Per-model XLA compiler options for the train step: the choice, and that each model's step computes the
same with them (the options are experimental in XLA; one of them miscompiles, shown below)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import compiler_options, families
from configs import default


def _config(model, setting='auto'):
  config = default.get_config()
  config.model, config.xla_cpu_library_fusions = model, setting
  return config


@pytest.mark.parametrize('model,setting,platform,expected', [
    ('dcgan', 'auto', 'cpu', 'LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE'),
    ('mlp', 'auto', 'cpu', None),
    ('dcgan', 'xla', 'cpu', None),
    ('dcgan', 'auto', 'gpu', None),
    ('dcgan', 'auto', 'tpu', None),
])
def test_options_by_model_setting_and_platform(model, setting, platform, expected):
  options = compiler_options.train_step_compiler_options(_config(model, setting), platform)
  assert options == (None if expected is None else {'xla_cpu_experimental_ynn_fusion_type': expected})


@pytest.mark.parametrize('model', sorted(compiler_options.AUTO_CPU_LIBRARY_FUSIONS))
def test_train_steps_compute_the_same_with_the_models_options(model):
  # Techniques on, so their extra passes (R1's double backward, augmentation, EMA) are compiled too.
  config = _config(model)
  config.batch_size, config.width_multiplier = 16, 0.25
  config.r1_gamma, config.r1_every, config.augment_p, config.ema_decay = 1.0, 1, 0.5, 0.9
  family = families.create(config, (28, 28, 1), 10)
  batch = {'image': jax.random.uniform(jax.random.key(1), (1, 16, 28, 28, 1), minval=-1, maxval=1),
           'label': jnp.zeros((1, 16), jnp.int32)}
  options = compiler_options.train_step_compiler_options(config, 'cpu')
  assert options
  runs = []
  for compile_options in (None, options):
    state = family.init_state(jax.random.key(0))
    step = jax.jit(family.train_step).lower(state, batch, jax.random.key(2)).compile(compiler_options=compile_options)
    for i in range(2):
      state, metrics = step(state, batch, jax.random.key(i))
    runs.append((state, metrics))
  (state_a, metrics_a), (state_b, metrics_b) = runs
  for key in metrics_a:
    np.testing.assert_allclose(metrics_b[key], metrics_a[key], rtol=1e-3, atol=1e-4, err_msg=key)
  for a, b in zip(jax.tree.leaves(state_a), jax.tree.leaves(state_b)):
    if jnp.issubdtype(a.dtype, jnp.floating):
      np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-3)


def test_the_dot_fusion_miscompiles_a_broadcast_operand():
  # Why arbitrary fusion lists are not a setting: with jax 0.10.2, handing dots to YNNPACK computes garbage
  # for a matmul by a broadcast constant. When this fails, XLA fixed it: revisit compiler_options.py.
  x = jax.random.normal(jax.random.key(0), (324, 8))
  f = lambda x: x @ jnp.ones((8, 5))
  fused = jax.jit(f).lower(x).compile(compiler_options=compiler_options.cpu_library_fusion_option(('dot',)))
  np.testing.assert_allclose(jax.jit(f)(x), np.asarray(x) @ np.ones((8, 5)), rtol=1e-5, atol=1e-5)
  assert np.abs(np.asarray(fused(x)) - np.asarray(x) @ np.ones((8, 5))).max() > 1.0
