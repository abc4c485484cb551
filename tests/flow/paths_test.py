"""RectifiedFlow: endpoints, the constant target velocity, and inversions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.flow import paths

FLOW = paths.RectifiedFlow()


def _pair(b=3, t=5, c=4):
  k0, k1 = jax.random.split(jax.random.key(0))
  return jax.random.normal(k0, (b, t, c)), 2.0 + jax.random.normal(k1, (b, t, c))


def test_interpolate_endpoints_are_exact():
  x0, x1 = _pair()
  np.testing.assert_array_equal(FLOW.interpolate(x0, x1, jnp.zeros(3)), x0)
  np.testing.assert_array_equal(FLOW.interpolate(x0, x1, jnp.ones(3)), x1)


def test_interpolate_uses_one_time_per_example():
  x0, x1 = _pair()
  t = jnp.array([0.0, 0.25, 1.0])
  xt = FLOW.interpolate(x0, x1, t)
  np.testing.assert_allclose(xt[1], 0.25 * x1[1] + 0.75 * x0[1], rtol=1e-6)
  np.testing.assert_array_equal(xt[0], x0[0])
  np.testing.assert_array_equal(xt[2], x1[2])


def test_time_derivative_of_path_equals_target_velocity_everywhere():
  x0, x1 = _pair()
  u = FLOW.velocity_target(x0, x1)
  for t in (0.0, 0.3, 0.9):
    tv = jnp.full((3,), t)
    _, dxdt = jax.jvp(lambda s: FLOW.interpolate(x0, x1, s), (tv,), (jnp.ones(3),))
    np.testing.assert_allclose(dxdt, u, rtol=1e-6, atol=1e-6)


def test_velocity_conversions_invert_the_path():
  x0, x1 = _pair()
  t = jnp.array([0.1, 0.5, 0.8])
  xt = FLOW.interpolate(x0, x1, t)
  u = FLOW.velocity_target(x0, x1)
  np.testing.assert_allclose(FLOW.data_from_velocity(xt, u, t), x1, atol=1e-5)
  np.testing.assert_allclose(FLOW.noise_from_velocity(xt, u, t), x0, atol=1e-5)


def test_sample_training_pair_is_consistent_and_keyed():
  _, x1 = _pair()
  t = jnp.array([0.2, 0.6, 0.7])
  xt, u, x0 = FLOW.sample_training_pair(jax.random.key(1), x1, t)
  np.testing.assert_allclose(xt, FLOW.interpolate(x0, x1, t), atol=1e-6)
  np.testing.assert_allclose(u, x1 - x0, atol=1e-6)
  again = FLOW.sample_training_pair(jax.random.key(1), x1, t)[2]
  other = FLOW.sample_training_pair(jax.random.key(2), x1, t)[2]
  np.testing.assert_array_equal(x0, again)
  assert not np.allclose(x0, other)
  assert abs(float(jnp.std(x0)) - 1.0) < 0.3


def test_bad_time_shape_is_rejected():
  x0, x1 = _pair()
  with pytest.raises(ValueError, match="t must be"):
    FLOW.interpolate(x0, x1, jnp.zeros(4))
  with pytest.raises(ValueError, match="t must be"):
    FLOW.interpolate(x0, x1, jnp.zeros((3, 5)))
