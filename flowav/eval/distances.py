"""Distances between two sets of clip embeddings `[N, D]`: Fréchet distance and kernel distance.

Fréchet distance (FD; FID of Heusel et al. 2017, FAD of Kilgour et al. 2019): fit a Gaussian to
each set and take the 2-Wasserstein distance between the two,
  FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2}).
Reference implementations (pytorch-fid, the FAD toolkit) take `scipy.linalg.sqrtm(S_a @ S_b)`,
which is a general (non-symmetric) matrix square root that can return complex values or fail on
near-singular products. Here the trace term is computed as sum(sqrt(eig(A S_b A))) with
A = S_a^{1/2}: A S_b A is symmetric positive semi-definite and similar to S_a S_b, so it has the
same eigenvalues, and `eigh` on a symmetric matrix is stable (tiny negative round-off eigenvalues
are clipped to 0).

With N <= D samples a covariance is singular (rank <= N - 1) and the FD is dominated by the
missing directions, so `frechet_distance` refuses it unless `shrinkage` is given: a float alpha in
[0, 1] or "ledoit_wolf" (Ledoit & Wolf 2004, "A well-conditioned estimator for large-dimensional
covariance matrices", the alpha that minimises the expected Frobenius error), giving
  S' = (1 - alpha) S + alpha * (tr(S) / D) I.
FDs computed with different shrinkage (or different N) are not comparable with each other.

Kernel distance (KD; KID of Bińkowski et al. 2018, "Demystifying MMD GANs", §4): the unbiased
estimate of the squared maximum mean discrepancy with the cubic polynomial kernel
k(x, y) = (x . y / D + 1)^3, averaged over random subsets of m rows of each set (their reference
code: 100 subsets of m = 1000). Unlike FD it is unbiased in N, so small evaluation sets of
different sizes can be compared; it can be slightly negative when the sets are alike.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def _as_embeddings(x: Any, name: str) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"{name}: embeddings must be [N, D], got shape {x.shape}")
  if x.shape[0] < 2:
    raise ValueError(f"{name}: need at least 2 embeddings, got {x.shape[0]}")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"{name}: embeddings contain NaN or inf")
  return x


def _check_pair(a: np.ndarray, b: np.ndarray, fn: str) -> None:
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"{fn}: the two sets have different widths: {a.shape[1]} vs {b.shape[1]}")


def ledoit_wolf_alpha(x: np.ndarray) -> float:
  """Ledoit-Wolf shrinkage intensity in [0, 1] towards `(tr(S) / D) I` for rows `x` `[N, D]`.

  Lemma 3.2-3.4 of Ledoit & Wolf (2004) with the population covariance S = X^T X / N of the
  centred rows: alpha = min(b2, d2) / d2, d2 = |S - mu I|_F^2, b2 = sum_k |x_k x_k^T - S|_F^2 / N^2.
  """
  x = _as_embeddings(x, "ledoit_wolf_alpha")
  n, d = x.shape
  xc = x - x.mean(axis=0)
  s = xc.T @ xc / n
  mu = np.trace(s) / d
  d2 = np.sum(np.square(s - mu * np.eye(d)))
  if d2 <= 0:
    return 0.0  # S is already a multiple of the identity
  # sum_k |x_k x_k^T - S|_F^2 = sum_k |x_k|^4 - N |S|_F^2 (the cross term sums to N |S|_F^2).
  b2 = (np.sum(np.sum(np.square(xc), axis=1) ** 2) - n * np.sum(np.square(s))) / n**2
  return float(min(max(b2, 0.0), d2) / d2)


def embedding_stats(x: Any, *, shrinkage: float | str | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Mean `[D]` and (N - 1)-normalised covariance `[D, D]` of embeddings `[N, D]` (float64).

  `shrinkage`: None (refuses N <= D, where the covariance is singular), a float alpha in [0, 1],
  or "ledoit_wolf"; see the module docstring.
  """
  x = _as_embeddings(x, "embedding_stats")
  n, d = x.shape
  mu = x.mean(axis=0)
  cov = np.cov(x, rowvar=False).reshape(d, d)
  if shrinkage is None:
    if n <= d:
      raise ValueError(f"embedding_stats: {n} embeddings of width {d}: the covariance is singular "
                       "(need N > D); pass shrinkage='ledoit_wolf' (or a float in [0, 1]), use more "
                       "clips, or a narrower embedder")
    return mu, cov
  if isinstance(shrinkage, str):
    if shrinkage != "ledoit_wolf":
      raise ValueError(f"embedding_stats: unknown shrinkage {shrinkage!r} (None, a float in "
                       "[0, 1] or 'ledoit_wolf')")
    alpha = ledoit_wolf_alpha(x)
  else:
    alpha = float(shrinkage)
    if not 0.0 <= alpha <= 1.0:
      raise ValueError(f"embedding_stats: shrinkage={shrinkage} must be in [0, 1]")
  target = np.trace(cov) / d
  return mu, (1.0 - alpha) * cov + alpha * target * np.eye(d)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric PSD matrix by eigendecomposition."""
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(mu_a: Any, cov_a: Any, mu_b: Any, cov_b: Any) -> float:
  """FD between N(mu_a, cov_a) and N(mu_b, cov_b): means `[D]`, covariances `[D, D]` (PSD)."""
  mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
  cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
  d = mu_a.shape[0] if mu_a.ndim == 1 else -1
  for name, arr, shape in (("mu_b", mu_b, (d,)), ("cov_a", cov_a, (d, d)), ("cov_b", cov_b, (d, d))):
    if d < 0 or arr.shape != shape:
      raise ValueError(f"frechet_distance_from_stats: {name} has shape {arr.shape}, expected {shape} "
                       f"(mu_a {mu_a.shape})")
  for name, arr in (("mu_a", mu_a), ("mu_b", mu_b), ("cov_a", cov_a), ("cov_b", cov_b)):
    if not np.all(np.isfinite(arr)):
      raise ValueError(f"frechet_distance_from_stats: {name} contains NaN or inf")
  root_a = _psd_sqrt(cov_a)
  middle = root_a @ cov_b @ root_a
  eig = np.linalg.eigvalsh((middle + middle.T) / 2)
  trace_sqrt = float(np.sum(np.sqrt(np.clip(eig, 0.0, None))))
  fd = float(np.sum(np.square(mu_a - mu_b)) + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)
  return max(fd, 0.0)  # round-off can make identical sets a hair negative


def frechet_distance(a: Any, b: Any, *, shrinkage: float | str | None = None) -> float:
  """FD between embedding sets `a` `[N_a, D]` and `b` `[N_b, D]` (see `embedding_stats`)."""
  a, b = _as_embeddings(a, "frechet_distance a"), _as_embeddings(b, "frechet_distance b")
  _check_pair(a, b, "frechet_distance")
  return frechet_distance_from_stats(*embedding_stats(a, shrinkage=shrinkage),
                                     *embedding_stats(b, shrinkage=shrinkage))


@dataclasses.dataclass(frozen=True)
class KernelDistance:
  """Unbiased MMD^2 over `num_subsets` subsets of `subset_size` rows: mean and std across them."""
  mean: float
  std: float
  num_subsets: int
  subset_size: int

  def to_dict(self) -> dict[str, float | int]:
    return dataclasses.asdict(self)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, *, degree: int = 3, coef0: float = 1.0
                      ) -> np.ndarray:
  """KID's kernel `(x . y / D + coef0) ** degree`: `[N, D]`, `[M, D]` -> `[N, M]`."""
  return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, *, degree: int = 3, coef0: float = 1.0) -> float:
  """Unbiased MMD^2 of two equal-size samples `[m, D]` (Gretton et al. 2012, eq. 3 with the
  diagonal of k(x, x) and k(y, y) left out)."""
  m = x.shape[0]
  if y.shape[0] != m or m < 2:
    raise ValueError(f"mmd2_unbiased: needs two samples of the same size >= 2, got {x.shape[0]} "
                     f"and {y.shape[0]}")
  k_xx = polynomial_kernel(x, x, degree=degree, coef0=coef0)
  k_yy = polynomial_kernel(y, y, degree=degree, coef0=coef0)
  k_xy = polynomial_kernel(x, y, degree=degree, coef0=coef0)
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(within - 2.0 * k_xy.mean())


