"""Does a trained model use a condition? Its flow-matching loss with each clip's own condition
against the same clips, same noise and same t, given another clip's condition (the loss gap).

Sampling and scoring a task (WER, pitch, onsets) takes minutes; this takes seconds, and says
whether a condition is read at all. It is how AudioGen-Omni's demo was found to ignore what its
transcript said: at step 3190 its velocity loss at t = 0.3 was 0.1303 with the clip's own
transcript and 0.1306 with another clip's, long before the sampled WERs (1.84 vs 1.82) agreed.

The loss is the training loss's masked velocity MSE (`flowav.train.step.velocity_mse`), on a fixed
grid of t and a fixed set of noise draws (no condition dropout), so the two arms differ only in the condition.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav.train import step

DEFAULT_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)


@functools.lru_cache(maxsize=8)
def _per_example_loss(graphdef: nnx.GraphDef):
  """Jitted (params, rest, batch, t, key) -> per-example velocity MSE `[B]` at the scalar t."""

  @jax.jit
  def fn(params: nnx.State, rest: nnx.State, batch: dict[str, jax.Array], t: jax.Array,
         key: jax.Array) -> jax.Array:
    model = nnx.merge(graphdef, params, rest)
    batch = {**batch, "audio_latents": jnp.asarray(batch["audio_latents"], jnp.float32)}
    x1 = batch["audio_latents"]
    x0 = jax.random.normal(key, x1.shape, x1.dtype)
    times = jnp.full((x1.shape[0],), t, x1.dtype)
    return step.velocity_mse(model, batch, times, x0, model.conditions(batch))[1]

  return fn


def velocity_losses(graphdef: nnx.GraphDef, params: nnx.State, rest: nnx.State,
                    batch: Mapping[str, np.ndarray], *, times: Sequence[float] = DEFAULT_TIMES,
                    num_noise: int = 2, seed: int = 0) -> np.ndarray:
  """Per-example velocity MSE `[len(times), B]`, each averaged over `num_noise` noise draws.

  The draws depend only on `seed`, t's position in `times` and the batch shape, so two batches of
  one shape that differ in a condition are compared on the same noise (a paired comparison).
  """
  if num_noise < 1:
    raise ValueError(f"num_noise={num_noise} must be >= 1")
  fn = _per_example_loss(graphdef)
  batch = {k: np.asarray(v) for k, v in batch.items()}
  out = np.zeros((len(times), len(batch["audio_latents"])), np.float64)
  for i, t in enumerate(times):
    for n in range(num_noise):
      key = jax.random.fold_in(jax.random.key(seed), 1000 * i + n)
      out[i] += np.asarray(fn(params, rest, batch, jnp.float32(t), key)) / num_noise
  return out


def loss_gap(parts: tuple[nnx.GraphDef, nnx.State, nnx.State],
             own: Sequence[Mapping[str, np.ndarray]], other: Sequence[Mapping[str, np.ndarray]],
             *, times: Sequence[float] = DEFAULT_TIMES, num_noise: int = 2, seed: int = 0
             ) -> dict[str, Any]:
  """Velocity loss on the batches `own` and on `other` (the same clips, one condition taken from
  another clip), group by group on the same noise.

  Returns `{"model": mean loss with own conditions, "control": with the others', "ratio":
  control / model (> 1: the condition is used), "by_t": {t: [model, control]}, "num_clips"}`.
  """
  if len(own) != len(other) or not own:
    raise ValueError(f"loss_gap needs as many control batches as batches (>= 1), got {len(own)} "
                     f"and {len(other)}")
  arms = {"model": own, "control": other}
  per_t = {}
  for arm, batches in arms.items():
    per_t[arm] = np.concatenate([velocity_losses(*parts, b, times=times, num_noise=num_noise,
                                                 seed=seed + 7919 * g)
                                 for g, b in enumerate(batches)], axis=1).mean(axis=1)
  model, control = float(per_t["model"].mean()), float(per_t["control"].mean())
  return {"model": model, "control": control, "ratio": control / max(model, 1e-12),
          "by_t": {f"{t:g}": [float(per_t["model"][i]), float(per_t["control"][i])]
                   for i, t in enumerate(times)},
          "num_clips": int(sum(len(b["audio_latents"]) for b in own))}
