"""Minibatch optimal-transport pairing of noise and data (Tong et al. 2024; Pooladian et al. 2023).

SyncFlow §3 (`flow.minibatch_ot`) and Flowley §3 ("immiscible" noise) permute the noise rows of a
batch so that sum_i |x1_i - x0_perm(i)|^2 is minimal, an exact assignment problem. The cost matrix
is built on device; the O(B^3) assignment runs on the host with scipy's Hungarian solver through
`jax.pure_callback`, so the pairing works inside a jitted training step (the callback moves a
[B, B] matrix to the host and a [B] permutation back).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import optimize


def pairwise_sq_dists(x1: jax.Array, x0: jax.Array) -> jax.Array:
  """cost[i, j] = |x1_i - x0_j|^2 over the flattened trailing dims: [B, ...] x [B, ...] -> [B, B].

  Uses |a|^2 + |b|^2 - 2 <a, b>, which never materialises the [B, B, D] differences.
  """
  a = x1.reshape(x1.shape[0], -1).astype(jnp.float32)
  b = x0.reshape(x0.shape[0], -1).astype(jnp.float32)
  cost = jnp.sum(a * a, 1)[:, None] + jnp.sum(b * b, 1)[None, :] - 2.0 * a @ b.T
  return jnp.maximum(cost, 0.0)


def _assign(cost: np.ndarray) -> np.ndarray:
  rows, cols = optimize.linear_sum_assignment(np.asarray(cost, np.float64))
  perm = np.empty(cost.shape[0], np.int32)
  perm[rows] = cols
  return perm


def ot_permutation(x0: jax.Array, x1: jax.Array) -> jax.Array:
  """perm [B] int32 minimising sum_i |x1_i - x0_{perm[i]}|^2 (pair data row i with noise perm[i]).

  Args:
    x0: [B, ...] noise.
    x1: [B, ...] data, same shape.
  """
  if x0.shape != x1.shape:
    raise ValueError(f"x0 and x1 must have the same shape; got {x0.shape} and {x1.shape}")
  cost = pairwise_sq_dists(x1, x0)
  out = jax.ShapeDtypeStruct((x0.shape[0],), jnp.int32)
  return jax.pure_callback(_assign, out, cost, vmap_method="sequential")


def pair_noise_with_data(x0: jax.Array, x1: jax.Array) -> jax.Array:
  """The noise rows reordered so that row i goes with x1[i] under the minibatch OT plan.

  The result is a permutation of x0's rows, so it is still a sample of N(0, I) per row; only the
  coupling with the data changes (straighter paths, lower-variance targets).
  """
  return jnp.take(x0, ot_permutation(x0, x1), axis=0)