def _canonical_order(x: np.ndarray) -> np.ndarray:
  """Rows sorted lexicographically, so subsets drawn by index depend on the set, not its order."""
  return x[np.lexsort(x.T[::-1])]


def kernel_distance(a: Any, b: Any, *, num_subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0, degree: int = 3, coef0: float = 1.0) -> KernelDistance:
  """KD between embedding sets `a` `[N_a, D]` and `b` `[N_b, D]`.

  Each of `num_subsets` draws takes m = min(subset_size, N_a, N_b) rows of each set without
  replacement and computes `mmd2_unbiased`. When m covers both sets entirely there is only one
  possible subset, so a single one is computed (std 0). Rows are put in a canonical order first,
  so the result does not depend on the order of the embeddings (only on `seed`).
  """
  a, b = _as_embeddings(a, "kernel_distance a"), _as_embeddings(b, "kernel_distance b")
  _check_pair(a, b, "kernel_distance")
  if num_subsets < 1 or subset_size < 2:
    raise ValueError(f"kernel_distance: num_subsets={num_subsets} must be >= 1 and "
                     f"subset_size={subset_size} >= 2")
  a, b = _canonical_order(a), _canonical_order(b)
  m = min(subset_size, a.shape[0], b.shape[0])
  if m == a.shape[0] == b.shape[0]:
    value = mmd2_unbiased(a, b, degree=degree, coef0=coef0)
    return KernelDistance(mean=value, std=0.0, num_subsets=1, subset_size=m)
  rng = np.random.default_rng(seed)
  values = np.asarray([
    mmd2_unbiased(a[rng.choice(a.shape[0], m, replace=False)],
                  b[rng.choice(b.shape[0], m, replace=False)], degree=degree, coef0=coef0)
    for _ in range(num_subsets)])
  return KernelDistance(mean=float(values.mean()), std=float(values.std()),
                        num_subsets=num_subsets, subset_size=m)
