"""The VAE family: its divergences and likelihoods against their formulas, the reparameterised gradient
against finite differences of the exact expectation, learning on a fixed batch, sharding, FLOPs, config
checks, and the real training loop (checkpoints, grids, held-out ELBO, exact resume, sampling)."""
import glob
import math
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from aigc_jax import config_checks, evaluate, families, flops, restored_run, sharding, train, vae_steps
from aigc_jax import vae_losses
from aigc_jax.evaluation import vae_likelihood
from aigc_jax.config_checks import ConfigError
from tests import compiled_steps
from tests.conftest import make_tiny_config

IMAGE_SHAPE = (28, 28, 1)


def _vae_config(data_dir, model='vae_conv', likelihood='bernoulli'):
  config = make_tiny_config(data_dir)
  config.model.name = model
  config.model.latent_dim = 8
  config.optimizer.learning_rate = 1e-3
  config.optimizer.adam_b1 = 0.9
  config.vae.likelihood = likelihood
  config.vae.heldout_every_steps = 2
  return config


@pytest.fixture(scope='module')
def real_batches(tfds_data_dir):
  """Two real training elements `[1, 16, 28, 28, 1]` of the offline digits."""
  return compiled_steps.real_batches(_vae_config(tfds_data_dir), 2)


# --- The objective's pieces. ---

def test_kl_of_diagonal_gaussians_matches_the_closed_form_and_monte_carlo():
  rng = np.random.default_rng(0)
  mean_q, mean_p = rng.normal(size=(2, 3))
  logvar_q, logvar_p = rng.normal(scale=0.5, size=(2, 3))
  kl = float(vae_losses.kl_diagonal_gaussians(mean_q, logvar_q, mean_p, logvar_p))
  # The general multivariate formula, with full covariance matrices, in float64.
  cov_q, cov_p = np.diag(np.exp(logvar_q)), np.diag(np.exp(logvar_p))
  inv_p, diff = np.linalg.inv(cov_p), mean_p - mean_q
  closed = 0.5 * (np.trace(inv_p @ cov_q) + diff @ inv_p @ diff - 3
                  + np.log(np.linalg.det(cov_p) / np.linalg.det(cov_q)))
  assert kl == pytest.approx(closed, rel=1e-5)
  # E_q[log q(z) - log p(z)] from 400,000 samples of q, within 4 standard errors.
  z = mean_q + np.exp(0.5 * logvar_q) * rng.normal(size=(400_000, 3))
  log_ratio = (stats.norm.logpdf(z, mean_q, np.exp(0.5 * logvar_q)).sum(-1)
               - stats.norm.logpdf(z, mean_p, np.exp(0.5 * logvar_p)).sum(-1))
  assert abs(log_ratio.mean() - kl) < 4 * log_ratio.std() / math.sqrt(len(z))
  # Against the standard normal prior (the default) it is 0 exactly when q is the prior.
  assert float(vae_losses.kl_diagonal_gaussians(jnp.zeros(4), jnp.zeros(4))) == 0.0


