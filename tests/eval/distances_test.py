"""Known-answer tests of flowav.eval.distances: Fréchet distance and kernel distance (KID)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from flowav.eval import distances


def _random_cov(rng: np.random.Generator, d: int, scale: float = 1.0) -> np.ndarray:
  m = rng.normal(size=(d, d))
  return scale * (m @ m.T / d + 0.1 * np.eye(d))


def _scipy_fd(mu_a, cov_a, mu_b, cov_b) -> float:
  """The pytorch-fid formula, with the general matrix square root (the reference behaviour)."""
  root = scipy.linalg.sqrtm(cov_a @ cov_b)
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
               - 2 * np.trace(np.real(root)))


# --- Fréchet distance ---------------------------------------------------------------------------

def test_fd_closed_form_of_diagonal_gaussians():
  # Commuting covariances: FD = |mu_a - mu_b|^2 + sum (sqrt(s_a) - sqrt(s_b))^2.
  mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([3.0, 1.0, 2.0])
  s_a, s_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
  want = 9 + 16 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
  got = distances.frechet_distance_from_stats(mu_a, np.diag(s_a), mu_b, np.diag(s_b))
  assert got == pytest.approx(want, rel=1e-12)
  # The same pair in a rotated basis (non-diagonal, still commuting) gives the same distance.
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
  got = distances.frechet_distance_from_stats(q @ mu_a, q @ np.diag(s_a) @ q.T, q @ mu_b,
                                              q @ np.diag(s_b) @ q.T)
  assert got == pytest.approx(want, rel=1e-9)


def test_fd_matches_scipy_sqrtm_on_non_commuting_covariances():
  rng = np.random.default_rng(1)
  for d in (2, 8, 32):
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    cov_a, cov_b = _random_cov(rng, d), _random_cov(rng, d, 3.0)
    got = distances.frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b)
    assert got == pytest.approx(_scipy_fd(mu_a, cov_a, mu_b, cov_b), rel=1e-8)
    # FD is symmetric although the product cov_a @ cov_b is not.
    assert got == pytest.approx(distances.frechet_distance_from_stats(mu_b, cov_b, mu_a, cov_a),
                                rel=1e-9)


def test_fd_of_samples_approaches_the_gaussians_closed_form():
  rng = np.random.default_rng(2)
  d, n = 4, 40_000
  mu_a, mu_b = np.zeros(d), np.array([1.0, -1.0, 0.5, 0.0])
  s_a, s_b = np.array([1.0, 2.0, 0.5, 1.0]), np.array([2.0, 2.0, 1.0, 0.25])
  a = mu_a + rng.normal(size=(n, d)) * np.sqrt(s_a)
  b = mu_b + rng.normal(size=(n, d)) * np.sqrt(s_b)
  want = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(s_a) - np.sqrt(s_b)) ** 2)  # 2.25 + 0.434
  assert distances.frechet_distance(a, b) == pytest.approx(want, abs=0.05)


def test_fd_of_identical_sets_is_zero_and_order_does_not_matter():
  rng = np.random.default_rng(3)
  a = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
  assert distances.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
  b = rng.normal(size=(200, 16)) + 0.3
  fd = distances.frechet_distance(a, b)
  assert fd > 1.0
  assert distances.frechet_distance(a[::-1], rng.permutation(b)) == pytest.approx(fd, rel=1e-10)


def test_fd_refuses_singular_covariances_unless_shrunk():
  rng = np.random.default_rng(4)
  a, b = rng.normal(size=(20, 64)), rng.normal(size=(20, 64)) + 1.0
  with pytest.raises(ValueError, match="singular.*shrinkage"):
    distances.frechet_distance(a, b)
  shrunk = distances.frechet_distance(a, b, shrinkage="ledoit_wolf")
  # The mean term alone is |1|^2 * 64; shrinkage keeps the distance finite and near it.
  assert np.isfinite(shrunk) and 50 < shrunk < 120
  assert distances.frechet_distance(a, a, shrinkage=0.5) == pytest.approx(0.0, abs=1e-8)
  with pytest.raises(ValueError, match="shrinkage"):
    distances.frechet_distance(a, b, shrinkage=1.5)
  with pytest.raises(ValueError, match="unknown shrinkage"):
    distances.frechet_distance(a, b, shrinkage="oas")


def test_shrinkage_pulls_towards_the_scaled_identity():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(10, 6)) * np.arange(1, 7)
  mu, cov = distances.embedding_stats(x, shrinkage=1.0)
  assert np.allclose(cov, np.trace(np.cov(x, rowvar=False)) / 6 * np.eye(6))
  assert np.allclose(mu, x.mean(0))


def test_ledoit_wolf_alpha_matches_sklearn():
  covariance = pytest.importorskip("sklearn.covariance")
  rng = np.random.default_rng(6)
  for n, d in ((10, 30), (50, 20), (500, 8)):
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d)
    want = covariance.ledoit_wolf_shrinkage(x)
    assert distances.ledoit_wolf_alpha(x) == pytest.approx(want, rel=1e-8)


def test_fd_rejects_bad_input_by_name():
  with pytest.raises(ValueError, match=r"\[N, D\]"):
    distances.frechet_distance(np.zeros(5), np.zeros((5, 1)))
  with pytest.raises(ValueError, match="different widths"):
    distances.frechet_distance(np.zeros((5, 2)), np.zeros((5, 3)))
  with pytest.raises(ValueError, match="NaN"):
    distances.frechet_distance(np.full((5, 2), np.nan), np.zeros((5, 2)))


# --- kernel distance -----------------------------------------------------------------------------

def test_mmd2_unbiased_matches_a_brute_force_sum():
  rng = np.random.default_rng(7)
  x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.5
  k = lambda u, v: (u @ v / 3 + 1) ** 3
  m = 6
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
  assert distances.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_kd_is_near_zero_for_one_distribution_and_positive_when_shifted():
  rng = np.random.default_rng(8)
  d = 16
  same = [distances.kernel_distance(rng.normal(size=(400, d)), rng.normal(size=(400, d)),
                                    num_subsets=20, subset_size=200, seed=s).mean for s in range(5)]
  # Unbiased: values scatter around 0 (either sign), far below the shifted distance.
  shifted = distances.kernel_distance(rng.normal(size=(400, d)), rng.normal(size=(400, d)) + 0.5,
                                      num_subsets=20, subset_size=200)
  assert abs(np.mean(same)) < 0.01
  assert shifted.mean > 0.1 and shifted.mean > 20 * max(abs(v) for v in same)
  assert shifted.std > 0 and shifted.num_subsets == 20 and shifted.subset_size == 200
  # A larger shift is a larger distance.
  far = distances.kernel_distance(rng.normal(size=(400, d)), rng.normal(size=(400, d)) + 1.0,
                                  num_subsets=20, subset_size=200)
  assert far.mean > 2 * shifted.mean


def test_kd_does_not_depend_on_sample_order():
  rng = np.random.default_rng(9)
  a, b = rng.normal(size=(300, 8)), rng.normal(size=(250, 8)) + 0.2
  kd = distances.kernel_distance(a, b, num_subsets=10, subset_size=100, seed=3)
  again = distances.kernel_distance(rng.permutation(a), b[::-1], num_subsets=10, subset_size=100,
                                    seed=3)
  assert again == kd
  # Whole sets of equal size: one exact subset, std 0, and identical sets give exactly 0 + O(eps).
  full = distances.kernel_distance(a[:100], a[100:200], subset_size=1000)
  assert full.num_subsets == 1 and full.std == 0.0 and full.subset_size == 100
  assert distances.kernel_distance(a, a[::-1], subset_size=1000).mean == pytest.approx(
    distances.mmd2_unbiased(a, a), rel=1e-12)


def test_kd_rejects_bad_settings():
  a = np.zeros((10, 2))
  with pytest.raises(ValueError, match="num_subsets"):
    distances.kernel_distance(a, a, num_subsets=0)
  with pytest.raises(ValueError, match="different widths"):
    distances.kernel_distance(a, np.zeros((10, 3)))
