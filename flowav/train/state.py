"""The train state: a pure pytree that every jitted function takes and returns."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from flowav.parallel import sharding as shd
from flowav.parallel.rules import Rules


@flax.struct.dataclass
class TrainState:
  """step: optimizer steps taken; params: trainable nnx.State (Param); rest: non-trainable model
  state (frozen constants); opt_state: optax state; ema: EMA of params or None; rng: base key."""
  step: jax.Array
  params: nnx.State
  rest: nnx.State
  opt_state: Any
  ema: Any
  rng: jax.Array


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
  """graphdef, trainable params, everything else."""
  return nnx.split(model, nnx.Param, ...)


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for any pytree: Variables with logical names are sharded by the rules (a dim
  that does not divide its mesh axes stays whole), every other leaf (step, rng, optimizer
  counters) is replicated. See `flowav.parallel.sharding.state_shardings`."""
  return shd.state_shardings(tree, mesh, rules)


def param_paths(params: nnx.State) -> list[str]:
  """'a/b/kernel' paths of every parameter (checkpoint format; golden lists compare these)."""
  flat = nnx.to_flat_state(params)
  return sorted("/".join(str(k) for k in path) for path, _ in flat)


def count_params(params: nnx.State) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
