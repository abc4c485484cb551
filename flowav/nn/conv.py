"""Channel-last 1-D convolutions over time and the conv SwiGLU, padding-aware.

MMAudio-style blocks (audiogen_omni §2.2, §2.4): `Conv1d(k)` with 'same' zero padding, and
`ConvSwiGLU` = SwiGLU whose two projections are such convs (MMAudio's `ConvMLP`). With a mask, the
padded input frames are zeroed before each conv (like the conv's own zero padding), so the valid
outputs do not depend on the values at padded frames.

The conv runs as one matmul through `flowav.nn.linear.matmul`, which keeps XLA:CPU on its fast dot
path, also in the backward pass: over im2col windows (`[B*L, K*C_in] @ [K*C_in, C_out]`), or, when
C_out < C_in, against all taps at once (`[B*L, C_in] @ [C_in, K*C_out]`) followed by shifted adds.
A sampler's k3 convs run as Winograd F(2, 3) instead (`flowav.nn.winograd`, a third fewer FLOPs).
"""

from __future__ import annotations

from typing import Any

import einops
import flax.nnx as nnx
import jax
import jax.numpy as jnp

from flowav.nn.linear import ZEROS, Initializer, check_axes, matmul, torch_uniform_init
from flowav.nn.winograd import TAPS as WINOGRAD_TAPS
from flowav.nn.winograd import conv3 as winograd_conv3
from flowav.nn.winograd import filter_transform
from flowav.parallel.sharding import constrain


def mask_frames(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  """x `[B, L, C]` with the frames where `mask [B, L]` is False set to 0 (None = unchanged)."""
  return x if mask is None else jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))


def time_windows(x: jax.Array, kernel_size: int) -> jax.Array:
  """'same' im2col over time: `[B, L, C] -> [B, L, K*C]`, window k at offset `k - K // 2`.

  `out[b, t, k*C + c] = x[b, t + k - K//2, c]`, 0 outside `[0, L)`.
  """
  if kernel_size == 1:
    return x
  pad = kernel_size // 2
  padded = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))
  length = x.shape[1]
  return jnp.concatenate([padded[:, k:k + length] for k in range(kernel_size)], axis=-1)


def shifted_output_conv(x: jax.Array, kernel: jax.Array, compute_dtype: Any) -> jax.Array:
  """'same' conv as one matmul against all taps, then shifted adds: float32 `[B, L, out]`.

  x `[B, L, in]`, kernel `[K, in, out]`: `y[t] = sum_k (x @ kernel[k])[t + k - K//2]`. It moves
  K*out float32 values per frame where im2col copies K*in inputs, so it is the cheaper form when
  out < in (XLA:CPU also widens a bfloat16 im2col concatenation to float32 and back). At
  AudioGen-Omni's conv SwiGLU output (1280 -> 448, k3, 8 x 250 frames) a train step's gradient
  took 33 vs 61 ms in bfloat16, 64 vs 87 ms in float32; at 448 -> 448 float32 it was slower.
  """
  return _shift_add(matmul(x, conv_taps(kernel), compute_dtype), kernel.shape[0])


def conv_taps(kernel: jax.Array) -> jax.Array:
  """A conv kernel `[K, in, out]` as the `[in, K*out]` matrix `shifted_output_conv` multiplies by."""
  return einops.rearrange(kernel, "k i o -> i (k o)")


