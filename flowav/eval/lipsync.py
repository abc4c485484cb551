"""Lip/speech sync: a mouth-opening track vs the audio loudness envelope, as lag and correlation
(DESIGN.md, "Evaluation with negative controls": speech, against mismatched video)."""

from __future__ import annotations

import numpy as np
import scipy.stats


def audio_envelope(wav: np.ndarray, sr: int, fps: float, *,
                   num_frames: int | None = None) -> np.ndarray:
  """RMS of `wav` `[N]` per video frame: `[T_v]` float64, frame k covering `[k/fps, (k+1)/fps)`.

  Frame k spans samples `[round(k * sr / fps), round((k + 1) * sr / fps))`. `T_v` defaults to the
  frames the audio fully covers; a larger `num_frames` pads with silence (RMS 0).
  """
  wav = np.asarray(wav, np.float64)
  if wav.ndim != 1:
    raise ValueError(f"audio_envelope: wav must be [N], got shape {wav.shape}")
  if sr <= 0 or fps <= 0:
    raise ValueError(f"audio_envelope: sr={sr} and fps={fps} must be positive")
  if fps > sr:
    raise ValueError(f"audio_envelope: fps={fps} above sr={sr} leaves frames without samples")
  total = int(np.floor(wav.size * fps / sr + 1e-9)) if num_frames is None else int(num_frames)
  if total < 0:
    raise ValueError(f"audio_envelope: num_frames={num_frames} must be >= 0")
  edges = np.round(np.arange(total + 1) * (sr / fps)).astype(np.int64)
  energy = np.concatenate([[0.0], np.cumsum(np.square(wav))])
  clipped = np.minimum(edges, wav.size)
  sums = energy[clipped[1:]] - energy[clipped[:-1]]
  return np.sqrt(np.maximum(sums, 0.0) / np.maximum(np.diff(edges), 1))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
  """Pearson correlation, 0.0 when either input is constant (no NaN)."""
  if np.ptp(a) == 0.0 or np.ptp(b) == 0.0:
    return 0.0
  a = a - a.mean()
  b = b - b.mean()
  denominator = np.sqrt(np.dot(a, a) * np.dot(b, b))
  return float(np.clip(np.dot(a, b) / denominator, -1.0, 1.0))


def lag_correlation(mouth: np.ndarray, envelope: np.ndarray, *,
                    max_lag: int = 5) -> dict[str, float | int | list[float]]:
  """Pearson correlation of `mouth` `[T]` and `envelope` `[T]` at lags -max_lag..max_lag frames.

  Lag L pairs `mouth[t]` with `envelope[t + L]` over their overlap, so a positive best lag means
  the audio comes L frames after the mouth movement. Longer input is truncated to the shorter.
  Returns best_lag_frames (ties go to the smallest |lag|), corr_at_best, corr_at_zero, and
  `corrs` (one per lag, ascending from -max_lag).
  """
  mouth = np.asarray(mouth, np.float64).reshape(-1)
  envelope = np.asarray(envelope, np.float64).reshape(-1)
  length = min(mouth.size, envelope.size)
  if max_lag < 0:
    raise ValueError(f"lag_correlation: max_lag={max_lag} must be >= 0")
  if length - max_lag < 2:
    raise ValueError(f"lag_correlation: {length} frames leave fewer than 2 overlapping frames at "
                     f"max_lag={max_lag}")
  if not (np.all(np.isfinite(mouth[:length])) and np.all(np.isfinite(envelope[:length]))):
    raise ValueError("lag_correlation: mouth and envelope must be finite")
  mouth, envelope = mouth[:length], envelope[:length]
  lags = np.arange(-max_lag, max_lag + 1)
  corrs = []
  for lag in lags:
    if lag >= 0:
      corrs.append(_pearson(mouth[:length - lag], envelope[lag:]))
    else:
      corrs.append(_pearson(mouth[-lag:], envelope[:length + lag]))
  corrs = np.array(corrs)
  # Order candidates by |lag| so np.argmax's first-maximum rule breaks ties towards lag 0.
  by_distance = np.argsort(np.abs(lags), kind="stable")
  best = by_distance[int(np.argmax(corrs[by_distance]))]
  return {
    "best_lag_frames": int(lags[best]),
    "corr_at_best": float(corrs[best]),
    "corr_at_zero": float(corrs[max_lag]),
    "corrs": [float(c) for c in corrs],
  }


def paired_mean_difference(model: np.ndarray, control: np.ndarray, *, num_resamples: int = 2000,
                           seed: int = 0) -> dict[str, float]:
  """mean(model - control) over clips `[N]` scored in both arms, with a paired percentile bootstrap
  95 % interval (clips drawn with replacement, the same ones for both arms): whether the model's
  lip sync beats its control by more than the clip-to-clip spread."""
  model = np.asarray(model, np.float64).reshape(-1)
  control = np.asarray(control, np.float64).reshape(-1)
  if model.size != control.size or model.size < 2:
    raise ValueError(f"paired_mean_difference: model ({model.size}) and control ({control.size}) "
                     "must score the same clips, at least 2")
  res = scipy.stats.bootstrap((model, control), lambda m, c, axis: np.mean(m - c, axis=axis),
                              paired=True, vectorized=True, n_resamples=num_resamples,
                              method="percentile", rng=np.random.default_rng(seed))
  return {"diff": float(np.mean(model - control)), "ci_low": float(res.confidence_interval.low),
          "ci_high": float(res.confidence_interval.high)}


def describe_difference(d: dict[str, float]) -> str:
  """One report line for a `paired_mean_difference` result."""
  return (f"model minus control: {d['diff']:+.3f}, paired bootstrap 95 % CI [{d['ci_low']:+.3f}, "
          f"{d['ci_high']:+.3f}]")