def test_reparameterised_gradient_matches_finite_differences_of_the_exact_expectation():
  # A tiny decoder: 2 latents -> 4 Bernoulli pixels. F(mean, logvar) = E_q[log p(x | z)].
  weights = np.array([[1.5, -0.5, 0.3, 2.0], [-1.0, 0.8, 1.2, -0.4]])
  bias = np.array([0.2, -0.3, 0.1, 0.0])
  x = np.array([[1.0, 0.0, 1.0, 1.0]])
  mean, logvar = np.array([0.3, -0.6]), np.array([-0.4, 0.5])

  def log_likelihood(z):
    return vae_losses.bernoulli_log_prob(z @ weights + bias, x)

  # Reparameterised per-sample gradients: d/d(mean, logvar) of log p(x | mean + sigma * eps).
  eps = jax.random.normal(jax.random.key(0), (100_000, 1, 2))
  per_sample = jax.vmap(jax.grad(lambda p, e: log_likelihood(vae_losses.reparameterize(p[0], p[1], e))[0]),
                        in_axes=(None, 0))(jnp.asarray(np.stack([mean, logvar]), jnp.float32), eps)
  estimate = np.asarray(per_sample, np.float64).mean(0)
  stderr = np.asarray(per_sample, np.float64).std(0) / math.sqrt(len(eps))

  # The exact expectation by 60x60-point Gauss-Hermite quadrature (float64), then central differences.
  nodes, node_weights = np.polynomial.hermite_e.hermegauss(60)
  grid = np.stack(np.meshgrid(nodes, nodes, indexing='ij'), -1).reshape(-1, 2)
  grid_weights = np.outer(node_weights, node_weights).reshape(-1) / (2 * math.pi)

  def expectation(params):
    z = params[0] + np.exp(0.5 * params[1]) * grid
    logits = z @ weights + bias
    log_prob = (x * logits - np.logaddexp(0, logits)).sum(-1)
    return float(grid_weights @ log_prob)

  params, step = np.stack([mean, logvar]), 1e-5
  exact = np.zeros_like(params)
  for index in np.ndindex(params.shape):
    up, down = params.copy(), params.copy()
    up[index] += step
    down[index] -= step
    exact[index] = (expectation(up) - expectation(down)) / (2 * step)
  assert np.all(np.abs(estimate - exact) < 4 * stderr + 1e-4), (estimate, exact, stderr)
  assert np.linalg.norm(exact) > 100 * np.linalg.norm(stderr)  # the comparison has teeth: well above the noise


def test_discretised_gaussian_is_a_distribution_over_the_256_levels_and_matches_float64():
  levels = (jnp.arange(256.0) / 127.5 - 1.0)[:, None]  # every 8-bit level as the pipeline makes it, one pixel each
  assert np.array_equal(np.asarray(vae_losses.quantize(levels + 0.003)), np.asarray(levels))
  assert np.array_equal(np.asarray(vae_losses.quantize(levels - 0.003)), np.asarray(levels))
  log_prob = jax.jit(lambda mean, std: vae_losses.discretized_gaussian_log_prob(
      levels, jnp.full_like(levels, mean), jnp.full_like(levels, jnp.log(std))))
  for mean, std in [(-1.2, 0.001), (-0.3, 0.01), (0.5, 0.3), (1.0, 3.0), (0.0, 1e-3), (0.9, 0.05)]:
    log_probs = log_prob(mean, std)
    assert np.all(np.isfinite(log_probs))
    assert float(jax.scipy.special.logsumexp(log_probs)) == pytest.approx(0.0, abs=1e-4)
    # Each bin's mass against scipy in float64 where it is not vanishingly small.
    x = np.linspace(-1.0, 1.0, 256)
    lo = np.where(np.arange(256) == 0, -np.inf, x - 1 / 255)
    hi = np.where(np.arange(256) == 255, np.inf, x + 1 / 255)
    with np.errstate(divide="ignore"):
      expected = np.log(stats.norm.cdf(hi, mean, std) - stats.norm.cdf(lo, mean, std))
    big = expected > -20
    np.testing.assert_allclose(np.asarray(log_probs)[big], expected[big], rtol=2e-3, atol=2e-4)
  # Far in the tails (a bin 1e5 standard deviations away): finite values and gradients.
  value, grads = jax.jit(jax.value_and_grad(
      lambda m, s: vae_losses.discretized_gaussian_log_prob(levels, m, s).sum(), argnums=(0, 1)))(
          jnp.full_like(levels, 0.2), jnp.full_like(levels, math.log(1e-5)))
  assert np.isfinite(value) and all(np.all(np.isfinite(g)) for g in grads)


def test_bernoulli_log_prob_and_kl_warmup():
  logits = jnp.array([[2.0, -1.0, 0.0]])
  targets = jnp.array([[1.0, 0.0, 1.0]])
  expected = math.log(1 / (1 + math.exp(-2))) + math.log(1 - 1 / (1 + math.exp(1))) + math.log(0.5)
  assert float(vae_losses.bernoulli_log_prob(logits, targets)[0]) == pytest.approx(expected, rel=1e-6)
  weights = [float(vae_losses.kl_weight(jnp.int32(s), beta=2.0, warmup_steps=4)) for s in range(6)]
  assert weights == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
  assert float(vae_losses.kl_weight(jnp.int32(0), beta=0.5, warmup_steps=0)) == 0.5


