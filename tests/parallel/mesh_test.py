from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from flowav.parallel import mesh as mesh_lib
from flowav.parallel import rules as rules_lib
from flowav.parallel import sharding


def test_mesh_shape_resolves_minus_one():
  assert mesh_lib.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
  assert mesh_lib.mesh_shape({"data": -1}, 1) == (1, 1, 1)


@pytest.mark.parametrize("sizes, match", [
  ({"data": -1, "fsdp": -1}, "At most one"),
  ({"data": 3}, "needs 3 devices"),
  ({"data": -1, "fsdp": 3}, "does not divide"),
  ({"pipeline": 2}, "Unknown mesh axes"),
])
def test_mesh_shape_errors_name_the_problem(sizes, match):
  with pytest.raises(ValueError, match=match):
    mesh_lib.mesh_shape(sizes, 8)


def test_make_mesh_has_auto_axes_and_constraint_works():
  mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  assert mesh.axis_names == ("data", "fsdp", "tensor")
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
  rules = rules_lib.get_rules("data_parallel")
  with sharding.use_mesh(mesh, rules):
    y = jax.jit(lambda x: sharding.constrain(x * 2, ("act_batch", "act_embed")))(jnp.ones((4, 3)))
  assert float(y.sum()) == 24.0


def test_constrain_is_identity_without_mesh_and_checks_rank():
  x = jnp.ones((2, 3))
  assert sharding.constrain(x, ("act_batch", "act_embed")) is x
  mesh = mesh_lib.make_mesh({"data": -1})
  with sharding.use_mesh(mesh, rules_lib.get_rules("replicated")):
    with pytest.raises(ValueError, match="axis names"):
      sharding.constrain(x, ("act_batch",))


def test_rules_tables_cover_every_parameter_axis():
  for name in rules_lib.TABLES:
    rules_lib.validate_rules(rules_lib.get_rules(name))
  with pytest.raises(ValueError, match="mesh.rules"):
    rules_lib.get_rules("nope")
