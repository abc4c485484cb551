"""Device mesh from `config.mesh`: axes data / fsdp / tensor, -1 meaning "the remaining devices"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(sizes: dict[str, int], num_devices: int) -> tuple[int, ...]:
  """Resolves `{'data': -1, 'fsdp': 1, 'tensor': 1}` against the device count."""
  unknown = set(sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"Unknown mesh axes {sorted(unknown)} in config.mesh; valid: {MESH_AXES}")
  shape = [int(sizes.get(a, 1)) for a in MESH_AXES]
  if shape.count(-1) > 1:
    raise ValueError(f"At most one mesh axis may be -1, got config.mesh={dict(sizes)}")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"config.mesh={dict(sizes)} does not divide {num_devices} devices")
    shape[shape.index(-1)] = num_devices // known
  if int(np.prod(shape)) != num_devices:
    raise ValueError(
      f"config.mesh={dict(sizes)} needs {int(np.prod(shape))} devices, {num_devices} are available")
  return tuple(shape)


def make_mesh(sizes: dict[str, Any], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a mesh with Auto axis types, so logical sharding constraints apply inside jit."""
  devices = list(jax.devices() if devices is None else devices)
  # config.mesh also holds `rules` (the table's name); every other key must be a mesh axis.
  shape = mesh_shape({k: int(v) for k, v in dict(sizes).items() if k != "rules"}, len(devices))
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))


def mesh_for_rules(table: str, num_devices: int, tensor: int = 2) -> dict[str, int]:
  """A mesh that exercises rules `table` on `num_devices`: every device on the axes it shards.

  For benchmarks and AOT checks; a real run sets `config.mesh` itself.
  """
  if table == "fsdp":
    return {"data": 1, "fsdp": num_devices, "tensor": 1}
  if table == "fsdp_tensor":
    tensor = min(tensor, num_devices)
    return {"data": 1, "fsdp": num_devices // tensor, "tensor": tensor}
  return {"data": num_devices, "fsdp": 1, "tensor": 1}
