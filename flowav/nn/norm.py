"""LayerNorm and RMSNorm over the last axis, computed in float32 whatever the input dtype."""

from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp

from flowav.nn.embeddings import Constant


def _check_dim(x: jax.Array, dim: int, name: str) -> None:
  if x.shape[-1] != dim:
    raise ValueError(f"{name}: input last dim {x.shape[-1]} != dim={dim} (x {x.shape})")


class LayerNorm(nnx.Module):
  """`(x - mean) / sqrt(var + eps) * scale + bias` over the last axis: `[..., dim] -> [..., dim]`.

  `use_scale=use_bias=False` gives the affine-free LN that AdaLN blocks modulate
  (audiogen_omni §2.3, flowley AdaLN). Params `scale` (ones), `bias` (zeros), named ('norm',).
  """

  def __init__(self, dim: int, *, eps: float = 1e-5, use_scale: bool = True,
               use_bias: bool = True, rngs: nnx.Rngs | None = None):
    del rngs  # Deterministic init; accepted so every block has the same constructor shape.
    if dim <= 0:
      raise ValueError(f"LayerNorm: dim={dim} must be positive")
    self.dim = dim
    self.eps = eps
    self.scale = (
      nnx.Param(jnp.ones((dim,), jnp.float32), out_sharding=("norm",)) if use_scale else None)
    self.bias = (
      nnx.Param(jnp.zeros((dim,), jnp.float32), out_sharding=("norm",)) if use_bias else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    _check_dim(x, self.dim, "LayerNorm")
    h = x.astype(jnp.float32)
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
    h = (h - mean) * jax.lax.rsqrt(var + self.eps)
    if self.scale is not None:
      h = h * self.scale[...]
    if self.bias is not None:
      h = h + self.bias[...]
    return h.astype(x.dtype)


class RMSNorm(nnx.Module):
  """`x / sqrt(mean(x^2) + eps) * scale` over the last axis: `[..., dim] -> [..., dim]`.

  Used per head as QK-norm (flowley §2 "QK-Norm", audiogen_omni §2.4).
  Param `scale` (ones), ('norm',).
  """

  def __init__(self, dim: int, *, eps: float = 1e-6, rngs: nnx.Rngs | None = None):
    del rngs  # Deterministic init.
    if dim <= 0:
      raise ValueError(f"RMSNorm: dim={dim} must be positive")
    self.dim = dim
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((dim,), jnp.float32), out_sharding=("norm",))

  def __call__(self, x: jax.Array) -> jax.Array:
    _check_dim(x, self.dim, "RMSNorm")
    h = x.astype(jnp.float32)
    h = h * jax.lax.rsqrt(jnp.mean(jnp.square(h), axis=-1, keepdims=True) + self.eps)
    return (h * self.scale[...]).astype(x.dtype)


class FeatureNorm(nnx.Module):
  """Per-channel standardisation of input features with dataset statistics:
  `(x - mean) / std`, zero on invalid frames; `[B, L, dim]` (+ mask `[B, L]`) -> float32.

  `mean` and `std` are `Constant`s (not trained, saved with the model): identity until a training
  run sets them from its data (`set_stats`, done once when a run starts: see
  `flowav.train.runtime.data_feature_stats`). Small-valued channels that carry timing, such as
  flowav-demo's frame-difference features (std 0.013 next to 0.2 for colour), then weigh as much as
  the rest from the first step.
  """

  def __init__(self, dim: int, *, min_std: float = 1e-3, rngs: nnx.Rngs | None = None):
    del rngs  # Deterministic init.
    if dim <= 0:
      raise ValueError(f"FeatureNorm: dim={dim} must be positive")
    self.dim, self.min_std = dim, min_std
    self.mean = Constant(jnp.zeros((dim,), jnp.float32), out_sharding=(None,))
    self.std = Constant(jnp.ones((dim,), jnp.float32), out_sharding=(None,))

  def set_stats(self, mean: jax.Array, std: jax.Array) -> None:
    """Sets the statistics `[dim]` each; stds below `min_std` are raised to it (constant channels
    stay finite)."""
    mean, std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)
    if mean.shape != (self.dim,) or std.shape != (self.dim,):
      raise ValueError(f"FeatureNorm.set_stats: mean {mean.shape} / std {std.shape}, expected "
                       f"({self.dim},)")
    self.mean[...] = mean
    self.std[...] = jnp.maximum(std, self.min_std)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    _check_dim(x, self.dim, "FeatureNorm")
    h = (x.astype(jnp.float32) - self.mean[...]) / self.std[...]
    return h if mask is None else h * mask[..., None].astype(h.dtype)
