"""Evaluation metrics: onset sync against contact times, and lip/speech sync."""

from __future__ import annotations

from flowav.eval.lipsync import audio_envelope, lag_correlation
from flowav.eval.onsets import (
  MatchResult,
  aggregate,
  detect_onsets,
  match_onsets,
  onset_envelope,
  paired_bootstrap_f1,
  prf,
)

__all__ = [
  "MatchResult", "aggregate", "audio_envelope", "detect_onsets", "lag_correlation",
  "match_onsets", "onset_envelope", "paired_bootstrap_f1", "prf",
]
