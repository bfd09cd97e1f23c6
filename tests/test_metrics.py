"""FID, KID, Inception Score, precision/recall, class coverage and the nearest-training ratio against direct
computations and known answers."""
import numpy as np
import pytest
import scipy.linalg

from aigc_jax.evaluation import metrics


def _random_stats(rng, dim):
  a = rng.normal(size=(dim, 3 * dim))
  return metrics.GaussianStats(rng.normal(size=dim), a @ a.T / (3 * dim))


def test_frechet_distance_matches_scipy_sqrtm():
  rng = np.random.default_rng(0)
  a, b = _random_stats(rng, 16), _random_stats(rng, 16)
  covmean = scipy.linalg.sqrtm(a.cov @ b.cov).real
  direct = np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov + b.cov - 2 * covmean)
  assert metrics.frechet_distance(a, b) == pytest.approx(direct, rel=1e-8)
  assert metrics.frechet_distance(a, b) == pytest.approx(metrics.frechet_distance(b, a), rel=1e-8)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
  features = np.random.default_rng(1).normal(size=(500, 32))
  assert metrics.fid(features, features) == pytest.approx(0.0, abs=1e-6)
  # Shifting every feature by 0.5 adds exactly ||shift||^2 = 32 * 0.25.
  assert metrics.fid(features, features + 0.5) == pytest.approx(8.0, rel=1e-6)


def _cubic_kernel_mean(a, b, coef0=1.0):
  """E (x·y/D + coef0)^3 for independent x ~ N(a, I), y ~ N(b, I), from the cumulants of x·y."""
  dim = len(a)
  mean_w = a * b
  second = (a ** 2 + 1) * (b ** 2 + 1)
  third = (a ** 3 + 3 * a) * (b ** 3 + 3 * b)
  k1, k2 = mean_w.sum(), (second - mean_w ** 2).sum()
  k3 = (third - 3 * second * mean_w + 2 * mean_w ** 3).sum()
  mu, var = k1 / dim + coef0, k2 / dim ** 2
  return mu ** 3 + 3 * mu * var + k3 / dim ** 3


@pytest.mark.parametrize('shift', [0.0, 0.7])
def test_kid_estimates_the_known_mmd_of_gaussians(shift):
  dim = 8
  a, b = np.zeros(dim), np.full(dim, shift)
  expected = _cubic_kernel_mean(a, a) + _cubic_kernel_mean(b, b) - 2 * _cubic_kernel_mean(a, b)
  rng = np.random.default_rng(2)
  # Pools much larger than the subsets keep the subsets nearly independent, so the standard error holds.
  x, y = rng.normal(a, 1, (40_000, dim)), rng.normal(b, 1, (40_000, dim))
  mean, stderr = metrics.kid(x, y, num_subsets=40, subset_size=1000, seed=3)
  assert stderr > 0
  assert abs(mean - expected) < 4 * stderr + 1e-3, (mean, stderr, expected)
  if shift:
    assert mean > 10 * stderr  # and it tells the two apart


def test_inception_score_is_one_for_uniform_and_k_for_k_confident_classes():
  uniform = np.full((100, 10), 0.1)
  assert metrics.inception_score(uniform, num_splits=5)[0] == pytest.approx(1.0)
  for k in (1, 4, 10):
    confident = np.eye(10)[np.arange(200) % k]
    mean, std = metrics.inception_score(confident, num_splits=5)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-9)


def test_precision_recall_one_for_identical_sets_and_dropping_for_disjoint_ones():
  rng = np.random.default_rng(4)
  real = rng.normal(size=(400, 8))
  assert metrics.precision_recall(real, real.copy(), k=3) == (1.0, 1.0)
  assert metrics.precision_recall(real, real + 100.0, k=3) == (0.0, 0.0)
  # Fakes that cover only half of the real data (x0 > 0): all precise, about half the recall.
  half = real[real[:, 0] > 0]
  precision, recall = metrics.precision_recall(real, half + rng.normal(scale=0.01, size=half.shape), k=3)
  assert precision > 0.95 and 0.4 < recall < 0.75


def test_nearest_distances_match_a_direct_search():
  rng = np.random.default_rng(5)
  queries, points = rng.normal(size=(50, 8)), rng.normal(size=(70, 8))
  direct = np.sqrt(((queries[:, None] - points[None]) ** 2).sum(-1)).min(1)
  np.testing.assert_allclose(metrics.nearest_distances(queries, points, block=16), direct, rtol=1e-6)


def test_nearest_train_ratio_is_near_one_for_fresh_data_and_near_zero_for_copies():
  rng = np.random.default_rng(6)
  train, heldout, fresh = (rng.normal(size=(n, 16)) for n in (2000, 300, 300))
  assert metrics.nearest_train_ratio(train, heldout, fresh) == pytest.approx(1.0, abs=0.1)
  copies = train[:300] + rng.normal(scale=1e-3, size=(300, 16))  # a generator that memorised its data
  assert metrics.nearest_train_ratio(train, heldout, copies) < 0.01
  far = fresh + 10.0  # off the data altogether
  assert metrics.nearest_train_ratio(train, heldout, far) > 2


def test_class_shares_and_label_accuracy_from_classifier_decisions():
  probs = np.eye(4)[[0, 0, 1, 1, 1, 2, 2, 2]] * 0.7 + 0.075  # 8 samples; class 3 never chosen
  np.testing.assert_allclose(metrics.class_shares(probs), [0.25, 0.375, 0.375, 0.0])
  assert metrics.label_accuracy(probs, np.array([0, 1, 1, 1, 1, 2, 2, 3])) == pytest.approx(6 / 8)
