"""1-D ConvNeXt-V2 block over time, padding-aware (the lyrics encoder of audiogen_omni §2.1).

Block (F5-TTS layout): `x + pw2(GRN(GELU(pw1(LN(dwconv_k(x))))))`. Padded frames are zeroed before
the depthwise conv (so they act like the conv's own zero padding), excluded from GRN's time norm,
and zeroed in the output: valid outputs do not depend on padded values or on the padding length.
"""

from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from flowav.nn.linear import Dense, torch_uniform_init
from flowav.nn.norm import LayerNorm


def _zero_padded(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  return x if mask is None else jnp.where(mask[..., None], x, jnp.zeros((), x.dtype))


def depthwise_conv1d(x: jax.Array, kernel: jax.Array, bias: jax.Array | None = None) -> jax.Array:
  """'same' depthwise cross-correlation over time: x `[B, L, D]`, kernel `[K, D]` (K odd).

  `y[t] = sum_k kernel[k] * x[t + k - K // 2]`, with zeros outside `[0, L)` (torch Conv1d with
  groups=D, padding=K//2).
  """
  window = kernel.shape[0]
  pad = window // 2
  padded = jnp.pad(x, ((0, 0), (pad, pad), (0, 0)))
  length = x.shape[1]
  y = sum(padded[:, k:k + length, :] * kernel[k] for k in range(window))
  return y if bias is None else y + bias


class GlobalResponseNorm(nnx.Module):
  """GRN (ConvNeXt-V2): `gamma * (x * N) + beta + x`, `N = ||x||_time / mean_ch(||x||_time)`.

  The time norm runs over valid frames only. Params `gamma`, `beta` `[dim]` named ('mlp',), zeros.
  """

  def __init__(self, dim: int, *, eps: float = 1e-6):
    self.eps = eps
    self.gamma = nnx.Param(jnp.zeros((dim,), jnp.float32), out_sharding=("mlp",))
    self.beta = nnx.Param(jnp.zeros((dim,), jnp.float32), out_sharding=("mlp",))

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    h = _zero_padded(x, mask).astype(jnp.float32)
    time_norm = jnp.sqrt(jnp.sum(jnp.square(h), axis=1, keepdims=True))  # [B, 1, D]
    response = time_norm / (jnp.mean(time_norm, axis=-1, keepdims=True) + self.eps)
    out = self.gamma[...] * (h * response) + self.beta[...] + h
    return out.astype(x.dtype)


class ConvNeXtV2Block(nnx.Module):
  """`[B, L, dim]` (+ mask `[B, L]` bool, True = valid) -> `[B, L, dim]`, padded frames zero.

  Params: `dw_kernel` `[kernel_size, dim]` ('conv_window','embed') and `dw_bias` `[dim]`
  ('embed',), torch-default uniform init; `norm` LayerNorm(eps 1e-6); `pw1` Dense(dim -> hidden,
  ('embed','mlp')); `grn`; `pw2` Dense(hidden -> dim, ('mlp','embed')). GELU is the exact (erf)
  form, torch's default.
  """

  def __init__(self, dim: int, hidden: int, *, kernel_size: int = 7, rngs: nnx.Rngs):
    if kernel_size <= 0 or kernel_size % 2 == 0:
      raise ValueError(f"ConvNeXtV2Block: kernel_size={kernel_size} must be odd and positive")
    self.dim = dim
    init = torch_uniform_init(kernel_size)  # Depthwise: fan_in = kernel_size * 1 channel.
    self.dw_kernel = nnx.Param(init(rngs.params(), (kernel_size, dim), jnp.float32),
                               out_sharding=("conv_window", "embed"))
    self.dw_bias = nnx.Param(init(rngs.params(), (dim,), jnp.float32), out_sharding=("embed",))
    self.norm = LayerNorm(dim, eps=1e-6)
    self.pw1 = Dense(dim, hidden, axes=("embed", "mlp"), use_bias=True, rngs=rngs)
    self.grn = GlobalResponseNorm(hidden)
    self.pw2 = Dense(hidden, dim, axes=("mlp", "embed"), use_bias=True, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    if x.ndim != 3 or x.shape[-1] != self.dim:
      raise ValueError(f"ConvNeXtV2Block: x must be [B, L, {self.dim}], got shape {x.shape}")
    if mask is not None:
      if mask.shape != x.shape[:2]:
        raise ValueError(f"ConvNeXtV2Block: mask shape {mask.shape} != [B, L]={x.shape[:2]}")
      mask = mask.astype(bool)
    x = _zero_padded(x, mask)
    h = depthwise_conv1d(x, self.dw_kernel[...], self.dw_bias[...])
    h = jax.nn.gelu(self.pw1(self.norm(h)), approximate=False)
    h = self.pw2(self.grn(h, mask))
    return _zero_padded(x + h, mask)