@pytest.mark.parametrize('model', ['vae_conv', 'vae_mlp'])
@pytest.mark.parametrize('image_shape', [(28, 28, 1), (32, 32, 3)])
def test_vae_models_fit_digits_and_colour_images(model, image_shape):
  for likelihood, std, outputs in (('bernoulli', None, None), ('gaussian', 0.1, None), ('gaussian', None, 'log_std')):
    config = _vae_config(None, model, likelihood)  # shapes only: no data read
    config.vae.gaussian_std = std
    family = families.create(config, image_shape)
    state = jax.eval_shape(family.init_state, jax.random.key(0))
    images = jax.ShapeDtypeStruct((3,) + image_shape, jnp.float32)
    mean, logvar = jax.eval_shape(lambda s, x: family.modules.apply({'params': s.vae.params}, x, method='encode'),
                                  state, images)
    assert mean.shape == logvar.shape == (3, config.model.latent_dim)
    loc, log_std = jax.eval_shape(lambda s, z: family.modules.apply({'params': s.vae.params}, z, method='decode'),
                                  state, jax.ShapeDtypeStruct((3, config.model.latent_dim), jnp.float32))
    assert loc.shape == (3,) + image_shape
    assert (log_std is None) if outputs is None else log_std.shape == ()  # one scale shared by every pixel
    assert jax.eval_shape(family.generate, state, jax.ShapeDtypeStruct((5, 8), jnp.float32)).shape == (5,) + image_shape


def test_sample_temperature_draws_latents_from_a_narrower_prior():
  config = _vae_config(None)  # shapes only: no data read
  state = families.create(config, IMAGE_SHAPE).init_state(jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (6, config.model.latent_dim))
  at_one = families.create(config, IMAGE_SHAPE).generate
  config.vae.sample_temperature = 0.5
  at_half = families.create(config, IMAGE_SHAPE).generate
  np.testing.assert_allclose(at_half(state, z), at_one(state, 0.5 * z), atol=1e-6)
  assert np.abs(np.asarray(at_half(state, z)) - np.asarray(at_one(state, z))).max() > 1e-3


def _set_layer(params, prefix, pick, **values):
  """`params` with the Dense layer of `prefix` chosen by `pick` (over their sorted names) set to `values`."""
  name = pick(sorted(k for k in params[prefix] if k.startswith('Dense_')))
  layer = {**params[prefix][name], **{k: jnp.broadcast_to(v, params[prefix][name][k].shape) for k, v in values.items()}}
  return {**params, prefix: {**params[prefix], name: layer}}


def test_importance_sampled_likelihood_is_exact_for_a_decoder_that_ignores_z(tfds_data_dir, real_batches):
  # With p(x | z) the same for every z, log p(x) = log p(x | z) exactly; the importance weights then average
  # p(z) / q(z | x), which is 1 in expectation for any q. The ELBO stays below by KL(q || p).
  config = _vae_config(tfds_data_dir, 'vae_mlp')
  family = families.create(config, IMAGE_SHAPE)
  state = family.init_state(jax.random.key(0))
  latent = config.model.latent_dim
  posterior = jnp.concatenate([jnp.full((latent,), 0.1), jnp.full((latent,), 2 * math.log(0.9))])  # mean, logvar
  params = _set_layer(state.vae.params, 'encoder', lambda names: names[-1], kernel=0.0, bias=posterior)
  params = _set_layer(params, 'decoder', lambda names: names[0], kernel=0.0)
  state = state.replace(vae=state.vae.replace(params=params))
  likelihood = vae_likelihood.likelihood_of(config)
  targets = likelihood.targets(real_batches[0]['image'][0][:4], jax.random.key(1))
  bind = dict(vae=family.modules, likelihood=likelihood, latent_dim=latent)
  keys = jax.random.split(jax.random.key(2), 4)
  weights = jax.jit(lambda s: vae_steps.log_importance_weights(s, targets, keys, samples=4000, **bind))(state)
  log_px = jax.scipy.special.logsumexp(weights, axis=1) - math.log(4000)
  log_px_given_z, kl = jax.jit(lambda s: vae_steps.heldout_terms(s, targets, keys, **bind))(state)
  expected_kl = latent * 0.5 * (0.81 + 0.01 - 1 - math.log(0.81))
  np.testing.assert_allclose(kl, expected_kl, rtol=1e-5)
  # The estimate's own error here (the log of a mean ratio over 4,000 draws) is about 1e-3 nats; a wrong
  # log q or log p term would be off by ~0.1 nats or more.
  np.testing.assert_allclose(log_px, log_px_given_z, atol=0.02)
  assert expected_kl > 0.05


