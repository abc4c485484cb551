"""Masked losses: padding has no effect on value or gradient; empty examples give 0, not NaN."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.flow import loss

B, T, C = 3, 6, 4


def _data():
  k0, k1 = jax.random.split(jax.random.key(0))
  pred = jax.random.normal(k0, (B, T, C))
  target = jax.random.normal(k1, (B, T, C))
  mask = jnp.arange(T)[None, :] < jnp.array([6, 3, 0])[:, None]  # full, half, empty
  return pred, target, mask


def test_equals_plain_mse_without_padding():
  pred, target, _ = _data()
  plain = jnp.mean((pred - target) ** 2)
  for mask in (None, jnp.ones((B, T), bool)):
    value, per_example = loss.masked_mse(pred, target, mask)
    np.testing.assert_allclose(value, plain, rtol=1e-6)
    np.testing.assert_allclose(per_example, jnp.mean((pred - target) ** 2, axis=(1, 2)),
                               rtol=1e-6)


def test_batch_loss_is_total_error_over_valid_count():
  pred, target, mask = _data()
  sq = np.asarray((pred - target) ** 2)
  m = np.asarray(mask)
  value, per_example = loss.masked_mse(pred, target, mask)
  np.testing.assert_allclose(value, sq[m].sum() / (m.sum() * C), rtol=1e-6)
  np.testing.assert_allclose(per_example[:2], [sq[0].mean(), sq[1, :3].mean()], rtol=1e-6)
  assert float(per_example[2]) == 0.0


def test_padded_frames_have_exactly_zero_gradient_even_with_nan_padding():
  pred, target, mask = _data()
  target = jnp.where(mask[..., None], target, jnp.nan)
  pred = jnp.where(mask[..., None], pred, jnp.inf)
  value, per_example = loss.masked_mse(pred, target, mask)
  assert np.isfinite(value) and np.all(np.isfinite(per_example))
  grad = jax.grad(lambda p: loss.masked_mse(p, target, mask)[0])(pred)
  g = np.asarray(grad)
  assert np.all(g[~np.asarray(mask)] == 0.0)
  assert np.all(g[np.asarray(mask)] != 0.0)


def test_all_masked_batch_gives_zero_and_finite_gradient():
  pred, target, _ = _data()
  mask = jnp.zeros((B, T), bool)
  value, per_example = loss.masked_mse(pred, target, mask)
  assert float(value) == 0.0 and np.all(np.asarray(per_example) == 0.0)
  grad = jax.grad(lambda p: loss.masked_mse(p, target, mask)[0])(pred)
  assert np.all(np.asarray(grad) == 0.0)


def test_weights_scale_examples_but_not_the_count():
  pred, target, mask = _data()
  w = jnp.array([2.0, 0.0, 5.0])
  value, per_example = loss.masked_mse(pred, target, mask, weights=w)
  sq = np.asarray((pred - target) ** 2)
  np.testing.assert_allclose(value, 2.0 * sq[0].sum() / (9 * C), rtol=1e-6)
  np.testing.assert_allclose(per_example, loss.masked_mse(pred, target, mask)[1])


def test_shape_errors_name_the_argument():
  pred, target, mask = _data()
  with pytest.raises(ValueError, match="mask"):
    loss.masked_mse(pred, target, mask[:, :2])
  with pytest.raises(ValueError, match="target"):
    loss.masked_mse(pred, target[:, :2], mask)
  with pytest.raises(ValueError, match="weights"):
    loss.masked_mse(pred, target, mask, weights=jnp.ones(2))


def test_direction_loss_known_values_and_masking():
  _, target, mask = _data()
  zero, _ = loss.masked_direction_loss(3.0 * target, target, mask)
  two, _ = loss.masked_direction_loss(-target, target, mask)
  assert abs(float(zero)) < 1e-6 and abs(float(two) - 2.0) < 1e-6
  pred = jnp.where(mask[..., None], target, jnp.nan)
  value, per_example = loss.masked_direction_loss(pred, target, mask)
  assert abs(float(value)) < 1e-6 and float(per_example[2]) == 0.0
  grad = jax.grad(lambda p: loss.masked_direction_loss(p, target, mask)[0])(-target)
  g = np.asarray(grad)
  assert np.all(np.isfinite(g)) and np.all(g[~np.asarray(mask)] == 0.0)
  # zero vectors: finite value and gradient thanks to the eps floor
  z = jnp.zeros((1, 2, C))
  assert float(loss.masked_direction_loss(z, z)[0]) == 1.0
  assert np.all(np.isfinite(jax.grad(lambda p: loss.masked_direction_loss(p, z)[0])(z)))
