"""Winograd's minimal filtering F(2, 3) for 'same' 3-tap convolutions over time.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), §4: two outputs
of a 3-tap correlation, `y0 = d0 g0 + d1 g1 + d2 g2` and `y1 = d1 g0 + d2 g1 + d3 g2`, from the
four products

  m0 = (d0 - d2) g0            m1 = (d1 + d2) (g0 + g1 + g2) / 2
  m3 = (d1 - d3) g2            m2 = (d2 - d1) (g0 - g1 + g2) / 2

as `y0 = m0 + m1 + m2`, `y1 = m1 - m2 - m3`. Here each `d` is a frame `[C_in]` and each `g` a tap
`[C_in, C_out]`, so each product is a matmul over channels: per pair of frames 4 `C_in x C_out`
matmuls replace 6, a third fewer FLOPs. The filter transform is done once when a sampler prepares
the weights (`flowav.nn.inference`); each call transforms the inputs and outputs with adds only.
At AudioGen-Omni's `mmaudio_s` shapes, where k3 convs hold ~80 % of the FLOPs, a float32
velocity evaluation took 0.135 instead of 0.156 s, a bfloat16 one 0.105 instead of 0.115 s
(benchmarks/omni_sample_speed.py, alternating calls in one process): the smaller matmuls (half
the rows, a third of the im2col depth) run a little below the direct conv's FLOP rate.

Accuracy: float32 results differ from the direct conv at rounding level (~1e-6 relative). In
bfloat16 the transformed inputs and taps are rounded once each, like the direct conv's inputs and
taps, so the error vs float32 is of the same order: ~10 % above the direct convs' on a trained
demo model's velocity (benchmarks/omni_layout_error.py).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

TAPS = 3  # F(2, 3) only: the k3 convs of MMAudio-style blocks


def filter_transform(kernel: jax.Array) -> jax.Array:
  """Conv taps `[3, in, out]` -> the four transformed taps `[4, in, out]` (`G g`), float32."""
  if kernel.ndim != 3 or kernel.shape[0] != TAPS:
    raise ValueError(f"winograd.filter_transform: kernel must be [3, in, out], got {kernel.shape}")
  g0, g1, g2 = (kernel[k].astype(jnp.float32) for k in range(TAPS))
  return jnp.stack([g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2])


def conv3(x: jax.Array, transformed: jax.Array, compute_dtype: Any) -> jax.Array:
  """'same' zero-padded 3-tap correlation `y[t] = sum_k x[t + k - 1] @ g_k`, float32 `[B, L, out]`.

  x `[B, L, in]`, transformed `[4, in, out]` from `filter_transform`. Odd L is padded by one zero
  frame whose output is dropped. The four products run as one batched dot with float32
  accumulation, inputs in `compute_dtype`.
  """
  batch, length, channels = x.shape
  even = length + length % 2
  tiles = even // 2
  padded = jnp.pad(x, ((0, 0), (1, even - length + 1), (0, 0)))  # frames -1 .. even
  # Tile i reads frames 2i-1 .. 2i+2 of x: d0, d1 from the first pair, d2, d3 from the next.
  first = padded[:, :even].reshape(batch, tiles, 2, channels)
  second = padded[:, 2:even + 2].reshape(batch, tiles, 2, channels)
  d0, d1, d2, d3 = first[:, :, 0], first[:, :, 1], second[:, :, 0], second[:, :, 1]
  inputs = jnp.stack([d0 - d2, d1 + d2, d2 - d1, d1 - d3]).astype(compute_dtype)
  m = jnp.einsum("kbnc,kco->kbno", inputs, transformed.astype(compute_dtype),
                 preferred_element_type=jnp.float32)
  y0, y1 = m[0] + m[1] + m[2], m[1] - m[2] - m[3]
  return jnp.stack([y0, y1], axis=2).reshape(batch, even, -1)[:, :length]
