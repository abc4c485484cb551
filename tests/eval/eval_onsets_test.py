"""Tests for flowav.eval.onsets: detection timing, codec robustness, matching, scores, bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from flowav.audio.codec import MelCodec
from flowav.audio.io import resample
from flowav.eval.onsets import (
  MatchResult,
  aggregate,
  detect_onsets,
  match_onsets,
  onset_envelope,
  paired_bootstrap_f1,
  prf,
)

SR = 22050
HOP_S = 256 / SR  # 11.6 ms


def _clip(seed: int, kind: str, seconds: float = 2.5, noise: float = 1e-3):
  """Clicks or modal impacts (3 decaying partials) at 1-6 random sample-exact times >= 0.2 s
  apart, over white noise. Returns (wav [N] float32, onset times [K] in seconds)."""
  rng = np.random.default_rng(seed)
  n = int(seconds * SR)
  count = int(rng.integers(1, 7))
  while True:
    starts = np.sort(rng.integers(int(0.1 * SR), int((seconds - 0.3) * SR), size=count))
    if np.all(np.diff(starts) >= 0.2 * SR):
      break
  wav = noise * rng.standard_normal(n)
  for s in starts:
    if kind == "click":
      wav[s] += rng.uniform(0.3, 0.9)
      continue
    t = np.arange(n - s) / SR
    amp = rng.uniform(0.1, 0.6)
    for p in range(3):
      wav[s:] += (amp / (p + 1) * np.exp(-rng.uniform(8, 60) * t)
                  * np.sin(2 * np.pi * rng.uniform(150, 4000) * t))
  return wav.astype(np.float32), starts / SR


@pytest.mark.parametrize("kind", ["click", "impact"])
def test_onsets_are_found_within_one_hop(kind):
  results = []
  for seed in range(8):
    wav, times = _clip(seed, kind)
    pred = detect_onsets(wav, SR)
    assert np.all(np.diff(pred) > 0)
    results.append(match_onsets(pred, times, tol_s=HOP_S))
  scores = aggregate(results)
  assert scores["f1"] == 1.0
  errors = np.concatenate([r.errors_s for r in results])
  assert np.abs(errors).max() < HOP_S
  assert scores["median_error_ms"] < 3.0  # measured about 1 ms


@pytest.mark.parametrize("sr", [16000, 44100])
def test_onsets_at_other_sample_rates(sr):
  results = []
  for seed in range(3):
    wav, times = _clip(seed, "impact")
    results.append(match_onsets(detect_onsets(resample(wav, SR, sr), sr), times, tol_s=HOP_S))
  assert aggregate(results)["f1"] == 1.0


@pytest.mark.slow  # ~20 s; `make test` stays under 10 minutes
def test_onsets_survive_the_codec_round_trip():
  """Real-ish audio through mel encode -> Griffin-Lim decode keeps onset F1 >= 0.95."""
  codec = MelCodec()
  results = []
  for seed in range(20):
    wav, times = _clip(100 + seed, "impact" if seed % 4 else "click",
                       noise=[1e-4, 1e-3, 1e-2][seed % 3])
    decoded = codec.decode(codec.encode(wav))
    results.append(match_onsets(detect_onsets(decoded, SR), times, tol_s=0.025))
  scores = aggregate(results)
  assert scores["f1"] >= 0.95  # measured 1.0
  assert scores["median_error_ms"] < 5.0  # measured about 1.5 ms


@pytest.mark.parametrize("shift_frames", [1, 3])
def test_audio_shifted_by_k_frames_gives_errors_of_k_frames(shift_frames):
  wav, times = _clip(7, "impact")
  shift = shift_frames * 256
  lead_in = 1e-3 * np.random.default_rng(1).standard_normal(shift).astype(np.float32)
  shifted = np.concatenate([lead_in, wav[:-shift]])  # same noise floor, events k frames later
  result = match_onsets(detect_onsets(shifted, SR), times, tol_s=0.1)
  assert result.tp == len(times) and result.fp == 0
  np.testing.assert_allclose(result.errors_s, shift_frames * HOP_S, atol=0.003)
  unshifted = detect_onsets(wav, SR)
  # The fine envelope's 33-sample grid bounds the difference to about 1.5 ms.
  np.testing.assert_allclose(detect_onsets(shifted, SR) - unshifted, shift_frames * HOP_S,
                             atol=0.0016)


def test_silence_and_steady_noise_have_no_onsets():
  assert detect_onsets(np.zeros(SR, np.float32), SR).size == 0
  noise = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32) * 0.05
  assert detect_onsets(noise, SR).size == 0


def test_min_gap_keeps_the_stronger_of_two_close_onsets():
  wav = np.zeros(SR, np.float32)
  wav[8000], wav[8000 + int(0.05 * SR)] = 0.9, 0.3
  assert detect_onsets(wav, SR, min_gap_s=0.1).size == 1
  assert detect_onsets(wav, SR, min_gap_s=0.02).size == 2


def test_onset_envelope_shape_and_rate():
  env, rate = onset_envelope(np.zeros(5120, np.float32), SR)
  assert env.shape == (20,) and rate == pytest.approx(SR / 256)
  with pytest.raises(ValueError, match="sample_rate"):
    onset_envelope(np.zeros(5120, np.float32), 16000, config=MelCodec().config)


def test_matching_is_one_to_one():
  result = match_onsets([0.50, 0.505], [0.502], tol_s=0.01)
  assert (result.tp, result.fp, result.fn) == (1, 1, 0)
  assert abs(result.errors_s[0]) <= 0.003


def test_matching_maximises_pairs_before_minimising_error():
  # Greedy nearest matching would pair 0.10 with 0.11 and leave 0.125 unmatched.
  result = match_onsets([0.10, 0.125], [0.09, 0.11], tol_s=0.02)
  assert (result.tp, result.fp, result.fn) == (2, 0, 0)
  np.testing.assert_allclose(result.errors_s, [0.01, 0.015], atol=1e-12)
  far = match_onsets([1.0], [0.5], tol_s=0.1)
  assert (far.tp, far.fp, far.fn) == (0, 1, 1)
  empty = match_onsets([], [0.5, 0.7], tol_s=0.1)
  assert (empty.tp, empty.fp, empty.fn) == (0, 0, 2)


def test_prf_values_and_zero_conventions():
  assert prf(3, 1, 2) == pytest.approx((0.75, 0.6, 6 / 9))
  assert prf(0, 0, 0) == (1.0, 1.0, 1.0)
  assert prf(0, 0, 4) == (0.0, 0.0, 0.0)
  assert prf(0, 2, 0) == (0.0, 0.0, 0.0)
  with pytest.raises(ValueError, match="counts"):
    prf(-1, 0, 0)


def test_aggregate_micro_averages_counts():
  results = [MatchResult(1, 0, 0, np.array([0.002])),
             MatchResult(2, 2, 1, np.array([-0.004, 0.010]))]
  scores = aggregate(results)
  assert (scores["tp"], scores["fp"], scores["fn"], scores["n_clips"]) == (3, 2, 1, 2)
  assert scores["f1"] == pytest.approx(6 / 9)
  assert scores["median_error_ms"] == pytest.approx(4.0)
  assert scores["median_signed_error_ms"] == pytest.approx(2.0)
  assert np.isnan(aggregate([MatchResult(0, 1, 1, np.zeros(0))])["median_error_ms"])
  with pytest.raises(ValueError, match="empty"):
    aggregate([])


def _arm(seed: int, hit_rate: float, clips: int = 40) -> list[MatchResult]:
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(clips):
    refs = int(rng.integers(1, 6))
    tp = int(rng.binomial(refs, hit_rate))
    out.append(MatchResult(tp, int(rng.binomial(3, 1 - hit_rate)), refs - tp, np.zeros(tp)))
  return out


def test_bootstrap_ci_excludes_zero_for_a_clearly_better_model():
  result = paired_bootstrap_f1(_arm(0, 0.9), _arm(1, 0.3), num_resamples=500)
  assert result["diff"] > 0.3
  assert 0 < result["ci_low"] < result["diff"] < result["ci_high"]


def test_bootstrap_ci_includes_zero_for_identical_arms():
  arm = _arm(2, 0.6)
  result = paired_bootstrap_f1(arm, arm, num_resamples=500)
  assert result["diff"] == 0.0 and result["ci_low"] == 0.0 and result["ci_high"] == 0.0
  noisy = paired_bootstrap_f1(_arm(3, 0.6), _arm(4, 0.6), num_resamples=500)
  assert noisy["ci_low"] < 0 < noisy["ci_high"]
  again = paired_bootstrap_f1(_arm(3, 0.6), _arm(4, 0.6), num_resamples=500)
  assert again == noisy  # deterministic given the seed
  with pytest.raises(ValueError, match="same"):
    paired_bootstrap_f1(arm, arm[:-1])
