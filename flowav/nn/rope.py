"""Rotary position embedding (RoPE) with float positions, partial rotation and per-token on/off.

- Partial RoPE: only the first `rot_dim` dims of each head rotate (vssflow §2.4: 32 of 64).
- Two layouts: 'half' = rotate-half, cos/sin laid out `[f_0..f_k, f_0..f_k]` (diffusers,
  vssflow §2.4); 'interleaved' = pairs `(x_2k, x_2k+1)` (Flux/MMAudio, audiogen_omni §2.6,
  flowley §2).
- Positions are floats in one reference time unit, so streams at different frame rates share one
  time axis (PAAPI, audiogen_omni §2.6: `p = (i / r_stream) * r_ref`); see `time_positions`.
- `enabled=False` tokens are returned untouched (PAAPI: no rotation on caption tokens).
- Positions given as a numpy array (built from static shapes, as `time_positions` returns them)
  get their cos/sin tables computed once at trace time and baked into the program. From traced
  positions XLA:CPU fuses sin/cos into each layer's q/k fusion and evaluates them for every head
  and element: ~0.5 ms per attention layer at AudioGen-Omni's mmaudio_s shapes, ~5 % of a
  bfloat16 velocity evaluation (benchmarks/omni_sample_speed.py).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

LAYOUTS = ("half", "interleaved")


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  """rot_dim: rotated dims per head (even; 0 = no RoPE); theta: base; layout: see LAYOUTS."""
  rot_dim: int
  theta: float = 10000.0
  layout: str = "half"

  def __post_init__(self):
    if self.rot_dim < 0 or self.rot_dim % 2:
      raise ValueError(f"RopeConfig: rot_dim={self.rot_dim} must be a non-negative even number")
    if self.layout not in LAYOUTS:
      raise ValueError(f"RopeConfig: layout={self.layout!r} must be one of {LAYOUTS}")
    if self.theta <= 0:
      raise ValueError(f"RopeConfig: theta={self.theta} must be positive")


def rope_frequencies(rot_dim: int, theta: float = 10000.0) -> jax.Array:
  """`f_k = theta ** (-2k / rot_dim)`, k < rot_dim // 2: float32 `[rot_dim // 2]` (vssflow §2.4)."""
  if rot_dim < 0 or rot_dim % 2:
    raise ValueError(f"rope_frequencies: rot_dim={rot_dim} must be a non-negative even number")
  return jnp.asarray(_frequencies(rot_dim, theta))


def _frequencies(rot_dim: int, theta: float) -> np.ndarray:
  k = np.arange(rot_dim // 2, dtype=np.float32)
  return np.float32(theta) ** (np.float32(-2.0) * k / np.float32(rot_dim))


def rope_tables(positions: jax.Array | np.ndarray,
                cfg: RopeConfig) -> tuple[jax.Array | np.ndarray, jax.Array | np.ndarray]:
  """cos and sin of `positions [..., L] * f`: float32 `[..., L, rot_dim // 2]` each.

  numpy positions give numpy tables (constants under jit, see the module docstring).
  """
  freqs = _frequencies(cfg.rot_dim, cfg.theta)
  if isinstance(positions, np.ndarray):
    angles = positions.astype(np.float32)[..., None] * freqs
    return np.cos(angles), np.sin(angles)
  angles = jnp.asarray(positions, jnp.float32)[..., None] * freqs
  return jnp.cos(angles), jnp.sin(angles)


def time_positions(num_frames: int, frame_rate: float, ref_rate: float,
                   offset: float = 0.0) -> np.ndarray:
  """Positions `[num_frames]` float32 of a stream at `frame_rate` on a time axis in `ref_rate` units.

  Frame i sits at `(i / frame_rate) * ref_rate + offset` (PAAPI, audiogen_omni §2.6), e.g. 8-fps
  video against 31.25 Hz audio latents: frame i -> i * 3.90625.
  """
  if frame_rate <= 0 or ref_rate <= 0:
    raise ValueError(
      f"time_positions: frame_rate={frame_rate} and ref_rate={ref_rate} must be positive")
  step, offset = np.float32(ref_rate / frame_rate), np.float32(offset)
  return np.arange(num_frames, dtype=np.float32) * step + offset  # numpy: static, see the docstring


def _rotate(x: jax.Array, cos: jax.Array, sin: jax.Array, layout: str) -> jax.Array:
  """Rotates `x [..., rot_dim]` by angles whose cos/sin are `[..., rot_dim // 2]`."""
  if layout == "half":
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  pairs = x.reshape(*x.shape[:-1], -1, 2)
  even, odd = pairs[..., 0], pairs[..., 1]
  rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
  return rotated.reshape(x.shape)


def apply_rope(x: jax.Array, positions: jax.Array, cfg: RopeConfig, *,
               enabled: jax.Array | None = None) -> jax.Array:
  """Rotates the first `cfg.rot_dim` dims of each head of `x [B, L, H, Dh]` by `positions * f`.

  positions: `[B, L]` or `[L]` floats. enabled: optional `[B, L]` (or `[L]`) bool; False tokens are
  returned unchanged. Angles and rotation run in float32; the result has x's dtype.
  """
  if x.ndim != 4:
    raise ValueError(f"apply_rope: x must be [B, L, H, Dh], got shape {x.shape}")
  batch, length, _, head_dim = x.shape
  if cfg.rot_dim > head_dim:
    raise ValueError(f"apply_rope: rot_dim={cfg.rot_dim} exceeds head_dim={head_dim}")
  if not isinstance(positions, np.ndarray):
    positions = jnp.asarray(positions)
  if positions.shape not in ((length,), (batch, length)):
    raise ValueError(
      f"apply_rope: positions shape {positions.shape} must be [L]=({length},) or [B, L]="
      f"({batch}, {length})")
  if enabled is not None and jnp.shape(enabled) not in ((length,), (batch, length)):
    raise ValueError(f"apply_rope: enabled shape {jnp.shape(enabled)} must be [L] or [B, L]")
  if cfg.rot_dim == 0:
    return x
  cos, sin = rope_tables(positions, cfg)
  # [B or 1, L, 1, rot/2]: broadcast over heads.
  cos, sin = (jnp.reshape(a, (-1, length, 1, cfg.rot_dim // 2)) for a in (cos, sin))
  head = x[..., :cfg.rot_dim].astype(jnp.float32)
  rotated = _rotate(head, cos, sin, cfg.layout).astype(x.dtype)
  out = jnp.concatenate([rotated, x[..., cfg.rot_dim:]], axis=-1)
  if enabled is None:
    return out
  enabled = jnp.broadcast_to(jnp.asarray(enabled, bool), (batch, length))
  return jnp.where(enabled[:, :, None, None], out, x)
