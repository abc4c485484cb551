"""Tests for flowav.eval.desync: the known-answer offsets of shifted flowav-demo impact audio, the
undefined cases, the mismatched-contacts control, and input checks."""

from __future__ import annotations

import numpy as np
import pytest

from flowav.audio.codec import MelCodec
from flowav.data.demo import impacts
from flowav.data.demo.build import DemoConfig
from flowav.eval import desync

CODEC = MelCodec()
FRAME_RATE = CODEC.frame_rate  # latent frames per second, 86.13 (11.6 ms hop)
VIDEO_FPS = 25.0
SAMPLES_PER_VIDEO_FRAME = 882  # 22050 / 25: exact
MAX_LAG_S = 0.2  # 5 video frames, below half the 8-frame minimum gap between contacts


@pytest.fixture(scope="module")
def clips():
  """Eight real flowav-demo impact clips (2 s, 1-4 contacts, four materials): (wav, contacts_s)."""
  cfg = DemoConfig()
  out = []
  for seed in range(8):
    clip = impacts.make_impact_clip(np.random.SeedSequence(seed), cfg)
    out.append((clip["wav"], np.asarray(clip["truth"]["contact_times_s"], np.float64)))
  return out


def _delay(wav: np.ndarray, samples: int) -> np.ndarray:
  """`wav` played `samples` later (negative: earlier), zero-filled, same length."""
  out = np.zeros_like(wav)
  if samples >= 0:
    out[samples:] = wav[:wav.size - samples]
  else:
    out[:samples] = wav[-samples:]
  return out


@pytest.mark.parametrize("rate", [None, VIDEO_FPS])
@pytest.mark.parametrize("k", [-3, -1, 0, 2, 4])
def test_audio_delayed_by_k_video_frames_gives_k_frames(clips, k, rate):
  """Unit: video frames (40 ms). Audio delayed by k * 882 samples, encoded with the mel codec;
  the estimate at the latent rate (11.6 ms samples) and at the video rate (40 ms samples, parabolic
  refinement) is k * 40 ms within 6 ms (measured: |error| <= 4.8 ms, bias about -2 ms)."""
  errors, corrs = [], []
  for wav, contacts in clips:
    latents = CODEC.encode(_delay(wav, k * SAMPLES_PER_VIDEO_FRAME))
    res = desync.clip_offset(latents, FRAME_RATE, contacts, max_lag_s=MAX_LAG_S, rate=rate)
    errors.append(res.offset_s - k / VIDEO_FPS)
    corrs.append(res.peak_corr)
  assert np.max(np.abs(errors)) < 0.006, np.round(np.asarray(errors) * 1e3, 1)
  assert np.mean(corrs) > 0.8  # measured 0.86-0.97


@pytest.mark.parametrize("k", [-3, -1, 2, 4])
def test_latents_shifted_by_k_latent_frames_gives_k_frames(clips, k):
  """Unit: latent frames (256 samples). Shifting the latent sequence itself (the generated-latent
  case) moves the estimate by exactly k frames relative to the unshifted clip."""
  floor = float(np.log(CODEC.config.log_floor))
  for wav, contacts in clips:
    latents = CODEC.encode(wav)
    shifted = np.full_like(latents, floor)
    if k > 0:
      shifted[k:] = latents[:-k]
    else:
      shifted[:k] = latents[-k:]
    base = desync.clip_offset(latents, FRAME_RATE, contacts, max_lag_s=MAX_LAG_S).offset_s
    moved = desync.clip_offset(shifted, FRAME_RATE, contacts, max_lag_s=MAX_LAG_S).offset_s
    assert (moved - base) * FRAME_RATE == pytest.approx(k, abs=0.05)


@pytest.mark.parametrize("delay_s", [-0.0573, -0.013, 0.0, 0.021, 0.0912])
def test_sign_and_subsample_refinement_on_known_trains(delay_s):
  """An envelope that is the contact train delayed by delay_s (positive = audio late) is found
  to well under one sample (100 Hz here) by the parabolic refinement."""
  rate, contacts = 100.0, np.array([0.31, 0.77, 1.42])
  video = desync.contact_signal(contacts, 200, rate, sigma_s=0.02)
  audio = desync.contact_signal(contacts + delay_s, 200, rate, sigma_s=0.02)
  res = desync.estimate_offset(audio, video, rate, MAX_LAG_S)
  assert res.offset_s == pytest.approx(delay_s, abs=0.002)
  assert res.peak_corr > 0.99
  unrefined = desync.estimate_offset(audio, video, rate, MAX_LAG_S, refine=False).offset_s
  assert unrefined * rate == round(unrefined * rate)
  assert abs(unrefined - delay_s) <= 0.5 / rate + 1e-9


