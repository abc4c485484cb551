"""Frame alignment between streams at different rates on one time axis in seconds."""

from __future__ import annotations

import numpy as np


def nearest_source_frames(num_src: int, num_dst: int, src_rate: float, dst_rate: float, *,
                          centre: bool) -> np.ndarray:
  """Source frame read by each target frame when a `src_rate` Hz stream is upsampled to `dst_rate`.

  `centre=False` is torch `interpolate(mode='nearest')`: `src(j) = floor(j * src_rate / dst_rate)`
  (e.g. 10 -> 25 fps: frames 0, 1, 2 -> 0, 3 -> 1). `centre=True` is `mode='nearest-exact'`, which
  samples at frame centres: `src(j) = floor((j + 0.5) * src_rate / dst_rate)` (24/s sync on
  31.25 Hz audio: frame 125, at 4.016 s, reads token 96). Both are clipped to `num_src - 1`.

  Returns:
    int32 `[num_dst]`.
  """
  if num_src <= 0:
    raise ValueError(f"nearest_source_frames: num_src={num_src} must be positive")
  j = np.arange(num_dst, dtype=np.float64) + (0.5 if centre else 0.0)
  return np.minimum(np.floor(j * src_rate / dst_rate), num_src - 1).astype(np.int32)