def _shift_add(y: jax.Array, size: int) -> jax.Array:
  """`[B, L, K*out]` per-tap outputs -> `[B, L, out]`, tap k read `k - K//2` frames later."""
  length = y.shape[1]
  y = einops.rearrange(y, "b l (k o) -> b l k o", k=size)
  y = jnp.pad(y, ((0, 0), (size // 2, size // 2), (0, 0), (0, 0)))
  return sum(y[:, k:k + length, k] for k in range(size))


class Conv1d(nnx.Module):
  """torch `Conv1d(in, out, K, padding=K//2)` on channel-last `[B, L, in] -> [B, L, out]` (K odd).

  Params: `kernel` `[K, in, out]` named `axes` (default ('conv_window', 'embed', 'mlp')), torch-
  default uniform init (fan_in = K*in) unless `kernel_init`; `bias` `[out]` named `(axes[2],)`.
  `kernel[k]` multiplies frame `t + k - K//2` (cross-correlation, like torch). With `dtype`, inputs
  and kernel are cast to it, the dot accumulates in float32 and the result is `dtype`.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int, *,
               axes: tuple[str | None, str | None, str | None] = ("conv_window", "embed", "mlp"),
               use_bias: bool = True, kernel_init: Initializer | None = None,
               bias_init: Initializer | None = None, dtype: Any = None, rngs: nnx.Rngs):
    if kernel_size <= 0 or kernel_size % 2 == 0:
      raise ValueError(f"Conv1d: kernel_size={kernel_size} must be odd and positive")
    if in_features <= 0 or out_features <= 0:
      raise ValueError(
        f"Conv1d: in_features={in_features} and out_features={out_features} must be positive")
    axes = check_axes(axes, 3, "Conv1d")
    self.in_features, self.out_features = in_features, out_features
    self.kernel_size = kernel_size
    self.dtype = dtype
    fan_in_init = torch_uniform_init(kernel_size * in_features)
    kernel_init = kernel_init or fan_in_init
    bias_init = bias_init or (fan_in_init if kernel_init is fan_in_init else ZEROS)
    self.kernel = nnx.Param(
      kernel_init(rngs.params(), (kernel_size, in_features, out_features), jnp.float32),
      out_sharding=axes)
    self.bias = (nnx.Param(bias_init(rngs.params(), (out_features,), jnp.float32),
                           out_sharding=(axes[2],)) if use_bias else None)
    self.layout = "kernel"  # "taps" / "winograd" once laid out for sampling

  @property
  def shifted_output(self) -> bool:
    """Whether this layer runs as `shifted_output_conv` (the form with less extra memory traffic)."""
    return self.kernel_size > 1 and self.out_features < self.in_features

  def lay_out_for_sampling(self, *, winograd: bool = True) -> None:
    """Stores the kernel in the form a sampler multiplies by, once instead of at every call, for a
    model copy used only for sampling (nn.prepare_for_sampling); idempotent.

    k3 (and `winograd`): Winograd F(2, 3) taps `[4, in, out]` (`flowav.nn.winograd`, a third fewer
    FLOPs).
    Otherwise, in the shifted-output form, `conv_taps(kernel)` `[in, K*out]` (XLA:CPU transposes a
    bfloat16 kernel slowly). Otherwise (im2col) the kernel stays as it is.
    """
    if self.layout != "kernel":
      return
    names = self.kernel.get_metadata().get("out_sharding")
    if winograd and self.kernel_size == WINOGRAD_TAPS:
      self.kernel.set_value(filter_transform(self.kernel.get_value()))
      self.layout = "winograd"  # `[4, in, out]` keeps the `[K, in, out]` names
    elif self.shifted_output:
      self.kernel.set_value(conv_taps(self.kernel.get_value()))
      if names:  # `[in, K*out]`: K*out split as out would be
        self.kernel.set_metadata(out_sharding=tuple(names[1:]))
      self.layout = "taps"

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """x `[B, L, in]`, mask `[B, L]` bool (True = valid; padded frames read as 0) -> `[B, L, out]`."""
    if x.ndim != 3 or x.shape[-1] != self.in_features:
      raise ValueError(f"Conv1d: x must be [B, L, {self.in_features}], got shape {x.shape}")
    if mask is not None and mask.shape != x.shape[:2]:
      raise ValueError(f"Conv1d: mask shape {mask.shape} != [B, L]={x.shape[:2]}")
    kernel = self.kernel[...]
    compute = jnp.result_type(x, kernel) if self.dtype is None else self.dtype
    x = mask_frames(x.astype(compute), mask)
    if self.layout == "winograd":  # prepared for sampling: `[4, in, out]` transformed taps
      y = winograd_conv3(x, kernel, compute)
    elif self.layout == "taps":  # prepared for sampling: `[in, K*out]`
      y = _shift_add(matmul(x, kernel, compute), self.kernel_size)
    elif self.shifted_output:
      y = shifted_output_conv(x, kernel, compute)
    else:
      y = matmul(time_windows(x, self.kernel_size),
                 kernel.reshape(self.kernel_size * self.in_features, self.out_features), compute)
    if self.bias is not None:
      y = y + self.bias[...].astype(jnp.float32)
    return y.astype(compute)


class ConvSwiGLU(nnx.Module):
  """SwiGLU with convs (MMAudio `ConvMLP`): `[a, b] = split(proj(x))`, `y = out(a * silu(b))`.

  Params: `proj` Conv1d(dim -> 2*hidden, ('conv_window','embed','mlp')), `out` Conv1d(hidden ->
  dim, ('conv_window','mlp','embed')), both size K, biases optional (MMAudio: none). The mask
  zeroes padded frames before both convs: valid outputs ignore padded inputs.
  """

  def __init__(self, dim: int, hidden: int, kernel_size: int, *, out_dim: int | None = None,
               use_bias: bool = False, dtype: Any = None, rngs: nnx.Rngs):
    self.proj = Conv1d(dim, 2 * hidden, kernel_size, axes=("conv_window", "embed", "mlp"),
                       use_bias=use_bias, dtype=dtype, rngs=rngs)
    self.out = Conv1d(hidden, dim if out_dim is None else out_dim, kernel_size,
                      axes=("conv_window", "mlp", "embed"), use_bias=use_bias, dtype=dtype,
                      rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    a, b = jnp.split(self.proj(x, mask), 2, axis=-1)
    hidden = constrain(a * jax.nn.silu(b), ("act_batch", "act_len", "act_mlp"))
    return self.out(hidden, mask)