def test_mismatched_contacts_control_fails(clips):
  """Negative control: each clip's audio against the NEXT clip's contacts. Matched clips are all
  within one video frame; the control is not (measured: median |offset| 79 ms vs 2 ms, 3/8 within
  40 ms by coincidence, mean peak correlation 0.39 vs 0.97)."""
  matched, control = [], []
  for i, (wav, contacts) in enumerate(clips):
    latents = CODEC.encode(wav)
    other = clips[(i + 1) % len(clips)][1]
    matched.append(desync.clip_offset(latents, FRAME_RATE, contacts, max_lag_s=MAX_LAG_S))
    control.append(desync.clip_offset(latents, FRAME_RATE, other, max_lag_s=MAX_LAG_S))
  good = desync.summarize(matched, tol_s=1 / VIDEO_FPS)
  bad = desync.summarize(control, tol_s=1 / VIDEO_FPS)
  assert good["frac_within_tol"] == 1.0 and good["median_abs_offset_ms"] < 6.0
  assert good["mean_peak_corr"] > 0.9
  assert bad["frac_within_tol"] <= 0.5
  assert bad["median_abs_offset_ms"] > 40.0
  assert bad["mean_peak_corr"] < good["mean_peak_corr"] - 0.3


def test_no_events_and_flat_audio_are_nan_not_errors(clips):
  wav, contacts = clips[0]
  latents = CODEC.encode(wav)
  for none in (np.zeros((0,)), np.array([5.0, -0.1])):  # no contacts / all outside the 2 s window
    res = desync.clip_offset(latents, FRAME_RATE, none, max_lag_s=MAX_LAG_S)
    assert np.isnan(res.offset_s) and np.isnan(res.peak_corr) and not res.has_events
  silent = np.full_like(latents, np.log(CODEC.config.log_floor))
  flat = desync.clip_offset(silent, FRAME_RATE, contacts, max_lag_s=MAX_LAG_S)
  assert np.isnan(flat.offset_s) and flat.peak_corr == 0.0 and flat.has_events
  good = desync.clip_offset(latents, FRAME_RATE, contacts, max_lag_s=MAX_LAG_S)
  no_events = desync.clip_offset(latents, FRAME_RATE, np.zeros((0,)), max_lag_s=MAX_LAG_S)
  summary = desync.summarize([good, flat, no_events], tol_s=0.04)
  # The clip without contacts is left out; flat audio counts as a miss with correlation 0.
  assert summary["n_scored"] == 2 and summary["n_no_events"] == 1 and summary["n_undefined"] == 1
  assert summary["frac_within_tol"] == 0.5
  assert summary["mean_peak_corr"] == pytest.approx(good.peak_corr / 2)
  assert summary["median_abs_offset_ms"] == pytest.approx(abs(good.offset_s) * 1e3)
  only_none = desync.summarize([no_events], tol_s=0.04)
  assert np.isnan(only_none["median_abs_offset_ms"]) and np.isnan(only_none["frac_within_tol"])


def test_desync_matches_per_clip_and_envelope_grid(clips):
  latents = [CODEC.encode(w) for w, _ in clips[:3]]
  contacts = [c for _, c in clips[:3]]
  summary, per_clip = desync.desync(latents, contacts, FRAME_RATE, max_lag_s=MAX_LAG_S, tol_s=0.04)
  assert per_clip[1] == desync.clip_offset(latents[1], FRAME_RATE, contacts[1], max_lag_s=MAX_LAG_S)
  assert summary["n_clips"] == 3
  t = latents[0].shape[0]  # 172 frames for 2 s
  assert desync.onset_envelope(latents[0], FRAME_RATE).shape == (t,)
  assert desync.onset_envelope(latents[0], FRAME_RATE, rate=VIDEO_FPS).shape == (50,)


def test_contact_signal_bumps_and_impulses():
  sig = desync.contact_signal([0.1, 0.5], 100, 100.0, sigma_s=0.01)
  assert sig[10] == pytest.approx(1.0) and sig[50] == pytest.approx(1.0)
  assert sig[11] == pytest.approx(np.exp(-0.5))
  imp = desync.contact_signal([0.1, 0.504, 2.0], 100, 100.0, sigma_s=0.0)
  assert imp.sum() == 2.0 and imp[10] == 1.0 and imp[50] == 1.0


def test_bad_inputs_name_the_argument():
  lat = np.zeros((50, 80), np.float32)
  with pytest.raises(ValueError, match="latents"):
    desync.onset_envelope(np.zeros((50,)), FRAME_RATE)
  with pytest.raises(ValueError, match="frame_rate"):
    desync.onset_envelope(lat, 0.0)
  with pytest.raises(ValueError, match="contact_times_s"):
    desync.contact_signal(np.zeros((2, 2)), 10, 25.0)
  with pytest.raises(ValueError, match="num_frames"):
    desync.contact_signal([0.1], -1, 25.0)
  with pytest.raises(ValueError, match="contacts_signal shape"):
    desync.estimate_offset(np.zeros(40), np.zeros(39), 25.0, 0.2)
  with pytest.raises(ValueError, match="envelope must be"):
    desync.estimate_offset(np.zeros((4, 10)), np.zeros((4, 10)), 25.0, 0.2)
  with pytest.raises(ValueError, match="max_lag_s"):
    desync.estimate_offset(np.zeros(40), np.zeros(40), 25.0, -0.1)
  with pytest.raises(ValueError, match="max_lag_s"):
    desync.estimate_offset(np.zeros(5), np.zeros(5), 25.0, 0.2)  # lag 5 leaves no overlap
  with pytest.raises(ValueError, match="latents .1. and contacts .2."):
    desync.desync([lat], [np.zeros(1), np.zeros(1)], FRAME_RATE, max_lag_s=0.2, tol_s=0.04)
  with pytest.raises(ValueError, match="results is empty"):
    desync.summarize([], tol_s=0.04)