# --- The step. ---

@pytest.mark.parametrize('model,likelihood', [('vae_conv', 'bernoulli'), ('vae_mlp', 'gaussian')])
def test_negative_elbo_falls_on_a_fixed_batch(tfds_data_dir, real_batches, model, likelihood):
  config = _vae_config(tfds_data_dir, model, likelihood)
  config.vae.binarize = 'threshold'  # the same targets every step
  family, state, step, _ = compiled_steps.compiled_train_step(config, sharding.create_mesh(jax.devices()[:1]))
  likelihood_fn = vae_likelihood.likelihood_of(config)
  targets = likelihood_fn.targets(real_batches[0]['image'][0], jax.random.key(0))
  keys = jax.random.split(jax.random.key(1), len(targets))
  neg_elbo = jax.jit(lambda s: -jnp.mean(jnp.subtract(*vae_steps.heldout_terms(
      s, targets, keys, vae=family.modules, likelihood=likelihood_fn, latent_dim=config.model.latent_dim))))
  before = float(neg_elbo(state))
  for _ in range(50):
    state, metrics = step(state, real_batches[0], jax.random.key(2))
  after = float(neg_elbo(state))
  assert int(state.step) == 50 and int(state.skipped_steps) == 0
  # vae_conv at seeds 0, 1, 2: after / before = 0.86, 0.77, 0.84 (the fast CPU layers and flax's alike).
  assert after < 0.9 * before, (before, after)
  metrics = jax.device_get(metrics)
  assert metrics['elbo'] == pytest.approx(metrics['reconstruction'] - metrics['kl'], rel=1e-5)
  assert metrics['kl'] >= 0 and all(np.isfinite(v) for v in metrics.values())

  # A batch with one corrupt pixel gives a non-finite update: not applied, but counted.
  before = jax.device_get(state.vae)
  bad = {**real_batches[0], 'image': real_batches[0]['image'].copy()}
  bad['image'][0, 3, 5, 5, 0] = np.nan  # (a NaN is not silently binarised away)
  state, metrics = step(state, bad, jax.random.key(3))
  assert int(metrics['skipped']) == 1 and int(state.skipped_steps) == 1 and int(state.step) == 51
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.vae), before)


def test_vae_step_on_8_devices_equals_1_device(tfds_data_dir, real_batches):
  assert jax.device_count() == 8
  # The MLP VAE compiles fastest; the sharded convolutions are covered by the GAN tests (tests/test_gan_steps.py).
  config = _vae_config(tfds_data_dir, 'vae_mlp')
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    _, state, step, _ = compiled_steps.compiled_train_step(config, sharding.create_mesh(devices))
    for batch in real_batches:
      state, metrics = step(state, batch, jax.random.key(7))
    results.append((jax.device_get(state), jax.device_get(metrics)))
  (one, one_metrics), (eight, eight_metrics) = results
  assert int(one.step) == int(eight.step) == 2
  for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(eight)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  for name in one_metrics:
    np.testing.assert_allclose(one_metrics[name], eight_metrics[name], rtol=2e-4, atol=2e-5)


