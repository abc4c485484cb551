"""Timestep features (sinusoidal, frozen Gaussian-Fourier), the timestep MLP, and lookup tables."""

from __future__ import annotations

import math
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav.nn.linear import Dense, Initializer


class Constant(nnx.Variable):
  """A frozen array that belongs to the model but is not trained.

  Not an `nnx.Param`, so `nnx.split(model, nnx.Param, ...)` leaves it out of the optimizer's tree.
  """


def timestep_sinusoidal(t: jax.Array, dim: int, *, max_period: float = 10000.0,
                        scale: float = 1000.0) -> jax.Array:
  """DiT-style features `[cos(s t f_k), sin(s t f_k)]`, `f_k = max_period^(-k/half)`.

  t: `[B]` (flow time in [0, 1]; `scale=1000` maps it to the DiT range, audiogen_omni §2.3).
  Returns float32 `[B, dim]`; an odd `dim` gets a trailing zero column.
  """
  if dim <= 0:
    raise ValueError(f"timestep_sinusoidal: dim={dim} must be positive")
  t = jnp.asarray(t, jnp.float32)
  if t.ndim != 1:
    raise ValueError(f"timestep_sinusoidal: t must be [B], got shape {t.shape}")
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / max(half, 1))
  args = scale * t[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class FourierFeatures(nnx.Module):
  """Gaussian-Fourier features `[cos(2 pi t w), sin(2 pi t w)]`, frozen `w ~ N(0, std^2)`.

  vssflow §2.2. `w` (`weight`, `[num_freqs]`, named ('freq',)) is drawn from numpy with a fixed
  `seed`, so a rebuilt model has the same features; it is a `Constant`, not a trainable `Param`.
  """

  def __init__(self, num_freqs: int, *, std: float = 1.0, seed: int = 0):
    if num_freqs <= 0:
      raise ValueError(f"FourierFeatures: num_freqs={num_freqs} must be positive")
    w = np.random.default_rng(seed).normal(0.0, std, size=(num_freqs,)).astype(np.float32)
    self.weight = Constant(jnp.asarray(w), out_sharding=("freq",))

  def __call__(self, t: jax.Array) -> jax.Array:
    """t `[B]` -> float32 `[B, 2 * num_freqs]`."""
    t = jnp.asarray(t, jnp.float32)
    if t.ndim != 1:
      raise ValueError(f"FourierFeatures: t must be [B], got shape {t.shape}")
    args = 2.0 * math.pi * t[:, None] * self.weight[...][None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


TIMESTEP_KINDS = ("sinusoidal", "fourier")
STANDARD_NORMAL: Initializer = nnx.initializers.normal(1.0)


class TimestepEmbedder(nnx.Module):
  """t `[B]` -> features `[B, freq_dim]` -> Dense -> SiLU -> Dense -> `[B, width]`.

  kind 'sinusoidal': `timestep_sinusoidal(t, freq_dim)` (DiT, audiogen_omni §2.3); 'fourier':
  `FourierFeatures(freq_dim // 2, seed=fourier_seed)` (vssflow §2.2, freq_dim even).
  Params: `features` (fourier only, a Constant); `fc1` kernel `[freq_dim, width]` named
  ('freq', 'mlp') and `fc2` kernel `[width, width]` named ('mlp', 'embed'): the hidden width is
  treated as an MLP hidden axis so no kernel carries the same logical name twice. Both have biases.
  """

  def __init__(self, freq_dim: int, width: int, *, kind: str = "sinusoidal", fourier_seed: int = 0,
               fourier_std: float = 1.0, max_period: float = 10000.0, scale: float = 1000.0,
               dtype: Any = None, rngs: nnx.Rngs):
    if kind not in TIMESTEP_KINDS:
      raise ValueError(f"TimestepEmbedder: kind={kind!r} must be one of {TIMESTEP_KINDS}")
    if kind == "fourier" and freq_dim % 2:
      raise ValueError(f"TimestepEmbedder: freq_dim={freq_dim} must be even for kind='fourier'")
    self.kind = kind
    self.freq_dim = freq_dim
    self.max_period = max_period
    self.scale = scale
    self.features = (FourierFeatures(freq_dim // 2, std=fourier_std, seed=fourier_seed)
                     if kind == "fourier" else None)
    self.fc1 = Dense(freq_dim, width, axes=("freq", "mlp"), use_bias=True, dtype=dtype, rngs=rngs)
    self.fc2 = Dense(width, width, axes=("mlp", "embed"), use_bias=True, dtype=dtype, rngs=rngs)

  def __call__(self, t: jax.Array) -> jax.Array:
    if self.features is not None:
      feats = self.features(t)
    else:
      feats = timestep_sinusoidal(t, self.freq_dim, max_period=self.max_period, scale=self.scale)
    return self.fc2(jax.nn.silu(self.fc1(feats)))


class Embed(nnx.Module):
  """Lookup table: ids `[...]` int -> `[..., features]`. Param `embedding` `[num, features]`.

  Also serves as learned absolute positions (look up `arange(L)`). Ids outside `[0, num)`, negative
  ones included, give NaN rows, so a too-small table shows up instead of being silently clipped.
  """

  def __init__(self, num_embeddings: int, features: int, *,
               axes: tuple[str | None, str | None] = ("vocab", "embed"),
               init: Initializer = STANDARD_NORMAL, dtype: Any = None,
               param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
    if num_embeddings <= 0 or features <= 0:
      raise ValueError(
        f"Embed: num_embeddings={num_embeddings} and features={features} must be positive")
    axes = tuple(axes)
    if len(axes) != 2:
      raise ValueError(f"Embed: axes={axes} must name the 2 dims [num_embeddings, features]")
    self.num_embeddings = num_embeddings
    self.dtype = dtype
    self.embedding = nnx.Param(init(rngs.params(), (num_embeddings, features), param_dtype),
                               out_sharding=axes)

  def __call__(self, ids: jax.Array) -> jax.Array:
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
      raise ValueError(f"Embed: ids must be integers, got dtype {ids.dtype}")
    ids = jnp.where(ids < 0, self.num_embeddings, ids)  # Negative ids too are out of range.
    out = jnp.take(self.embedding[...], ids, axis=0, mode="fill", fill_value=jnp.nan)
    return out if self.dtype is None else out.astype(self.dtype)
