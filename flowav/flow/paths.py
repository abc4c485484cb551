"""Rectified-flow (straight-line) probability path between noise and data.

Convention for all of flowav (VSSFlow spec §3, `AffineProbPath(CondOTScheduler)`; Flowley §3,
SyncFlow §3 and AudioGen-Omni §3 use the same path): t = 0 is noise, t = 1 is data,

    x0 ~ N(0, I),    x1 ~ p_data,
    x_t = t x1 + (1 - t) x0,
    u   = d x_t / dt = x1 - x0          (constant along each straight path),

a model v(x_t, t) regresses u, and sampling integrates dx/dt = v(x, t) from t = 0 to t = 1.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


def broadcast_time(t: jax.Array | float, x: jax.Array) -> jax.Array:
  """Reshapes a time `t` (scalar or [B]) to [B, 1, ..., 1] so it broadcasts over `x` [B, ...]."""
  t = jnp.asarray(t, x.dtype)
  if t.ndim > 1 or (t.ndim == 1 and (x.ndim == 0 or t.shape[0] != x.shape[0])):
    raise ValueError(f"t must be a scalar or a [B] vector matching x's leading axis; got t.shape="
                     f"{t.shape} for x.shape={x.shape}")
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


@dataclasses.dataclass(frozen=True)
class RectifiedFlow:
  """The straight path x_t = t x1 + (1 - t) x0 and conversions of a velocity prediction.

  Stateless: every method is a pure function of its arguments. Arrays are [B, ...] and times
  are [B] (one time per example, broadcast over the trailing dims) or scalars.
  """

  def interpolate(self, x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = t x1 + (1 - t) x0.

    Written as a convex combination (not x0 + t (x1 - x0)) so both endpoints are exact in
    floating point: t = 0 gives x0 and t = 1 gives x1 bit for bit.

    Args:
      x0: [B, ...] noise.
      x1: [B, ...] data.
      t: [B] (or scalar) times in [0, 1].
    Returns:
      x_t: [B, ...].
    """
    tb = broadcast_time(t, x1)
    return tb * x1 + (1.0 - tb) * x0

  def velocity_target(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    """u = d x_t / dt = x1 - x0: [B, ...], independent of t (the path is a straight line)."""
    return x1 - x0

  def sample_training_pair(self, key: jax.Array, x1: jax.Array,
                           t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draws x0 ~ N(0, I) with x1's shape and dtype and builds one regression pair.

    Args:
      key: PRNG key for the noise.
      x1: [B, ...] data.
      t: [B] times.
    Returns:
      (x_t, u, x0), each [B, ...]: the model input, its regression target and the noise used.
    """
    x0 = jax.random.normal(key, x1.shape, x1.dtype)
    return self.interpolate(x0, x1, t), self.velocity_target(x0, x1), x0

  def data_from_velocity(self, x_t: jax.Array, v: jax.Array, t: jax.Array) -> jax.Array:
    """x1_hat = x_t + (1 - t) v.

    Follows the straight line from x_t with velocity v to t = 1; with v = u it returns x1
    exactly (up to rounding), since x_t + (1 - t)(x1 - x0) = x1. Shapes: x_t, v [B, ...], t [B].
    """
    return x_t + (1.0 - broadcast_time(t, x_t)) * v

  def noise_from_velocity(self, x_t: jax.Array, v: jax.Array, t: jax.Array) -> jax.Array:
    """x0_hat = x_t - t v: the straight line from x_t followed back to t = 0 (x0 when v = u)."""
    return x_t - broadcast_time(t, x_t) * v
