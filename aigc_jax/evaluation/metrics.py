"""Sample-quality metrics as pure numpy functions of feature arrays `[N, D]` (or class probabilities).

- FID (Heusel et al., 2017): the Fréchet distance between Gaussians fitted to real and generated features.
- KID (Bińkowski et al., 2018): the unbiased MMD² with the cubic polynomial kernel, averaged over random
  subsets, with its standard error over those subsets.
- Inception Score (Salimans et al., 2016): exp E_x KL(p(y|x) || p(y)), mean and std over splits.
- Precision/recall (Kynkäänniemi et al., 2019): the fraction of one set inside the other's k-NN manifold.
- Class coverage of a classifier's decisions: the rarest class's share of samples, and for a
  class-conditional generator how often its samples are classified as the class they were drawn for.
- Nearest-training ratio: how close samples sit to their nearest training image, relative to how close
  held-out real images sit to theirs (a data-copying check in the spirit of Meehan et al., 2020).
All sums run in float64: covariances of thousands of features lose digits in float32.
"""
from typing import NamedTuple

import numpy as np


class GaussianStats(NamedTuple):
  mean: np.ndarray  # [D]
  cov: np.ndarray   # [D, D]


def gaussian_stats(features: np.ndarray) -> GaussianStats:
  """Mean and (unbiased) covariance of `[N, D]` features."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f'need features [N >= 2, D], got shape {features.shape}')
  return GaussianStats(features.mean(axis=0), np.cov(features, rowvar=False))


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  eigenvalues, eigenvectors = np.linalg.eigh(matrix)
  return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_distance(a: GaussianStats, b: GaussianStats) -> float:
  """‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^½).

  tr((Σa Σb)^½) is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
  Σa^½ Σb Σa^½ (same spectrum as Σa Σb): no complex parts to discard and no failure on singular Σ, which
  `scipy.linalg.sqrtm` of the non-symmetric product can hit with fewer samples than dimensions.
  """
  sqrt_a = _psd_sqrt(a.cov)
  middle = sqrt_a @ b.cov @ sqrt_a
  trace_sqrt = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)))
  distance = np.sum((a.mean - b.mean) ** 2) + np.trace(a.cov) + np.trace(b.cov) - 2 * trace_sqrt
  return float(max(distance, 0.0))  # rounding can leave -1e-12 for identical sets


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
  return frechet_distance(gaussian_stats(features_a), gaussian_stats(features_b))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, *, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
  """KID's kernel k(x, y) = (x·y / D + coef0)^degree."""
  return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, **kernel_kwargs) -> float:
  """The unbiased estimator of MMD² between the distributions of samples `x` [m, D] and `y` [n, D]."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  m, n = len(x), len(y)
  k_xx, k_yy = polynomial_kernel(x, x, **kernel_kwargs), polynomial_kernel(y, y, **kernel_kwargs)
  k_xy = polynomial_kernel(x, y, **kernel_kwargs)
  # Diagonals dropped: E k(x, x') needs independent pairs.
  return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
               - 2 * k_xy.mean())


def kid(features_a: np.ndarray, features_b: np.ndarray, *, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0, **kernel_kwargs) -> tuple[float, float]:
  """(mean, standard error) of the unbiased MMD² over `num_subsets` random subsets of both sets."""
  size = min(subset_size, len(features_a), len(features_b))
  if size < 2:
    raise ValueError(f'KID needs at least 2 samples per set, got {len(features_a)} and {len(features_b)}')
  rng = np.random.default_rng(seed)
  values = np.array([mmd2_unbiased(features_a[rng.choice(len(features_a), size, replace=False)],
                                   features_b[rng.choice(len(features_b), size, replace=False)], **kernel_kwargs)
                     for _ in range(num_subsets)])
  stderr = values.std(ddof=1) / np.sqrt(num_subsets) if num_subsets > 1 else float('nan')
  return float(values.mean()), float(stderr)


def inception_score(probs: np.ndarray, *, num_splits: int = 10) -> tuple[float, float]:
  """(mean, std) over `num_splits` splits of exp(E_x KL(p(y|x) || p(y))) from class probabilities [N, K]."""
  probs = np.asarray(probs, np.float64)
  scores = []
  for part in np.array_split(probs, num_splits):
    marginal = part.mean(axis=0, keepdims=True)
    # 0·log 0 = 0: confident predictions have exact zeros, which the floor keeps out of the log.
    kl = _kl_rows(part, marginal)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def _kl_rows(probs: np.ndarray, marginal: np.ndarray) -> np.ndarray:
  """KL(p(y|x) || p(y)) per row, each term p·(log p − log m)."""
  tiny = np.finfo(np.float64).tiny
  return np.sum(probs * (np.log(np.maximum(probs, tiny)) - np.log(np.maximum(marginal, tiny))), axis=1)


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  return np.maximum((x * x).sum(1)[:, None] - 2 * x @ y.T + (y * y).sum(1)[None, :], 0)


def _knn_radii(features: np.ndarray, k: int, block: int) -> np.ndarray:
  """Squared distance from each point to its k-th nearest other point."""
  radii = np.empty(len(features))
  for start in range(0, len(features), block):
    d = _squared_distances(features[start:start + block], features)
    radii[start:start + block] = np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself
  return radii


def _inside_manifold(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray, block: int) -> np.ndarray:
  inside = np.empty(len(queries), bool)
  for start in range(0, len(queries), block):
    inside[start:start + block] = (_squared_distances(queries[start:start + block], manifold)
                                   <= radii[None, :]).any(axis=1)
  return inside


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3, block: int = 1024) -> tuple[float, float]:
  """(precision, recall): the fraction of `fake` inside the real k-NN manifold, and of `real` inside the fake one."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if min(len(real), len(fake)) <= k:
    raise ValueError(f'precision/recall with k={k} needs more than {k} samples per set, '
                     f'got {len(real)} real and {len(fake)} fake')
  precision = _inside_manifold(real, _knn_radii(real, k, block), fake, block).mean()
  recall = _inside_manifold(fake, _knn_radii(fake, k, block), real, block).mean()
  return float(precision), float(recall)


def nearest_distances(queries: np.ndarray, points: np.ndarray, *, block: int = 1024) -> np.ndarray:
  """Euclidean distance from each of `queries` [N, D] to its nearest row of `points` [M, D]."""
  queries, points = np.asarray(queries, np.float64), np.asarray(points, np.float64)
  nearest = np.empty(len(queries))
  for start in range(0, len(queries), block):
    nearest[start:start + block] = _squared_distances(queries[start:start + block], points).min(axis=1)
  return np.sqrt(nearest)


def nearest_train_ratio(train: np.ndarray, heldout: np.ndarray, fake: np.ndarray) -> float:
  """mean distance(fake, nearest train) / mean distance(held-out real, nearest train).

  About 1 when samples are as far from the training set as fresh real data is; well below 1 when samples
  sit on top of training images (copies); above 1 when they are off the data altogether. Means, not
  medians: features with many exact ties (e.g. blank pixels) can give a median distance of 0.
  """
  return float(np.mean(nearest_distances(fake, train)) / np.mean(nearest_distances(heldout, train)))


def class_shares(probs: np.ndarray) -> np.ndarray:
  """The share of samples the classifier assigns to each class (its argmax), from probabilities [N, K]."""
  decisions = np.asarray(probs).argmax(axis=1)
  return np.bincount(decisions, minlength=probs.shape[1]) / len(decisions)


def label_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
  """The fraction of samples the classifier assigns to the class they were generated for."""
  return float(np.mean(np.asarray(probs).argmax(axis=1) == np.asarray(labels)))
