"""Fixtures for the nn block tests: calling modules under jax.jit through nnx.split / merge."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.nnx as nnx
import jax
import pytest


def jit_call(module: nnx.Module, *args: Any, **kwargs: Any) -> Any:
  """`module(*args, **kwargs)` run as a pure jitted function of the module's split state.

  This is how the train step and sampler use models (DESIGN.md "Flax NNX, used functionally"), and
  one compiled call is much faster on CPU than op-by-op eager dispatch.
  """
  graphdef, state = nnx.split(module)
  return jax.jit(lambda s: nnx.merge(graphdef, s)(*args, **kwargs))(state)


@pytest.fixture(name="jit_call")
def jit_call_fixture() -> Callable[..., Any]:
  return jit_call
