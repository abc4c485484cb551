"""Sharding helpers: activation constraints and shardings of parameter pytrees from logical names.

`spec_for` turns logical names plus a shape into a PartitionSpec. It follows flax's priority rules
(`nn.logical_to_mesh_axes`) and adds one thing: a rule whose mesh axes do not divide the dimension is
skipped (the next rule for that name is tried, else the dim is replicated). jit needs divisible
parameter shardings, and tiny variants or single-KV-head layers (kv_heads=1) would otherwise fail
to build on a larger mesh; an uneven activation constraint would only pad.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flowav.parallel.rules import Rules

_CONTEXT = threading.local()
MeshAxes = str | tuple[str, ...] | None


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
  """Shape-free mapping (flax's): use `spec_for` when the shape is known."""
  return nn.logical_to_mesh_axes(axes, rules)


def _as_tuple(mesh_axes: MeshAxes) -> tuple[str, ...]:
  if mesh_axes is None:
    return ()
  return (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)


def _fitting(mesh_axes: MeshAxes, size: int, axis_sizes: dict[str, int],
             used: set[str]) -> MeshAxes | bool:
  """The longest prefix of `mesh_axes` that is free and divides `size` (False: none)."""
  axes = _as_tuple(mesh_axes)
  if not axes:
    return None  # an explicit "replicate" rule always applies
  unknown = [a for a in axes if a not in axis_sizes]
  if unknown:
    raise ValueError(f"Rules map to mesh axes {unknown} not in the mesh {tuple(axis_sizes)}")
  if used & set(axes):
    return False  # flax semantics: a taken mesh axis makes the rule not apply at all
  for n in range(len(axes), 0, -1):
    if size % int(np.prod([axis_sizes[a] for a in axes[:n]])) == 0:
      return mesh_axes if n == len(axes) else (axes[0] if n == 1 else axes[:n])
  return False


def spec_for(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh | Any, rules: Rules,
             skipped: list[str] | None = None) -> PartitionSpec:
  """PartitionSpec for an array of `shape` whose dims are called `names`, under `rules`.

  Rules are tried in order; a rule applies to a still-unassigned dim when its mesh axes are unused
  by this array. If the product of its mesh axes does not divide the dim, the longest dividing
  prefix of a tuple rule is used, else the rule is skipped; dims that end up unsharded that way
  are described in `skipped`.
  `mesh` may be a Mesh or an AbstractMesh (only axis sizes are read).
  """
  names, shape = tuple(names), tuple(shape)
  if len(names) != len(shape):
    raise ValueError(f"{len(names)} axis names {names} for an array of shape {shape}")
  dups = sorted({n for n in names if n is not None and names.count(n) > 1})
  if dups:
    raise ValueError(f"Logical axis names {dups} occur more than once in {names}")
  axis_sizes = dict(mesh.shape)
  out: list[MeshAxes] = [None] * len(names)
  done = [n is None for n in names]
  used: set[str] = set()
  misfits: dict[int, list[str]] = {}
  for name, mesh_axes in rules:
    if name not in names or done[names.index(name)]:
      continue
    i = names.index(name)
    fit = _fitting(mesh_axes, shape[i], axis_sizes, used)
    if fit is False:
      if not used & set(_as_tuple(mesh_axes)):
        misfits.setdefault(i, []).append(str(mesh_axes))
      continue
    out[i], done[i] = fit, True
    used |= set(_as_tuple(fit))
  if skipped is not None:
    # Only dims that ended up unsharded (or on size-1 axes): a later rule may have found them
    # another mesh axis.
    ways = lambda m: int(np.prod([axis_sizes[a] for a in _as_tuple(m)]))
    skipped.extend(f"{names[i]} (dim {i}, size {shape[i]}) does not divide {' or '.join(m)}"
                   for i, m in misfits.items() if ways(out[i]) == 1)
  return PartitionSpec(*out)


def constrain(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
  """Constrains an activation's sharding by logical names; a no-op when no mesh is in use.

  Dims that do not divide their mesh axes are left unsharded (see `spec_for`)."""
  ctx = current()
  if ctx is None:
    return x
  mesh, rules = ctx
  if len(axes) != x.ndim:
    raise ValueError(f"constrain: {len(axes)} axis names {axes} for an array of shape {x.shape}")
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec_for(axes, x.shape, mesh, rules)))


def _path_str(path: tuple[Any, ...]) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def state_shardings(tree: Any, mesh: Mesh, rules: Rules, *,
                    fallbacks: list[str] | None = None) -> Any:
  """NamedShardings for any pytree (nnx.State, TrainState, optax state) of shaped leaves.

  nnx.Variables with logical names (`out_sharding` metadata) are sharded by `spec_for`, so their
  optimizer moments and EMA copies, which keep the metadata, are sharded like the parameters; every
  other leaf (step, rng, counters) is replicated. Dims left unsharded because they do not divide
  their mesh axes are logged once and appended to `fallbacks` as 'path: reason'.
  """
  found: list[str] = []

  def one(path, x):
    if isinstance(x, nnx.Variable):
      names = x.get_metadata().get("out_sharding")
      skipped: list[str] = []
      spec = spec_for(tuple(names), x.shape, mesh, rules, skipped) if names else PartitionSpec()
      found.extend(f"{_path_str(path)}: {s}" for s in skipped)
      return x.replace(NamedSharding(mesh, spec))
    return NamedSharding(mesh, PartitionSpec())

  out = jax.tree_util.tree_map_with_path(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))
  if found:
    logging.info("%d array dims stay unsharded because they do not divide their mesh axes %s, "
                 "e.g. %s", len(found), dict(mesh.shape), "; ".join(found[:5]))
  if fallbacks is not None:
    fallbacks.extend(found)
  return out


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, rules: Rules, ndim: int) -> NamedSharding:
  """Sharding of a batch array: leading axis by `act_batch`, the rest replicated.

  Not shape-aware: the global batch must divide the batch mesh axes (`check_batch_divides`)."""
  return NamedSharding(mesh, logical_to_spec(("act_batch",) + (None,) * (ndim - 1), rules))


def check_batch_divides(global_batch: int, mesh: Mesh, rules: Rules) -> None:
  """Raises naming config.data.batch_size and config.mesh if the batch cannot be split evenly."""
  axes = batch_sharding(mesh, rules, 1).spec[0]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  ways = math.prod(mesh.shape[a] for a in axes)
  if global_batch % ways:
    raise ValueError(f"config.data.batch_size={global_batch} does not split over the {ways} devices "
                     f"of mesh axes {axes} (config.mesh: {dict(mesh.shape)}); use a multiple of "
                     f"{ways}.")