def test_vae_mlp_flops_are_close_to_xla_cost_analysis():
  # Dense layers only, so XLA's count differs only by the elementwise ops (likelihood, KL, Adam).
  from configs import vae_mnist
  config = vae_mnist.get_config()
  config.model.name = 'vae_mlp'
  family = families.create(config, IMAGE_SHAPE)
  state = jax.eval_shape(family.init_state, jax.random.key(0))
  batch = {'image': jax.ShapeDtypeStruct((1, 128) + IMAGE_SHAPE, jnp.float32),
           'label': jax.ShapeDtypeStruct((1, 128), jnp.int32)}
  xla = jax.jit(family.train_step).lower(state, batch, jax.random.key(1)).compile().cost_analysis()['flops']
  analytic = flops.train_step_flops(config, IMAGE_SHAPE)
  # encoder 784*512 + 512*256 + 256*64, decoder 32*256 + 256*512 + 512*784: forward 2*MACs; see flops.py.
  encoder, decoder = 784 * 512 + 512 * 256 + 256 * 64, 32 * 256 + 256 * 512 + 512 * 784
  assert analytic == 128 * 2 * (encoder + decoder + 2 * decoder + 2 * encoder - 784 * 512)
  assert 0.98 < xla / analytic < 1.06, (xla, analytic)


@pytest.mark.parametrize('changes,message', [
    ({'model.name': 'vae'}, "config.model.name='vae' is not allowed; allowed: mlp, dcgan, "),
    ({'vae.likelihood': 'laplace'}, "config.vae.likelihood='laplace' is not allowed; allowed: bernoulli, gaussian"),
    ({'vae.binarize': 'none'}, "config.vae.binarize='none' is not allowed; allowed: dynamic, threshold"),
    ({'vae.gaussian_std': -0.1}, 'config.vae.gaussian_std=-0.1 is not allowed; allowed: a number > 0'),
    ({'vae.beta': -1.0}, 'config.vae.beta=-1.0 is not allowed; allowed: a number >= 0'),
    ({'vae.kl_warmup_steps': -5}, 'config.vae.kl_warmup_steps=-5 is not allowed'),
    ({'vae.sample_temperature': 0.0}, 'config.vae.sample_temperature=0.0 is not allowed; allowed: a number in (0, 2]'),
    ({'vae.sampler': 'flow'}, "config.vae.sampler='flow' is not allowed; allowed: prior, gmm"),
    ({'vae.gmm_components': 0}, 'config.vae.gmm_components=0 is not allowed; allowed: an integer in [1, 1000]'),
    ({'gan.n_critic': 2}, "config.gan.n_critic=2 is not used by config.model.name='vae_conv'; allowed: 1"),
    ({'gan.ema_decay': 0.999}, "config.gan.ema_decay=0.999 is not used by config.model.name='vae_conv'; allowed: 0.0"),
])
def test_bad_vae_config_is_one_clear_error(tfds_data_dir, changes, message):
  config = _vae_config(tfds_data_dir)
  for dotted, value in changes.items():
    node, *path = [config] + dotted.split('.')
    for name in path[:-1]:
      node = node[name]
    node[path[-1]] = value
  with pytest.raises(ConfigError) as error:
    config_checks.validate(config, device_count=8, process_count=1)
  assert message in str(error.value) and '\n' not in str(error.value)
  if 'model.name' in changes:
    assert str(error.value).endswith('vae_conv, vae_mlp')


# --- The real loop. ---

