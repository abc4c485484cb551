"""Tests for flowav.eval.lipsync: per-video-frame audio RMS and lag/correlation."""

from __future__ import annotations

import numpy as np
import pytest

from flowav.eval.lipsync import audio_envelope, lag_correlation, paired_mean_difference


def _smooth_signal(seed: int, length: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.convolve(rng.standard_normal(length + 8), np.hanning(9), mode="valid")


def test_audio_envelope_is_rms_per_video_frame():
  sr, fps = 16000, 25.0  # 640 samples per frame
  levels = np.array([0.0, 0.5, 0.1, 1.0])
  wav = np.repeat(levels, 640) * np.where(np.arange(4 * 640) % 2, 1.0, -1.0)
  env = audio_envelope(wav, sr, fps)
  np.testing.assert_allclose(env, levels, atol=1e-12)
  padded = audio_envelope(wav[:-100], sr, fps, num_frames=5)
  assert padded.shape == (5,)
  np.testing.assert_allclose(padded[:3], levels[:3], atol=1e-12)
  assert padded[4] == 0.0 and 0 < padded[3] < 1.0  # partly covered frame, then silence


def test_audio_envelope_handles_fractional_samples_per_frame():
  sr, fps = 22050, 29.97
  wav = np.ones(22050)
  env = audio_envelope(wav, sr, fps)
  assert env.shape == (29,)
  np.testing.assert_allclose(env, 1.0)
  with pytest.raises(ValueError, match="wav"):
    audio_envelope(np.ones((2, 100)), sr, fps)


@pytest.mark.parametrize("shift", [-3, 0, 2, 4])
def test_lag_correlation_recovers_a_known_shift(shift):
  base = _smooth_signal(0, 120)
  mouth = base[10:110]
  envelope = base[10 - shift:110 - shift]  # envelope[t + shift] == mouth[t]
  out = lag_correlation(mouth, envelope, max_lag=5)
  assert out["best_lag_frames"] == shift
  assert out["corr_at_best"] == pytest.approx(1.0)
  assert len(out["corrs"]) == 11 and out["corrs"][5] == out["corr_at_zero"]
  if shift:
    assert out["corr_at_zero"] < 0.99


def test_lag_correlation_of_unrelated_signals_is_weak():
  out = lag_correlation(_smooth_signal(1, 400), _smooth_signal(2, 400), max_lag=5)
  assert abs(out["corr_at_zero"]) < 0.3


def test_constant_inputs_give_zero_correlation_without_nan():
  out = lag_correlation(np.full(50, 0.1), _smooth_signal(3, 50), max_lag=3)
  assert out["best_lag_frames"] == 0
  assert out["corr_at_best"] == 0.0 and out["corr_at_zero"] == 0.0
  assert not np.any(np.isnan(out["corrs"]))


def test_lag_correlation_rejects_too_short_input():
  with pytest.raises(ValueError, match="max_lag"):
    lag_correlation(np.arange(5.0), np.arange(5.0), max_lag=4)
  with pytest.raises(ValueError, match="finite"):
    lag_correlation(np.array([0.0, np.nan, 1.0, 2.0]), np.arange(4.0), max_lag=1)


def test_paired_difference_separates_a_real_gap_from_clip_spread():
  """Clips vary a lot (sd 0.2) but the model beats its control on each by ~0.05: the paired
  interval excludes 0; an arm equal to the control up to noise gets an interval around 0."""
  rng = np.random.default_rng(0)
  control = rng.normal(0.4, 0.2, 32)
  better = paired_mean_difference(control + 0.05 + rng.normal(0, 0.02, 32), control, seed=1)
  assert 0.03 < better["diff"] < 0.07 and better["ci_low"] > 0, better
  same = paired_mean_difference(control + rng.normal(0, 0.02, 32), control, seed=1)
  assert same["ci_low"] < 0 < same["ci_high"], same
  # The same seed gives the same interval.
  assert paired_mean_difference(control + 0.05, control, seed=3) == paired_mean_difference(
    control + 0.05, control, seed=3)
  with pytest.raises(ValueError, match="same clips"):
    paired_mean_difference(control, control[:5])
