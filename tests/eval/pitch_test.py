"""Pitch accuracy (flowav.eval.pitch): exact scores on hand-made F0 tracks, and pYIN on synthetic
harmonic tones with known answers (in tune, detuned by a semitone, scored against another melody)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from flowav.eval import pitch

SR = 22050
MELODY = [(60, 0.10, 0.50), (64, 0.50, 0.90), (67, 0.90, 1.40), (72, 1.40, 1.90), (55, 1.90, 2.30)]
# A control melody over the same times: every note at least 2 semitones from MELODY's.
CONTROL = [(57, 0.10, 0.50), (67, 0.50, 0.90), (64, 0.90, 1.40), (69, 1.40, 1.90), (59, 1.90, 2.30)]


def harmonic_melody(notes, seconds: float = 2.5, detune_cents: float = 0.0) -> np.ndarray:
  """A phase-continuous tone with 6 harmonics (amplitudes 1/k) playing `notes`, silent between
  them, with 10 ms raised-cosine edges."""
  t = np.arange(int(seconds * SR)) / SR
  hz = np.zeros_like(t)
  for midi, start, end in notes:
    hz[(t >= start) & (t < end)] = 440.0 * 2 ** ((midi - 69 + detune_cents / 100) / 12)
  phase = 2 * np.pi * np.cumsum(hz) / SR
  gain = (hz > 0).astype(np.float64)
  ramp = np.ones(int(0.01 * SR)) / int(0.01 * SR)
  gain = np.convolve(gain, ramp, mode="same")
  wav = sum(np.sin(k * phase) / k for k in range(1, 7)) * gain
  return (0.3 * wav / np.max(np.abs(wav))).astype(np.float32)


@pytest.fixture(scope="module")
def in_tune_track():
  return pitch.track_f0(harmonic_melody(MELODY), SR)


def test_in_tune_tone_scores_near_one(in_tune_track):
  times, f0, voiced = in_tune_track
  assert times.shape == f0.shape == voiced.shape and abs(times[1] - times[0] - 0.01) < 1e-9
  assert np.all(np.isnan(f0[~voiced])) and np.all(f0[voiced] > 0)
  scores = pitch.score_f0(times, f0, voiced, MELODY)
  assert scores["raw_pitch_accuracy"] >= 0.97, scores
  assert scores["voicing_recall"] >= 0.9, scores
  assert scores["median_abs_cents"] <= 10.0, scores
  assert scores["voicing_false_alarm"] <= 0.25, scores  # frames within a window of a note edge
  assert scores["note_frames"] == pytest.approx(220, abs=2)  # 2.2 s of notes at 100 frames/s


def test_control_melody_scores_low(in_tune_track):
  scores = pitch.score_f0(*in_tune_track, CONTROL)
  assert scores["raw_pitch_accuracy"] <= 0.05, scores
  assert scores["median_abs_cents"] >= 200.0, scores
  # Voicing does not depend on the pitches: the control has the same note frames.
  assert scores["voicing_recall"] == pytest.approx(
    pitch.score_f0(*in_tune_track, MELODY)["voicing_recall"])


def test_detuned_by_a_semitone_scores_near_zero():
  scores = pitch.pitch_accuracy(harmonic_melody(MELODY, detune_cents=100.0), SR, MELODY)
  assert scores["raw_pitch_accuracy"] <= 0.05, scores
  assert 90.0 <= scores["median_abs_cents"] <= 110.0, scores
  # 30 cents sharp is still within the 50-cent tolerance, and notes may carry extra fields.
  near = pitch.pitch_accuracy(harmonic_melody(MELODY, detune_cents=30.0), SR,
                              [(*n, "la") for n in MELODY])
  assert near["raw_pitch_accuracy"] >= 0.95 and 20.0 <= near["median_abs_cents"] <= 40.0, near


def test_score_f0_exact_counts():
  times = np.arange(100) * 0.01  # frames at 0.00 .. 0.99 s
  notes = [(69, 0.2, 0.5), (57, 0.5, 0.8)]  # 30 + 30 note frames
  f0 = np.full(100, np.nan)
  f0[20:50] = 440.0  # exact
  f0[50:60] = 220.0 * 2 ** (40 / 1200)  # 40 cents sharp: in tolerance
  f0[60:70] = 440.0  # an octave up: wrong pitch, right chroma
  f0[90:95] = 300.0  # voiced outside the notes: false alarm
  voiced = np.isfinite(f0)  # note frames 70..79 unvoiced
  s = pitch.score_f0(times, f0, voiced, notes)
  assert s["note_frames"] == 60 and s["voiced_note_frames"] == 50
  assert s["raw_pitch_accuracy"] == pytest.approx(40 / 50)
  assert s["raw_chroma_accuracy"] == pytest.approx(1.0)
  assert s["voicing_recall"] == pytest.approx(50 / 60)
  assert s["voicing_false_alarm"] == pytest.approx(5 / 40)
  assert s["median_abs_cents"] == pytest.approx(0.0, abs=1e-9)  # 30 zeros, 10 x 40, 10 x 1200
  assert pitch.score_f0(times, f0, voiced, notes, tolerance_cents=30.0)["raw_pitch_accuracy"] == (
    pytest.approx(30 / 50))
  # A voiced flag on a NaN or non-positive F0 does not count as voiced.
  s2 = pitch.score_f0(times, np.where(voiced, f0, 0.0), np.ones(100, bool), notes)
  assert s2["voiced_note_frames"] == 50 and s2["voicing_false_alarm"] == pytest.approx(5 / 40)


def test_reference_pitch_and_empty_cases():
  times = np.array([0.0, 0.1, 0.2, 0.3])
  ref = pitch.reference_pitch(times, [(60, 0.0, 0.25), (62, 0.2, 0.3)])  # overlap: later wins
  assert ref[:2].tolist() == [60, 60] and ref[2] == 62 and math.isnan(ref[3])
  s = pitch.score_f0(times, np.full(4, np.nan), np.zeros(4, bool), [(60, 0.0, 0.25)])
  assert math.isnan(s["raw_pitch_accuracy"]) and math.isnan(s["median_abs_cents"])
  assert s["voicing_recall"] == 0.0 and s["voiced_note_frames"] == 0
  s = pitch.score_f0(times, np.full(4, 440.0), np.ones(4, bool), [])
  assert math.isnan(s["voicing_recall"]) and s["voicing_false_alarm"] == 1.0


def test_bad_input_errors(monkeypatch):
  times = np.zeros(3)
  with pytest.raises(ValueError, match="note 1"):
    pitch.score_f0(times, times, times > 0, [(60, 0.0, 1.0), (62, 1.0, 1.0)])
  with pytest.raises(ValueError, match=r"note 0 must be \(midi, start_s, end_s"):
    pitch.score_f0(times, times, times > 0, [(60, 0.0)])
  with pytest.raises(ValueError, match="equal"):
    pitch.score_f0(times, np.zeros(4), times > 0, [])
  with pytest.raises(ValueError, match=r"must be \[N\]"):
    pitch.track_f0(np.zeros((2, 100)), SR)
  with pytest.raises(ValueError, match="fmin"):
    pitch.track_f0(np.zeros(100), SR, fmin=500.0, fmax=400.0)
  with pytest.raises(ValueError, match="NaN"):
    pitch.track_f0(np.full(100, np.nan), SR)
  monkeypatch.setitem(sys.modules, "librosa", None)  # an absent package
  with pytest.raises(RuntimeError, match="pip install 'librosa"):
    pitch.track_f0(np.zeros(100, np.float32), SR)