def _tags(workdir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        found.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
  return found


def test_short_run_writes_checkpoints_grids_heldout_elbo_and_resumes_exactly(tfds_data_dir, tmp_path):
  config = _vae_config(tfds_data_dir, 'vae_mlp')  # the loop is the same for every VAE; the MLP compiles fastest
  config.num_train_steps = 4
  config.vae.kl_warmup_steps = 3
  straight_dir = str(tmp_path / 'straight')
  straight = train.train_and_evaluate(config, straight_dir)
  assert int(straight.step) == 4

  assert sorted(os.listdir(os.path.join(straight_dir, 'checkpoints'))) == ['2', '4']
  for kind in ('samples', 'reconstructions'):
    pngs = sorted(os.path.basename(p) for p in glob.glob(os.path.join(straight_dir, kind, '*.png')))
    assert pngs == ['step_0000002.png', 'step_0000004.png'], kind
  samples = np.asarray(Image.open(os.path.join(straight_dir, 'samples', 'step_0000004.png')))
  recons = np.asarray(Image.open(os.path.join(straight_dir, 'reconstructions', 'step_0000004.png')))
  assert samples.shape == (2 + 2 * 30, 2 + 2 * 30) and samples.std() > 0   # 4 prior samples
  assert recons.shape == (2 + 2 * 30, 2 + 2 * 30)                           # 2 inputs beside 2 reconstructions
  # The inputs are held-out digits, binarised: only black and white.
  assert set(np.unique(recons[2:30, 2:30])) <= {0, 255} and recons[2:30, 2:30].std() > 0
  tags = _tags(straight_dir)
  for name in ('elbo', 'reconstruction', 'kl', 'loss', 'kl_weight', 'lr_vae'):
    assert sorted(tags[f'train/{name}']) == [2, 4], name
  assert float(tags['train/kl_weight'][2]) == pytest.approx((1 / 3 + 2 / 3) / 2)  # steps 1, 2 of a 3-step warm-up
  assert sorted(tags['eval/heldout_neg_elbo']) == [2, 4]
  neg_elbo, bits = float(tags['eval/heldout_neg_elbo'][4]), float(tags['eval/heldout_bits_per_dim'][4])
  assert neg_elbo > 0 and bits == pytest.approx(neg_elbo / (784 * math.log(2)), rel=1e-5)
  assert neg_elbo == pytest.approx(float(tags['eval/heldout_kl'][4] - tags['eval/heldout_reconstruction'][4]),
                                   rel=1e-5)

  # Resumed from the straight run's step-2 checkpoint (its step-4 one removed, as if it had stopped there):
  # the state and the data position restore into the VAE state, and the run ends bit-identical.
  resumed_dir = str(tmp_path / 'resumed')
  shutil.copytree(straight_dir, resumed_dir)
  shutil.rmtree(os.path.join(resumed_dir, 'checkpoints', '4'))
  resumed = train.train_and_evaluate(config, resumed_dir)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed), jax.device_get(straight))

  # A resume that changes the likelihood is refused, and nothing is trained.
  config.num_train_steps = 6
  config.vae.likelihood = 'gaussian'
  with pytest.raises(ConfigError, match='config.vae.likelihood changed since the checkpoint'):
    train.train_and_evaluate(config, resumed_dir)

  # What the sample and evaluate tools do: the run rebuilt from its workdir, prior samples from its decoder.
  run = restored_run.restore(straight_dir, {})
  assert run.family.kind == 'vae' and run.step == 4
  images = np.asarray(jax.jit(run.family.generate)(run.state, jax.random.normal(jax.random.key(0), (5, 8))))
  assert images.shape == (5,) + IMAGE_SHAPE and images.min() >= -1 and images.max() <= 1 and images.std() > 0
  # evaluate's held-out figures: the ELBO training logged, and the tighter importance-sampled NLL.
  run = restored_run.restore(straight_dir, {'vae.iwae_samples': 200})
  scores = evaluate.heldout_likelihood(run)
  assert scores['heldout_neg_elbo'] == pytest.approx(neg_elbo, rel=1e-5)
  assert scores['heldout_importance_samples'] == 200
  assert 0 < scores['heldout_nll'] < scores['heldout_neg_elbo']
  assert scores['heldout_nll_bits_per_dim'] == pytest.approx(scores['heldout_nll'] / (784 * math.log(2)))

  # The same run sampled from a latent mixture fitted to its training digits (the sample tool's path, which
  # then reads the data): the same images on every fit, other images than the prior's, and the same model.
  z = jax.random.normal(jax.random.key(0), (6, 8))
  prior_images = restored_run.generate_images(restored_run.restore(straight_dir, {}, needs_data=False), z)
  run = restored_run.restore(straight_dir, {'vae.sampler': 'gmm', 'vae.gmm_components': 3}, needs_data=False)
  mixture_images = restored_run.generate_images(run, z)
  assert mixture_images.shape == prior_images.shape and np.abs(mixture_images.astype(int) - prior_images).max() > 8
  np.testing.assert_array_equal(restored_run.generate_images(run, z), mixture_images)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(run.state), jax.device_get(straight))
  # Fitted to fewer images than twice its components, it is refused in one line.
  run = restored_run.restore(straight_dir, {'vae.sampler': 'gmm', 'vae.gmm_components': 10,
                                            'vae.gmm_fit_examples': 15})
  with pytest.raises(ConfigError, match=r'^config.vae.gmm_components=10 is not allowed for 15 training images'):
    restored_run.sampler(run)
