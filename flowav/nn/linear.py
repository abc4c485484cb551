"""Dense layer whose parameters carry logical axis names (DESIGN.md, "Sharding by ... names")."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]
AxisNames = tuple[str | None, ...]

ZEROS: Initializer = nnx.initializers.zeros_init()


def torch_uniform_init(fan_in: int) -> Initializer:
  """PyTorch's default Linear/Conv init: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)).

  VSSFlow spec §2.5 asks for PyTorch-default-like random init.
  """
  bound = 1.0 / math.sqrt(max(fan_in, 1))

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def check_axes(axes: AxisNames, ndim: int, what: str) -> AxisNames:
  """Checks there is one logical name per dimension and returns the names as a tuple."""
  axes = tuple(axes)
  if len(axes) != ndim:
    raise ValueError(f"{what}: axes={axes} must name each of the {ndim} dims")
  return axes


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def matmul(x: jax.Array, kernel: jax.Array, compute_dtype: Any) -> jax.Array:
  """`x [..., in] @ kernel [in, out]` with inputs cast to `compute_dtype`, float32 result.

  The backward pass is written out so that each of its two dots has the shape XLA:CPU's fast
  (YNNPACK) matmul takes, and keeps bfloat16 inputs: dX = dY . K^T contracts both minor dims, and
  dK = X^T @ dY reads X^T, which the forward pass stores as its residual. Autodiff instead emits
  dK as a dot contracting the major (token) dims of X and dY, which XLA:CPU runs in float32 on a
  slow path (stack_notes §6: the backward pass cost ~5x the forward). Where XLA can see the
  transpose and the dot together (no scan between them) it folds them back, which is no slower
  than autodiff; inside a scanned layer stack the residual crosses the loop and stays transposed.
  """
  x2 = x.reshape(-1, x.shape[-1]).astype(compute_dtype)
  y = jax.lax.dot_general(x2, kernel.astype(compute_dtype), (((1,), (0,)), ((), ())),
                          preferred_element_type=jnp.float32)
  return y.reshape(*x.shape[:-1], kernel.shape[1])


def _transposed(x2: jax.Array) -> jax.Array:
  """`x2 [T, D]` -> `[D, T]` as a row-major copy that XLA:CPU keeps physical.

  A 2-D transpose reaches XLA as a layout change (`{0,1}`, a bitcast), and a bfloat16 dot whose
  operand has that layout fails XLA:CPU's YNNPACK check: the operand upcaster then runs the whole
  dK dot in float32 (measured: the 4x MLP's dK took 11 ms instead of 3.7). Transposing a 3-D
  view `[1, T, D] -> [1, D, T]` is kept as a real copy in the compute dtype.
  """
  tokens = x2.shape[0]
  return x2.reshape(1, tokens, -1).transpose(0, 2, 1).reshape(-1, tokens)


def _matmul_fwd(x, kernel, compute_dtype):
  # The barrier keeps the transpose a real array: folded back into the dK dot (TransposeFolding,
  # outside a scan) it gives a dot contracting both major dims, which XLA:CPU runs on its generic
  # path and which has no bfloat16-in / float32-out kernel there ("Unsupported element type for
  # DotThunk::Execute: BF16 x BF16 = F32").
  x_t = jax.lax.optimization_barrier(_transposed(x.reshape(-1, x.shape[-1]).astype(compute_dtype)))
  # An empty array carries x's dtype (residuals must be arrays, e.g. under jax.checkpoint).
  return matmul(x, kernel, compute_dtype), (x_t, kernel, jnp.zeros((0,), x.dtype))


def _matmul_bwd(compute_dtype, residuals, d_y):
  x_t, kernel, x_like = residuals
  d_y2 = d_y.reshape(-1, d_y.shape[-1]).astype(compute_dtype)
  d_x = jax.lax.dot_general(d_y2, kernel.astype(compute_dtype), (((1,), (1,)), ((), ())),
                            preferred_element_type=jnp.float32)
  d_kernel = jax.lax.dot_general(x_t, d_y2, (((1,), (0,)), ((), ())),
                                 preferred_element_type=jnp.float32)
  return (d_x.reshape(*d_y.shape[:-1], kernel.shape[0]).astype(x_like.dtype),
          d_kernel.astype(kernel.dtype))


matmul.defvjp(_matmul_fwd, _matmul_bwd)


class Dense(nnx.Module):
  """y = x @ kernel (+ bias) over the last axis: `[..., in_features] -> [..., out_features]`.

  Params: `kernel` `[in, out]` named `axes`; `bias` `[out]` named `(axes[1],)`.
  With `dtype` set, inputs and kernel are cast to `dtype`, the dot accumulates in float32
  (`preferred_element_type`; the fast bf16 path on CPU, stack_notes §6), and the result is `dtype`.
  """

  def __init__(
    self,
    in_features: int,
    out_features: int,
    *,
    axes: tuple[str | None, str | None],
    use_bias: bool = False,
    kernel_init: Initializer | None = None,
    bias_init: Initializer = ZEROS,
    dtype: Any = None,
    param_dtype: Any = jnp.float32,
    rngs: nnx.Rngs,
  ):
    if in_features <= 0 or out_features <= 0:
      raise ValueError(
        f"Dense: in_features={in_features} and out_features={out_features} must be positive")
    axes = check_axes(axes, 2, "Dense")
    self.in_features = in_features
    self.out_features = out_features
    self.dtype = dtype
    kernel_init = kernel_init or torch_uniform_init(in_features)
    self.kernel = nnx.Param(
      kernel_init(rngs.params(), (in_features, out_features), param_dtype), out_sharding=axes)
    self.bias = (
      nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype), out_sharding=(axes[1],))
      if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.shape[-1] != self.in_features:
      raise ValueError(
        f"Dense: input last dim {x.shape[-1]} != in_features={self.in_features} (x {x.shape})")
    kernel = self.kernel[...]
    if self.dtype is None:
      y = matmul(x, kernel, jnp.result_type(x, kernel))
      return y.astype(jnp.result_type(x, kernel)) if self.bias is None else y + self.bias[...]
    y = matmul(x, kernel, self.dtype)
    if self.bias is not None:
      y = y + self.bias[...].astype(jnp.float32)
    return y.astype(self.dtype)
