"""Adaptive LayerNorm conditioning: SiLU -> Dense -> chunks (shift, scale, gate, ...).

DiT/MM-DiT style (audiogen_omni §2.3, flowley §2 "AdaLN"): `LN(x) * (1 + scale) + shift`, residual
branches multiplied by a gate. Zero-initialised modulation makes every block start as the identity.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from flowav.nn.linear import Dense, Initializer


class FrameRows(NamedTuple):
  """A per-frame condition `[B, L, Dc]` kept as its distinct rows: frame l is `rows[:, index[l]]`.

  AudioGen-Omni's `c_a = c_g + sync` changes only at the sync rate (24 Hz under 31.25 Hz audio
  frames; one row without sync), so `AdaLNModulation` projects the S rows and gathers the result:
  the same values as projecting every frame, with S/L of the matmul (spec §2.3).
  """
  rows: jax.Array  # [B, S, Dc]
  index: jax.Array  # [L] int32 in [0, S)

  def dense(self) -> jax.Array:
    """The condition on every frame, `[B, L, Dc]`."""
    return jnp.take(self.rows, self.index, axis=1)

  def astype(self, dtype: Any) -> FrameRows:
    return self._replace(rows=self.rows.astype(dtype))


class AdaLNModulation(nnx.Module):
  """c `[B, Dc]` -> num_chunks arrays `[B, 1, width]`; per-frame c `[B, L, Dc]` (or `FrameRows`)
  -> `[B, L, width]`.

  Param `proj`: Dense(cond_dim -> num_chunks*width, bias), kernel named `axes`
  (default ('embed', 'mlp')). `zero_init=True` zeros kernel and bias; `kernel_init` overrides the
  kernel init otherwise (e.g. flowley's N(0, 1e-3)).

  `per_example=True`: c is one vector per example (`[B, Dc]` only) and the projection stays in
  float32 whatever `dtype` is. Its few rows make it a memory-bound mat-vec, which XLA:CPU computes
  in float32 anyway: it up-casts a bfloat16 dot with one row, converting the whole kernel at every
  call (~12 % of a bfloat16 AudioGen-Omni evaluation's op time in a profile at mmaudio_s shapes,
  ~3 % of its wall time in an A/B; benchmarks/omni_sample_speed.py).
  """

  def __init__(self, cond_dim: int, width: int, num_chunks: int, *, zero_init: bool = True,
               kernel_init: Initializer | None = None,
               axes: tuple[str | None, str | None] = ("embed", "mlp"), dtype: Any = None,
               per_example: bool = False, rngs: nnx.Rngs):
    if num_chunks <= 0:
      raise ValueError(f"AdaLNModulation: num_chunks={num_chunks} must be positive")
    if zero_init:
      kernel_init = nnx.initializers.zeros_init()
    self.cond_dim, self.width, self.num_chunks = cond_dim, width, num_chunks
    self.per_example = per_example
    self.proj = Dense(cond_dim, num_chunks * width, axes=axes, use_bias=True,
                      kernel_init=kernel_init, dtype=None if per_example else dtype, rngs=rngs)

  def __call__(self, c: jax.Array | FrameRows) -> tuple[jax.Array, ...]:
    if isinstance(c, FrameRows):
      if self.per_example or c.rows.ndim != 3:
        raise ValueError(f"AdaLNModulation: FrameRows needs rows [B, S, Dc] and per_example=False, "
                         f"got rows {c.rows.shape}")
      mod = jnp.take(self.proj(jax.nn.silu(c.rows)), c.index, axis=1)
      return tuple(jnp.split(mod, self.num_chunks, axis=-1))
    if self.per_example and c.ndim != 2:
      raise ValueError(f"AdaLNModulation(per_example=True): c must be [B, Dc], got shape {c.shape}")
    if c.ndim == 2:
      c = c[:, None, :]
    elif c.ndim != 3:
      raise ValueError(f"AdaLNModulation: c must be [B, Dc] or [B, L, Dc], got shape {c.shape}")
    mod = self.proj(jax.nn.silu(c))
    return tuple(jnp.split(mod, self.num_chunks, axis=-1))


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  """`x * (1 + scale) + shift`; shift/scale `[B, 1, D]` or `[B, L, D]` against x `[B, L, D]`."""
  return x * (1 + scale) + shift


def gate(x: jax.Array, g: jax.Array) -> jax.Array:
  """`x * g`: the gated residual branch of an AdaLN block."""
  return x * g
