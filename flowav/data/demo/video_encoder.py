"""The built-in frozen video encoder of flowav-demo: fixed image statistics, no weights.

For each frame at the video rate (the demo renders 25 fps, so `RATE` = 25 feature frames per
second, one per video frame) it computes a FEATURE_DIM = 256 vector:
  [0:192]   the frame's RGB in [0, 1], area-averaged over an 8 x 8 grid of blocks, flattened in
            (row, column, channel) order -- what is where (ball, surface, face, mouth);
  [192:256] the absolute luma (ITU-R BT.601) difference to the previous frame, area-averaged over
            the same 8 x 8 grid, flattened row-major -- where something moves (all zero for the
            first frame).
Frames whose height or width is not a multiple of 8 are split into 8 near-equal integer blocks.

This is the documented encoder of the demo dataset; models take any [T, D] features, so features
from CLIP, Synchformer, etc. (`preprocess`) plug in the same way with their own rate and width.
"""

from __future__ import annotations

import numpy as np

GRID = 8
FEATURE_DIM = GRID * GRID * 3 + GRID * GRID  # 256
RATE = "one feature frame per input video frame (25 per second in flowav-demo)"
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601


def encode_frames(frames: np.ndarray) -> np.ndarray:
  """Encodes video frames into per-frame features.

  Args:
    frames: [T, H, W, 3] uint8 RGB, with H, W >= 8.
  Returns:
    [T, 256] float32 features, values in [0, 1].
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"encode_frames: frames must be uint8 [T, H, W, 3], got {frames.dtype} "
                     f"{frames.shape}")
  if frames.shape[1] < GRID or frames.shape[2] < GRID:
    raise ValueError(f"encode_frames: frames must be at least {GRID}x{GRID}, got "
                     f"{frames.shape[1]}x{frames.shape[2]}")
  rgb = frames.astype(np.float32) / 255.0  # [T, H, W, 3]
  colour = _area_pool(rgb).reshape(len(frames), -1)  # [T, 192]
  luma = rgb @ _LUMA  # [T, H, W]
  motion = np.zeros_like(luma)
  motion[1:] = np.abs(luma[1:] - luma[:-1])
  movement = _area_pool(motion[..., None]).reshape(len(frames), -1)  # [T, 64]
  return np.concatenate([colour, movement], axis=1).astype(np.float32)


def _area_pool(x: np.ndarray) -> np.ndarray:
  """Means over an 8 x 8 grid of blocks: [T, H, W, C] -> [T, 8, 8, C]."""
  h, w = x.shape[1:3]
  rows = np.linspace(0, h, GRID + 1).astype(int)
  cols = np.linspace(0, w, GRID + 1).astype(int)
  sums = np.add.reduceat(np.add.reduceat(x, rows[:-1], axis=1), cols[:-1], axis=2)
  area = np.diff(rows)[:, None] * np.diff(cols)[None, :]  # [8, 8]
  return sums / area[None, :, :, None]
