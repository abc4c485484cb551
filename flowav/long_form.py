"""Sound longer than the model's window: overlapping windows, each one continuing the last.

A model trained on `config.data.clip_seconds` windows makes any length here. Window k covers
audio frames [a_k, b_k), every window full length (the last one is moved back to end at the
clip's end, so it overlaps more). Its frames already made by earlier windows are fixed to those
latents (`Run.sample(known=...)`: they follow their own noisy path, so the model sees them as in
training), and the model continues them into the new frames, conditioned on the video features
of the window's own time span and on the caption. Released video-to-audio models stop at their
training length (8-10 s; users_want.md §3.2); chunking with a shared overlap is the usual fix.

Spoken conditions are not split: a transcript's or lyrics' phone timing spans the whole text, so
speech and song stay within one window (`inputs.condition_clip` says so).
"""

from __future__ import annotations

import jax
import numpy as np

from flowav import generate
from flowav.data import inputs, pipeline, records


def plan_windows(num_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
  """[start, end) frame spans covering [0, num_frames) with `window`-frame windows whose starts
  step by `window - overlap`; the last window ends at `num_frames` (its overlap may be larger).

  One window [0, num_frames) when num_frames <= window. Raises ValueError unless
  0 <= overlap < window and num_frames > 0.
  """
  if num_frames <= 0 or window <= 0 or not 0 <= overlap < window:
    raise ValueError(f"plan_windows: need num_frames > 0 and 0 <= overlap < window, got "
                     f"num_frames={num_frames}, window={window}, overlap={overlap}")
  if num_frames <= window:
    return [(0, num_frames)]
  starts = list(range(0, num_frames - window, window - overlap)) + [num_frames - window]
  return [(a, a + window) for a in starts]


def sample_long(run: generate.Run, info: records.DatasetInfo, lengths: pipeline.Lengths, *,
                duration: float, key: jax.Array, video_features: np.ndarray | None = None,
                caption: str | None = None, overlap_s: float | None = None,
                clip_id: str = "sample") -> tuple[np.ndarray, list[tuple[int, int]]]:
  """(codec latents `[floor(duration * audio rate), C]`, the windows' [start, end) frame spans)
  for sound of any `duration` (seconds).

  `video_features` `[T_v, D]` at the dataset's video rate (`inputs.read_video_features`) must
  cover `duration`; `overlap_s` is how much of each window continues the previous one (default a
  quarter of the window).
  """
  audio_rate, video_rate = float(info.rates["audio"]), float(info.rates["video"])
  window_s = float(run.config.data.clip_seconds)
  overlap_s = window_s / 4 if overlap_s is None else overlap_s
  num_frames = int(np.floor(duration * audio_rate + 1e-6))
  window = int(np.floor(window_s * audio_rate + 1e-6))
  overlap = int(round(overlap_s * audio_rate))
  if not 0 <= overlap < window:
    raise ValueError(f"--window_overlap={overlap_s} s must be in [0, {window_s:.2f}) s (the "
                     "model's window, config.data.clip_seconds)")
  if video_features is not None:
    video_s = video_features.shape[0] / video_rate
    if duration > video_s + 1.0 / video_rate:
      raise ValueError(f"--duration={duration} s is longer than the video ({video_s:.2f} s)")
  out = np.zeros((num_frames, lengths.audio_dim), np.float32)
  done = 0  # frames [0, done) are made
  spans = plan_windows(num_frames, window, overlap)
  for k, (a, b) in enumerate(spans):
    feats = None
    if video_features is not None:  # the window's span at the video rate
      v0 = min(int(round(a * video_rate / audio_rate)), video_features.shape[0] - 1)
      v1 = max(v0 + 1, min(int(round(b * video_rate / audio_rate)), video_features.shape[0]))
      feats = video_features[v0:v1]
    clip = inputs.features_clip(info, lengths, window_s, video_features=feats, clip_id=clip_id,
                                caption=caption, duration=(b - a) / audio_rate)
    batch = inputs.stack([clip.prepared])
    known = np.zeros_like(batch["audio_latents"])
    known_mask = np.zeros(known.shape[:2], bool)
    carried = done - a  # frames of this window an earlier one made
    known[0, :carried], known_mask[0, :carried] = out[a:done], True
    lat = run.sample(batch, jax.random.fold_in(key, k), known=known, known_mask=known_mask)
    out[done:b] = lat[0, carried:b - a]
    done = b
  return out, spans
