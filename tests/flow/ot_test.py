"""Minibatch OT pairing: a permutation, optimal against brute force, usable under jit."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest

from flowav.flow import ot


def _batch(b=5, seed=0):
  k0, k1 = jax.random.split(jax.random.key(seed))
  return jax.random.normal(k0, (b, 3, 2)), 3.0 * jax.random.normal(k1, (b, 3, 2))


def _cost(x0, x1, perm):
  x0, x1 = np.asarray(x0).reshape(len(perm), -1), np.asarray(x1).reshape(len(perm), -1)
  return float(sum(np.sum((x1[i] - x0[p]) ** 2) for i, p in enumerate(perm)))


def test_pairwise_sq_dists_matches_direct():
  x0, x1 = _batch()
  a, b = np.asarray(x1).reshape(5, -1), np.asarray(x0).reshape(5, -1)
  direct = ((a[:, None] - b[None]) ** 2).sum(-1)
  np.testing.assert_allclose(ot.pairwise_sq_dists(x1, x0), direct, rtol=1e-4, atol=1e-4)


def test_permutation_is_optimal_against_brute_force():
  for seed in range(3):
    x0, x1 = _batch(seed=seed)
    perm = np.asarray(jax.jit(ot.ot_permutation)(x0, x1))
    assert sorted(perm.tolist()) == list(range(5))
    best = min(_cost(x0, x1, p) for p in itertools.permutations(range(5)))
    assert abs(_cost(x0, x1, perm) - best) < 1e-3
    assert _cost(x0, x1, perm) <= _cost(x0, x1, range(5)) + 1e-4


def test_pair_noise_with_data_reorders_rows_only():
  x0, x1 = _batch()
  paired = np.asarray(jax.jit(ot.pair_noise_with_data)(x0, x1))
  perm = np.asarray(ot.ot_permutation(x0, x1))
  np.testing.assert_array_equal(paired, np.asarray(x0)[perm])
  np.testing.assert_allclose(np.sort(paired.ravel()), np.sort(np.asarray(x0).ravel()))


def test_shape_mismatch_is_rejected():
  x0, x1 = _batch()
  with pytest.raises(ValueError, match="same shape"):
    ot.ot_permutation(x0, x1[:4])
