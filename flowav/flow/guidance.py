"""Classifier-free guidance (Ho & Salimans 2022) on velocities.

    v_w = v_u + w (v_c - v_u)

VSSFlow §4 (w = 3 sound, 1.5 speech), SyncFlow §3 Eq. 3 (w = 6), AudioGen-Omni §4 (w = 4.5) and
Flowley §4 (written s v_c + (1 - s) v_u, the same expression) all use this form. w = 1 is the
conditional model alone and w = 0 the unconditional one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# apply_fn(x [B, ...], t [B], cond pytree with leading axis B) -> v [B, ...]
ApplyFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]


def cfg_combine(v_cond: jax.Array, v_uncond: jax.Array, scale: float | jax.Array) -> jax.Array:
  """v_u + w (v_c - v_u) for v_cond, v_uncond [B, ...] and a scalar scale w."""
  return v_uncond + scale * (v_cond - v_uncond)


def static_scale(scale: Any, name: str = "scale") -> float:
  """Returns `scale` as a Python float, refusing traced values.

  The guidance scale decides the program's structure (w == 1 drops the unconditional half), so it
  must be known when tracing: close over it (or mark it static) instead of passing it through jit.
  """
  if isinstance(scale, jax.core.Tracer):
    raise ValueError(f"guidance {name} must be a static Python float, got a traced value "
                     f"{scale!r}; close over it or pass it as a static argument of jax.jit")
  try:
    value = float(scale)
  except (TypeError, ValueError) as e:
    raise ValueError(f"guidance {name} must be a float, got {scale!r}") from e
  if not math.isfinite(value):
    raise ValueError(f"guidance {name} must be finite, got {value}")
  return value


def _check_batch(tree: Any, b: int, what: str) -> None:
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != b:
      raise ValueError(f"{what}{jax.tree_util.keystr(path)} must have leading batch axis {b} "
                       f"(x's batch); got shape {jnp.shape(leaf)}")


def guided_velocity(apply_fn: ApplyFn, cond: Any, null_cond: Any, scale: float) -> VelocityFn:
  """A velocity function (x [B, ...], t [B]) -> v [B, ...] with guidance scale `scale`.

  Args:
    apply_fn: the model, apply_fn(x, t, cond) -> v.
    cond: conditions, any pytree whose leaves have leading axis B.
    null_cond: the unconditional ("null") conditions, same structure and shapes as `cond`.
    scale: static Python float w.
  Returns:
    velocity(x, t). At w == 1 it is apply_fn(x, t, cond): one forward pass of batch B and no
    unconditional half (VSSFlow §4). Otherwise it runs apply_fn ONCE on the 2B batch
    ([x, x], [t, t], [cond, null_cond] concatenated leaf-wise on axis 0: conditional rows first)
    and returns cfg_combine(v[:B], v[B:], w).
  Raises:
    ValueError: a traced or non-finite scale, or cond / null_cond trees that do not match.
  """
  scale = static_scale(scale)
  if scale == 1.0:
    return lambda x, t: apply_fn(x, t, cond)
  if jax.tree.structure(cond) != jax.tree.structure(null_cond):
    raise ValueError("cond and null_cond must have the same pytree structure; got "
                     f"{jax.tree.structure(cond)} vs {jax.tree.structure(null_cond)}")
  for (path, c), n in zip(jax.tree_util.tree_leaves_with_path(cond), jax.tree.leaves(null_cond)):
    if jnp.shape(c) != jnp.shape(n):
      raise ValueError(f"null_cond{jax.tree_util.keystr(path)} has shape {jnp.shape(n)}, "
                       f"cond has {jnp.shape(c)}")

  def velocity(x: jax.Array, t: jax.Array) -> jax.Array:
    b = x.shape[0]
    _check_batch(cond, b, "cond")
    both = jax.tree.map(lambda c, n: jnp.concatenate([c, n], axis=0), cond, null_cond)
    v = apply_fn(jnp.concatenate([x, x], axis=0), jnp.concatenate([t, t], axis=0), both)
    return cfg_combine(v[:b], v[b:], scale)

  return velocity
