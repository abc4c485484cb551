from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.nn import LayerNorm, Mlp, Stack


class Block(nnx.Module):
  """A pre-LN residual MLP block taking a positional and a keyword argument."""

  def __init__(self, rngs: nnx.Rngs):
    self.norm = LayerNorm(8)
    self.mlp = Mlp(8, 16, rngs=rngs)

  def __call__(self, x, scale, *, shift):
    return x + self.mlp(self.norm(x)) * scale + shift


class PairBlock(nnx.Module):
  """A block whose carry is a pytree: (stream, context)."""

  def __init__(self, rngs: nnx.Rngs):
    self.mlp = Mlp(8, 8, rngs=rngs)

  def __call__(self, carry):
    x, ctx = carry
    return x + self.mlp(ctx), ctx * 0.5


def _x(seed=0, shape=(2, 3, 8)):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _layer(stack: Stack, i: int) -> nnx.Module:
  """Layer i of the stack, taken apart from the stacked parameters."""
  graphdef, state = nnx.split(stack.layers)
  return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))


@pytest.fixture(scope="module")
def stack():
  return Stack(Block, 3, rngs=nnx.Rngs(0))


def test_equals_layers_applied_one_by_one(stack, jit_call):
  x = _x()
  expected = x
  for i in range(3):
    expected = _layer(stack, i)(expected, 0.5, shift=0.1)
  np.testing.assert_allclose(jit_call(stack, x, 0.5, shift=0.1), expected, atol=1e-5)


def test_layers_are_initialised_independently(stack):
  kernel = stack.layers.mlp.fc1.kernel[...]
  assert kernel.shape == (3, 8, 16)
  assert not np.allclose(kernel[0], kernel[1]) and not np.allclose(kernel[1], kernel[2])


def test_partition_specs_start_with_layers(stack):
  specs = nnx.to_flat_state(nnx.get_partition_spec(nnx.state(stack, nnx.Param)))
  single = dict(nnx.to_flat_state(nnx.get_partition_spec(nnx.state(Block(nnx.Rngs(0)),
                                                                     nnx.Param))))
  assert len(specs) == len(single) == 6
  for path, spec in specs:
    assert path[0] == "layers"
    assert tuple(spec.get_value()) == ("layers",) + tuple(single[path[1:]].get_value())
  paths = {"/".join(p) for p, _ in specs}
  assert "layers/mlp/fc1/kernel" in paths and "layers/norm/scale" in paths


def _value_and_grads(module: nnx.Module, x: jax.Array):
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)

  def loss(p, x):
    return jnp.sum(jnp.square(nnx.merge(graphdef, p, rest)(x, 1.5, shift=0.0)))

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x)


def test_remat_gives_same_values_and_grads():
  x = _x(1)
  value, (grad_params, grad_x) = _value_and_grads(Stack(Block, 2, rngs=nnx.Rngs(1)), x)
  assert any(np.any(g != 0) for g in jax.tree.leaves(grad_params))
  for policy in ("full", "dots_saveable"):
    remat = Stack(Block, 2, rngs=nnx.Rngs(1), remat_policy=policy)
    value2, (grad_params2, grad_x2) = _value_and_grads(remat, x)
    np.testing.assert_allclose(value2, value, rtol=1e-6)
    np.testing.assert_allclose(grad_x2, grad_x, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grad_params2), jax.tree.leaves(grad_params), strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_remat_and_scan_are_in_the_program():
  def jaxpr(policy):
    graphdef, state = nnx.split(Stack(Block, 2, rngs=nnx.Rngs(0), remat_policy=policy))
    return str(jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x, 1.0, shift=0.0))(state, _x()))

  plain, remat = jaxpr("none"), jaxpr("dots_saveable")
  assert "scan" in plain and "remat" not in plain
  assert "scan" in remat and "remat" in remat


def test_unroll_and_pytree_carry(jit_call):
  stack = Stack(PairBlock, 3, rngs=nnx.Rngs(2), unroll=2)
  x, ctx = _x(1), _x(2)
  out_x, out_ctx = jit_call(stack, (x, ctx))
  ex, ectx = x, ctx
  for i in range(3):
    ex, ectx = _layer(stack, i)((ex, ectx))
  np.testing.assert_allclose(out_x, ex, atol=1e-5)
  np.testing.assert_allclose(out_ctx, ctx * 0.125, atol=1e-6)


def test_zero_layers_is_identity(jit_call):
  stack = Stack(Block, 0, rngs=nnx.Rngs(0))
  x = _x()
  np.testing.assert_array_equal(jit_call(stack, x, 2.0, shift=1.0), x)
  assert stack.layers.mlp.fc1.kernel.shape == (0, 8, 16)


def test_bad_arguments():
  with pytest.raises(ValueError, match="remat_policy"):
    Stack(Block, 2, rngs=nnx.Rngs(0), remat_policy="sometimes")
  with pytest.raises(ValueError, match="num_layers"):
    Stack(Block, -1, rngs=nnx.Rngs(0))
