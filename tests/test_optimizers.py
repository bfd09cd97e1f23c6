"""Learning rates as the config says: warm-up, decay, two time-scales, the discriminator's n_critic-long
schedule, and Adam's betas and epsilon."""
import jax.numpy as jnp
import numpy as np
import pytest

from aigc_jax import optimizers
from configs import base


def _applied_rates(config, network, updates):
  """The learning rate of each update, read off Adam with b1 = b2 = 0 on a gradient of 1 (update = -lr)."""
  config.optimizer.adam_b1, config.optimizer.adam_b2, config.optimizer.adam_eps = 0.0, 0.0, 1e-12
  tx = optimizers.create_optimizer(config, network)
  params = {'w': jnp.zeros(())}
  state, rates = tx.init(params), []
  for _ in range(updates):
    update, state = tx.update({'w': jnp.ones(())}, state, params)
    rates.append(-float(update['w']))
  return np.asarray(rates)


def test_warmup_then_cosine_decay_and_two_timescales():
  config = base.get_config()
  config.num_train_steps, config.optimizer.warmup_steps, config.optimizer.lr_schedule = 10, 4, 'cosine'
  config.optimizer.g_learning_rate, config.optimizer.d_learning_rate = 1e-4, 4e-4
  g_rates = _applied_rates(config, 'generator', 10)
  # Warm-up 0 -> peak over 4 updates, then cosine from the peak towards 0 at update 10.
  np.testing.assert_allclose(g_rates[:4], [0, 0.25e-4, 0.5e-4, 0.75e-4], rtol=1e-5, atol=1e-12)
  cosine = [1e-4 * 0.5 * (1 + np.cos(np.pi * k / 6)) for k in range(6)]
  np.testing.assert_allclose(g_rates[4:], cosine, rtol=1e-5, atol=1e-12)
  # The discriminator's own peak, same shape.
  np.testing.assert_allclose(_applied_rates(config, 'discriminator', 10), 4 * g_rates, rtol=1e-5, atol=1e-12)


def test_discriminator_schedule_spans_n_critic_updates_per_step():
  config = base.get_config()
  config.num_train_steps, config.optimizer.warmup_steps, config.optimizer.lr_schedule, config.gan.n_critic = 4, 1, 'linear', 3
  config.optimizer.learning_rate = 1.0
  d_rates = _applied_rates(config, 'discriminator', 12)
  # Warm-up over 1 step = 3 D updates, then linear decay to 0 over the remaining 9.
  np.testing.assert_allclose(d_rates[:3], [0, 1 / 3, 2 / 3], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(d_rates[3:], [1 - k / 9 for k in range(9)], rtol=1e-5, atol=1e-7)
  g_rates = _applied_rates(config, 'generator', 4)
  np.testing.assert_allclose(g_rates, [0, 1, 2 / 3, 1 / 3], rtol=1e-5, atol=1e-7)


def test_adam_betas_and_epsilon_come_from_the_config():
  config = base.get_config()
  config.optimizer.adam_b1, config.optimizer.adam_b2, config.optimizer.adam_eps, config.optimizer.learning_rate = 0.0, 0.9, 1e-3, 1.0
  tx = optimizers.create_optimizer(config, 'generator')
  params = {'w': jnp.zeros(())}
  state = tx.init(params)
  update, state = tx.update({'w': jnp.float32(1e-3)}, state, params)
  # Step 1: m_hat = g, v_hat = g^2 (bias-corrected), update = -g / (|g| + eps) = -0.5.
  assert float(update['w']) == pytest.approx(-0.5, rel=1e-4)
  update, _ = tx.update({'w': jnp.float32(-3e-3)}, state, params)
  # Step 2, b1 = 0: m = g (no momentum: the sign follows the new gradient at once); b2 = 0.9 averages v.
  v_hat = (0.9 * 0.1 * 1e-6 + 0.1 * 9e-6) / (1 - 0.9 ** 2)
  assert float(update['w']) == pytest.approx(3e-3 / (np.sqrt(v_hat) + 1e-3), rel=1e-4)
