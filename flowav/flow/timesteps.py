"""Training distributions of the flow time t in [0, 1] (t = 0 noise, t = 1 data).

Which system uses which:
  - VSSFlow §3 and SyncFlow §3: t ~ U(0, 1)                                     -> `UniformT`.
  - AudioGen-Omni §3 (MMAudio recipe): t = sigmoid(N(0, 1))                      -> `LogitNormalT`.
  - Flowley §3: "cosmap", t = 1 - 1 / (tan(pi u / 2) + 1), u ~ U(0, 1)          -> `CosMapT`.
  - SD3 resolution shift (optional, any base)                                    -> `ShiftedT`.
Every sampler is a frozen dataclass with `sample(key, shape) -> float32 array in [0, 1]`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Protocol

import jax
import jax.numpy as jnp


class TimeSampler(Protocol):
  def sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    ...


@dataclasses.dataclass(frozen=True)
class UniformT:
  """t ~ U[0, 1)."""

  def sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.uniform(key, shape, jnp.float32)


@dataclasses.dataclass(frozen=True)
class LogitNormalT:
  """t = sigmoid(mean + std z), z ~ N(0, 1) (Esser et al. 2024, "SD3", §3.1).

  The density of logit(t) is N(mean, std^2), so median(t) = sigmoid(mean) and, for mean = 0,
  E[t] = 1/2. Training concentrates on mid-path times, where the velocity is hardest to predict.
  """
  mean: float = 0.0
  std: float = 1.0

  def __post_init__(self):
    if not self.std > 0:
      raise ValueError(f"LogitNormalT: std must be > 0, got {self.std}")

  def sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    z = jax.random.normal(key, shape, jnp.float32)
    return jax.nn.sigmoid(self.mean + self.std * z)


@dataclasses.dataclass(frozen=True)
class CosMapT:
  """Flowley's "cosmap" sampler: t = 1 - 1 / (tan(pi u / 2) + 1), u ~ U[0, 1).

  CDF F(t) = (2 / pi) atan(t / (1 - t)), density 2 / (pi (1 - 2t + 2t^2)): symmetric about 1/2
  and heavier in the middle than uniform (Flowley spec §3).
  """

  def sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    u = jax.random.uniform(key, shape, jnp.float32)
    # Same map written as tan / (tan + 1): stays finite (-> 1) as tan(pi u / 2) grows.
    s = jnp.tan(0.5 * math.pi * u)
    return jnp.clip(s / (s + 1.0), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class ShiftedT:
  """SD3 time shift (Esser et al. 2024, §5.3.2) applied on top of a `base` sampler.

  SD3 shifts the noise level sigma = 1 - t to sigma' = s sigma / (1 + (s - 1) sigma). In the
  flowav convention (t = 1 is data) this is

      t' = t / (t + s (1 - t)),

  a monotone map of [0, 1] onto itself with fixed endpoints; s > 1 moves samples towards the
  noise end (t' <= t), s < 1 towards the data end, s = 1 is the identity.
  """
  base: TimeSampler
  shift: float = 1.0

  def __post_init__(self):
    if not self.shift > 0:
      raise ValueError(f"ShiftedT: shift must be > 0, got {self.shift}")

  def sample(self, key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    t = self.base.sample(key, shape)
    return t / (t + self.shift * (1.0 - t))


_SAMPLERS = {"uniform": UniformT, "logit_normal": LogitNormalT, "cosmap": CosMapT}


def make_t_sampler(name: str, **kwargs: Any) -> TimeSampler:
  """Builds a time sampler by name (a config string).

  Args:
    name: 'uniform', 'logit_normal' (kwargs `mean`, `std`) or 'cosmap'.
    **kwargs: the sampler's fields, plus an optional `shift` (> 0) that wraps the result in
      `ShiftedT`; shift None or 1.0 leaves it unshifted.
  Raises:
    ValueError: an unknown name (the message lists the valid ones) or an unknown keyword.
  """
  if name not in _SAMPLERS:
    raise ValueError(f"Unknown t sampler {name!r} (config.flow.t_sampler); valid: "
                     f"{sorted(_SAMPLERS)}")
  shift = kwargs.pop("shift", None)
  cls = _SAMPLERS[name]
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(f"t sampler {name!r} takes {sorted(fields) + ['shift']}; got unknown "
                     f"keyword(s) {unknown}")
  sampler = cls(**kwargs)
  if shift is None or float(shift) == 1.0:
    return sampler
  return ShiftedT(sampler, float(shift))
