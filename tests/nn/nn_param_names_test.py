"""Every parameter of every block has one logical name per dim, and every block runs under jit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav import nn
from tests.param_checks import check_param_names


def _x(*shape):
  return jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)


class _Block(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.attn = nn.Attention(8, 2, 4, kv_dim=6, num_kv_heads=1, qk_norm="rms", rngs=rngs)
    self.ff = nn.SwiGLU(8, 16, rngs=rngs)

  def __call__(self, x, ctx):
    return x + self.ff(x + self.attn(x, ctx))


# (builder, call inputs) for every public block.
CASES: dict[str, tuple[Callable[[nnx.Rngs], nnx.Module], Callable[[], tuple[Any, ...]]]] = {
  "dense": (lambda r: nn.Dense(8, 4, axes=("embed", "mlp"), use_bias=True, rngs=r),
            lambda: (_x(2, 8),)),
  "layer_norm": (lambda r: nn.LayerNorm(8, rngs=r), lambda: (_x(2, 8),)),
  "rms_norm": (lambda r: nn.RMSNorm(8, rngs=r), lambda: (_x(2, 8),)),
  "self_attention": (lambda r: nn.Attention(8, 2, 4, use_bias=True, qk_norm="layer", rngs=r),
                     lambda: (_x(2, 3, 8),)),
  "cross_attention": (lambda r: nn.Attention(8, 2, 4, kv_dim=6, num_kv_heads=1, rngs=r),
                      lambda: (_x(2, 3, 8), _x(2, 5, 6))),
  "joint_attention": (lambda r: nn.JointAttention([8, 6], 2, 4, rngs=r),
                      lambda: ([_x(2, 3, 8), _x(2, 2, 6)],)),
  "timestep_fourier": (lambda r: nn.TimestepEmbedder(8, 8, kind="fourier", rngs=r),
                       lambda: (jnp.asarray([0.1, 0.5]),)),
  "timestep_sinusoidal": (lambda r: nn.TimestepEmbedder(8, 8, rngs=r),
                          lambda: (jnp.asarray([0.1, 0.5]),)),
  "embed": (lambda r: nn.Embed(10, 8, rngs=r), lambda: (jnp.asarray([[1, 2]]),)),
  "adaln": (lambda r: nn.AdaLNModulation(8, 8, 6, zero_init=False, rngs=r), lambda: (_x(2, 8),)),
  "mlp": (lambda r: nn.Mlp(8, 16, rngs=r), lambda: (_x(2, 3, 8),)),
  "swiglu": (lambda r: nn.SwiGLU(8, 16, rngs=r), lambda: (_x(2, 3, 8),)),
  "convnext": (lambda r: nn.ConvNeXtV2Block(8, 16, rngs=r), lambda: (_x(2, 5, 8),)),
  "conv1d": (lambda r: nn.Conv1d(8, 4, 3, rngs=r), lambda: (_x(2, 5, 8),)),
  "conv_swiglu": (lambda r: nn.ConvSwiGLU(8, 16, 3, rngs=r), lambda: (_x(2, 5, 8),)),
  "stack": (lambda r: nn.Stack(_Block, 2, rngs=r, remat_policy="dots_saveable"),
            lambda: (_x(2, 3, 8), _x(2, 4, 6))),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_param_has_one_name_per_dim(name):
  build, _ = CASES[name]
  module = nnx.eval_shape(lambda: build(nnx.Rngs(0)))  # Shapes and names only.
  assert check_param_names(module) >= 1


def test_helper_catches_a_missing_name():
  class Bad(nnx.Module):
    def __init__(self):
      self.w = nnx.Param(jnp.ones((2, 3)), out_sharding=("embed",))

  with pytest.raises(AssertionError, match="names"):
    check_param_names(Bad())


@pytest.mark.parametrize("name", sorted(CASES))
def test_runs_under_jit_on_split_and_merge(name):
  # Numerical checks against references live in the per-block tests; here: the functional path.
  build, inputs = CASES[name]
  module = build(nnx.Rngs(0))
  args = inputs()
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)

  @jax.jit
  def apply(params, rest, args):
    model = nnx.merge(graphdef, params, rest)
    return model(*args), nnx.state(model, nnx.Param)

  out, params_after = apply(params, rest, args)
  expected = nnx.eval_shape(lambda: module(*args))  # Abstract eager call: shapes, no compile.
  assert jax.tree.structure(out) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(expected), strict=True):
    assert (a.shape, a.dtype) == (b.shape, b.dtype)
    assert np.all(np.isfinite(a))
  for a, b in zip(jax.tree.leaves(params_after), jax.tree.leaves(params), strict=True):
    np.testing.assert_array_equal(a, b)  # Calling a block never changes its parameters.
