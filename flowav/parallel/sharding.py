"""Sharding helpers: activation constraints and shardings of parameter pytrees from logical names."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flowav.parallel.rules import Rules

_CONTEXT = threading.local()


@contextlib.contextmanager
def use_mesh(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Makes `mesh` and `rules` current for `constrain` and for jit tracing inside the block."""
  prev = getattr(_CONTEXT, "value", None)
  _CONTEXT.value = (mesh, rules)
  try:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      yield
  finally:
    _CONTEXT.value = prev


def current() -> tuple[Mesh, Rules] | None:
  return getattr(_CONTEXT, "value", None)


def logical_to_spec(axes: tuple[str | None, ...], rules: Rules) -> PartitionSpec:
  return nn.logical_to_mesh_axes(axes, rules)


def constrain(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
  """Constrains an activation's sharding by logical names; a no-op when no mesh is in use."""
  ctx = current()
  if ctx is None:
    return x
  mesh, rules = ctx
  if len(axes) != x.ndim:
    raise ValueError(f"constrain: {len(axes)} axis names {axes} for an array of shape {x.shape}")
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(axes, rules)))


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for an nnx.State (or pytree of them) whose Variables carry logical names."""
  # Outside any rules context, so get_partition_spec returns the logical names themselves (inside
  # `use_mesh` it would already have mapped them to mesh axes).
  with nn.logical_axis_rules(()):
    specs = nnx.get_partition_spec(abstract_state)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
  """Sharding of a batch array: leading axis by `act_batch`, the rest replicated."""
  return NamedSharding(mesh, logical_to_spec(("act_batch",) + (None,) * (ndim - 1), rules))
