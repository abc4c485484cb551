"""Pitch accuracy of sung (or played) audio against a melody: a pYIN F0 track scored note by note.

F0 tracking is librosa's pYIN (Mauch & Dixon, "pYIN: a fundamental frequency estimator using
probabilistic threshold distributions", ICASSP 2014): audio resampled to 16 kHz, 64 ms frames every
10 ms, pitch candidates on a 10-cent grid between `fmin` and `fmax`, and an HMM that decides voicing.

Scoring follows the melody-extraction measures of MIREX / mir_eval (Salamon et al. 2014), with the
reference taken from notes instead of a reference F0 track:
- a frame is a *note frame* when its centre time lies inside a note [start_s, end_s) (later notes
  win where notes overlap); its reference pitch is that note's MIDI pitch;
- raw pitch accuracy (RPA) = voiced note frames within `tolerance_cents` (50) of the reference /
  voiced note frames: the share of the sung frames that are in tune (this is the issue's "voiced
  frames within 50 cents of the melody"; mir_eval divides by all note frames instead, which is
  RPA x voicing recall);
- raw chroma accuracy: the same with octave errors forgiven (cents folded into [-600, 600));
- voicing recall = voiced note frames / note frames; voicing false alarm = voiced frames outside
  notes / frames outside notes;
- median absolute cents error over voiced note frames.
Ratios with an empty denominator are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowav.audio.io import resample

TRACK_RATE = 16000
FRAME_LENGTH = 1024  # 64 ms: two periods of 31 Hz, below DEFAULT_FMIN
HOP_LENGTH = 160  # 10 ms
DEFAULT_FMIN = 55.0  # A1
DEFAULT_FMAX = 1100.0  # about C#6


def _librosa():
  try:
    import librosa  # noqa: PLC0415  (eval-only dependency, slow to import)
  except ImportError as e:
    raise RuntimeError("pitch evaluation needs librosa for its pYIN tracker (PyPI: pip install "
                       "'librosa>=0.11,<0.12')") from e
  return librosa


def track_f0(wav: np.ndarray, sample_rate: int, *, fmin: float = DEFAULT_FMIN,
             fmax: float = DEFAULT_FMAX) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """pYIN F0 of mono audio.

  Args:
    wav: [N] float audio at `sample_rate`.
  Returns:
    (times [T] frame centres in seconds, f0 [T] Hz (NaN where unvoiced), voiced [T] bool).
  """
  wav = np.asarray(wav, np.float32)
  if wav.ndim != 1:
    raise ValueError(f"track_f0: wav must be [N], got shape {wav.shape}")
  if not 0 < fmin < fmax <= TRACK_RATE / 2:
    raise ValueError(f"track_f0: need 0 < fmin={fmin} < fmax={fmax} <= {TRACK_RATE / 2}")
  if not np.all(np.isfinite(wav)):
    raise ValueError("track_f0: wav contains NaN or inf")
  audio = resample(wav, int(sample_rate), TRACK_RATE)
  if len(audio) < FRAME_LENGTH:
    audio = np.pad(audio, (0, FRAME_LENGTH - len(audio)))
  f0, voiced, _ = _librosa().pyin(audio, fmin=fmin, fmax=fmax, sr=TRACK_RATE,
                                  frame_length=FRAME_LENGTH, hop_length=HOP_LENGTH, center=True)
  times = np.arange(len(f0)) * (HOP_LENGTH / TRACK_RATE)
  voiced = np.asarray(voiced, bool) & np.isfinite(f0)
  return times, np.where(voiced, f0, np.nan), voiced


def _check_notes(notes: Sequence[Sequence[float]]) -> np.ndarray:
  """[K, 3] float64 (midi, start_s, end_s) from notes of at least 3 fields (more are ignored)."""
  rows = []
  for k, note in enumerate(notes):
    if len(note) < 3:
      raise ValueError(f"note {k} must be (midi, start_s, end_s, ...), got {note!r}")
    midi, start, end = (float(x) for x in note[:3])
    if not (np.isfinite(midi) and np.isfinite(start) and np.isfinite(end)) or end <= start:
      raise ValueError(f"note {k}: need finite values and end_s > start_s, got {note!r}")
    rows.append((midi, start, end))
  return np.asarray(rows, np.float64).reshape(-1, 3)


def reference_pitch(times: np.ndarray, notes: Sequence[Sequence[float]]) -> np.ndarray:
  """The MIDI pitch sounding at each time: [T] float64, NaN outside every note."""
  ref = np.full(len(times), np.nan)
  for midi, start, end in _check_notes(notes):  # in order: a later note overrides an overlap
    ref[(times >= start) & (times < end)] = midi
  return ref


def score_f0(times: np.ndarray, f0_hz: np.ndarray, voiced: np.ndarray,
             notes: Sequence[Sequence[float]], *, tolerance_cents: float = 50.0
             ) -> dict[str, float]:
  """Scores an F0 track [T] (times, f0 in Hz, voiced flags) against notes (midi, start_s, end_s).

  Returns {"raw_pitch_accuracy", "raw_chroma_accuracy", "voicing_recall",
  "voicing_false_alarm", "median_abs_cents", "note_frames", "voiced_note_frames"}.
  """
  times, f0_hz = np.asarray(times, np.float64), np.asarray(f0_hz, np.float64)
  voiced = np.asarray(voiced, bool)
  if not times.shape == f0_hz.shape == voiced.shape or times.ndim != 1:
    raise ValueError(f"score_f0: times {times.shape}, f0 {f0_hz.shape} and voiced {voiced.shape} "
                     "must be equal [T] shapes")
  voiced = voiced & np.isfinite(f0_hz) & (np.nan_to_num(f0_hz) > 0)
  ref = reference_pitch(times, notes)
  in_note = np.isfinite(ref)
  sung = in_note & voiced
  cents = np.full(len(times), np.nan)
  cents[sung] = 1200.0 * np.log2(f0_hz[sung] / 440.0) + 6900.0 - 100.0 * ref[sung]
  chroma = np.mod(cents[sung] + 600.0, 1200.0) - 600.0

  def ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")

  return {
    "raw_pitch_accuracy": ratio(np.sum(np.abs(cents[sung]) <= tolerance_cents), sung.sum()),
    "raw_chroma_accuracy": ratio(np.sum(np.abs(chroma) <= tolerance_cents), sung.sum()),
    "voicing_recall": ratio(sung.sum(), in_note.sum()),
    "voicing_false_alarm": ratio(np.sum(voiced & ~in_note), np.sum(~in_note)),
    "median_abs_cents": float(np.median(np.abs(cents[sung]))) if sung.any() else float("nan"),
    "note_frames": int(in_note.sum()), "voiced_note_frames": int(sung.sum()),
  }


def pitch_accuracy(wav: np.ndarray, sample_rate: int, notes: Sequence[Sequence[float]], *,
                   tolerance_cents: float = 50.0, fmin: float = DEFAULT_FMIN,
                   fmax: float = DEFAULT_FMAX) -> dict[str, float]:
  """Pitch accuracy of `wav` [N] against `notes` [(midi, start_s, end_s), ...]: `score_f0` of the
  pYIN track (see the module docstring for the measures)."""
  _check_notes(notes)  # fail before the slow tracker
  times, f0, voiced = track_f0(wav, sample_rate, fmin=fmin, fmax=fmax)
  return score_f0(times, f0, voiced, notes, tolerance_cents=tolerance_cents)
