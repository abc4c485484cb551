"""Phone-timing dropout: the transcript's phone order without the clip's own timing.

A model that reads each phone's frame count with the transcript (VSSFlow in training, AudioGen-Omni
with `lyrics_aligned`) can place speech from the timing alone and never learn it from the lips:
the demo's Omni at step 5051 reached lip corr 0.70 with the clip's own timing, but 0.20 with
uniform timing and its own video against 0.19 with another clip's (flowav/eval/omni.py). With rate
`config.flow.dropout.p_timing`, a training row gets `uniform_durations` instead, which keep the
row's total speech frames, so only the video can say where each phone falls. This is a training
option, like CFG dropout; the rows' true durations still train a duration predictor. Measured on
the demo's Omni (rate 0.5, step 5043): uniform-timing lip corr 0.68 with its own video vs 0.31 with
another clip's, with speech WER 1.23 against 0.71 without it; that WER swings widely between
checkpoints, so the cost is not settled (README) and the option is off by default.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def uniform_durations(durations: jax.Array, mask: jax.Array) -> jax.Array:
  """`[B, L_p]` durations keeping each row's total over its valid phones (`mask`), spread evenly;
  the first valid phones get the remainder. Masked entries are returned unchanged."""
  durations = jnp.asarray(durations)
  mask = jnp.asarray(mask, bool)
  count = mask.sum(-1, keepdims=True)
  total = jnp.where(mask, durations, 0).sum(-1, keepdims=True)
  base = total // jnp.maximum(count, 1)
  rank = jnp.cumsum(mask, -1) - 1  # each valid phone's index among the row's valid phones
  even = base + (rank < total - base * count)
  return jnp.where(mask, even, durations).astype(durations.dtype)


def drop_timing(durations: jax.Array, mask: jax.Array, key: jax.Array, rate: float) -> jax.Array:
  """Each row independently, with probability `rate`: `uniform_durations`; else unchanged."""
  drop = jax.random.bernoulli(key, rate, (durations.shape[0],))
  return jnp.where(drop[:, None], uniform_durations(durations, mask), durations)
