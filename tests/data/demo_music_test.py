"""Tests of the flowav-demo *music* subset: determinism, duration, level, audio that matches the
ground-truth note list (chroma and onsets, against another clip's notes as the control), the
MIDI writer, and disjoint splits."""

from __future__ import annotations

import importlib.util
import os
import shutil

import numpy as np
import pytest

from flowav.data.demo import music
from flowav.eval import onsets

SR = 22050
_MISSING = [why for ok, why in (
  (importlib.util.find_spec("music21") is not None, "pip install 'music21>=10.5,<11'"),
  (shutil.which("fluidsynth") is not None, "apt-get install fluidsynth"),
  (any(os.path.isfile(p) for p, _ in music.SOUNDFONTS),
   "apt-get install musescore-general-soundfont-small"),
) if not ok]
needs_render = pytest.mark.skipif(bool(_MISSING), reason="; ".join(_MISSING))
needs_music21 = pytest.mark.skipif(importlib.util.find_spec("music21") is None,
                                   reason="pip install 'music21>=10.5,<11'")


@pytest.fixture(scope="module")
def clips():
  if _MISSING:
    pytest.skip("; ".join(_MISSING))
  return [music.make_music_clip(np.random.SeedSequence([11, 3, 1, i]), index=i, split="validation")
          for i in range(6)]


def _chroma(wav: np.ndarray, hop: int = 1024, n_fft: int = 4096) -> np.ndarray:
  """[T, 12] magnitude per pitch class (60 Hz - 2 kHz bins), frame t centred at t * hop."""
  frames = np.lib.stride_tricks.sliding_window_view(np.pad(wav, n_fft // 2), n_fft)[::hop]
  mag = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1))
  freqs = np.fft.rfftfreq(n_fft, 1 / SR)
  band = (freqs > 60) & (freqs < 2000)
  pitch_class = np.round(12 * np.log2(freqs[band] / 440) + 69).astype(int) % 12
  return np.stack([mag[:, band][:, pitch_class == k].sum(axis=1) for k in range(12)], axis=1)


def _note_chroma(notes: list[dict], num_frames: int, hop: int = 1024) -> np.ndarray:
  """[T, 12] count of sounding notes per pitch class on the same frame grid."""
  times = np.arange(num_frames) * hop / SR
  out = np.zeros((num_frames, 12))
  for n in notes:
    out[(times >= n["start_s"]) & (times < n["end_s"]), n["midi"] % 12] += 1
  return out


def _similarity(audio: np.ndarray, notes: np.ndarray) -> float:
  """Mean cosine of per-frame chroma vectors over frames where notes sound."""
  keep = notes.sum(axis=1) > 0
  a = audio[keep] / (np.linalg.norm(audio[keep], axis=1, keepdims=True) + 1e-9)
  b = notes[keep] / np.linalg.norm(notes[keep], axis=1, keepdims=True)
  return float((a * b).sum(axis=1).mean())


def test_clip_shape_level_and_truth(clips):
  forms = set()
  for clip in clips:
    wav, truth = clip["wav"], clip["truth"]
    assert wav.dtype == np.float32 and wav.shape == (4 * SR,) and clip["frames"] is None
    assert 0.05 < np.sqrt(np.mean(wav.astype(np.float64) ** 2)) < 0.15  # -20 dBFS target
    assert np.max(np.abs(wav)) <= 0.89 + 1e-6 and np.max(np.abs(wav[-3:])) < 0.01  # fade-out
    assert truth["score"] in music.split_items(truth["form"], "validation")
    assert truth["instrument"] in music.INSTRUMENTS
    assert music.INSTRUMENTS[truth["instrument"]].phrase in clip["caption"]
    notes = truth["notes"]
    assert len(notes) >= 3
    assert all(0 <= n["start_s"] < n["end_s"] <= 4.0 + 1e-6 for n in notes)
    lo, hi = music.FORMS[[f.name for f in music.FORMS].index(truth["form"])].tempo_bpm
    assert lo <= truth["beat_bpm"] <= hi
    forms.add(truth["form"])
  assert forms == {f.name for f in music.FORMS}  # index round-robins over the forms


def test_audio_pitch_content_matches_its_own_notes(clips):
  chromas = [_chroma(c["wav"]) for c in clips]
  sims = np.array([[_similarity(a, _note_chroma(c["truth"]["notes"], len(a))) for c in clips]
                   for a in chromas])
  correct = np.diag(sims)
  mismatched = sims[~np.eye(len(clips), dtype=bool)].reshape(len(clips), -1)
  # Measured: correct 0.71-0.93, mismatched 0.01-0.46.
  assert np.all(correct > 0.6), correct
  assert np.all(correct > mismatched.max(axis=1) + 0.1), sims


@needs_render
def test_onsets_of_a_plucked_render_match_the_notes():
  # Two excerpts of one chorale on the guitar at 120 and 90 bpm: each audio's onsets match its own
  # note list, not the other's (the beat grids drift apart).
  score = music.load_score(music.split_items("chorale", "test")[0])
  found, refs = [], []
  for start, us_per_quarter in zip(score.measure_offsets[[1, 4]], (500_000, 666_667)):
    span_q = 4.0 / (us_per_quarter / 1e6)
    notes = music.excerpt_notes(score.notes, float(start), span_q)
    midi = music.midi_bytes(notes[:, :3], np.full(len(notes), 96), 24, us_per_quarter,
                            int(round(span_q * 480)))
    wav = music.render_midi(midi, music.find_soundfont()[0], SR, 4 * SR)
    found.append(onsets.detect_onsets(wav, SR))
    refs.append(np.unique(notes[:, 0]) * us_per_quarter / 1e6 / 480)
  for k in range(2):
    own = onsets.prf(*_counts(found[k], refs[k]))[2]
    other = onsets.prf(*_counts(found[k], refs[1 - k]))[2]
    print(f"onset F1 own {own:.2f} other {other:.2f}")
    assert own >= 0.8 and own > other + 0.3, (own, other)


def _counts(pred: np.ndarray, ref: np.ndarray) -> tuple[int, int, int]:
  r = onsets.match_onsets(pred, ref, 0.05)
  return r.tp, r.fp, r.fn


@needs_render
def test_same_seed_same_audio():
  seed = np.random.SeedSequence([11, 3, 0, 6])
  a = music.make_music_clip(seed, index=2, split="train", seconds=2.5)
  b = music.make_music_clip(seed, index=2, split="train", seconds=2.5)
  c = music.make_music_clip(np.random.SeedSequence([11, 3, 0, 7]), index=2, split="train",
                            seconds=2.5)
  assert a["wav"].shape == (int(round(2.5 * SR)),)
  assert np.array_equal(a["wav"], b["wav"]) and a["truth"] == b["truth"] and a["caption"] == b["caption"]
  assert a["truth"]["score"] == c["truth"]["score"]  # the index picks the score ...
  assert not np.array_equal(a["wav"], c["wav"])  # ... the seed the excerpt, tempo and instrument


@needs_music21
def test_splits_are_disjoint_and_cover_every_score():
  keys = {}
  for split in music.SPLITS:
    names = [n for f in music.FORMS for n in music.split_items(f.name, split)]
    assert len(names) == len(set(names)) and music.available(split) == len(names) > 0
    keys[split] = {music._split_key(n) for n in names}
  assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
  assert not keys["validation"] & keys["test"]
  for form in music.FORMS:
    every = set(music._form_items(form.name))
    assert every == {n for s in music.SPLITS for n in music.split_items(form.name, s)}
  assert music.available("train") > 4 * music.available("test")  # about 80 / 10 / 10
  assert music._split_key("bach/bwv18.5-lz.mxl") == music._split_key("bach/bwv18.5-w.mxl") == "bach/bwv18.5"
  with pytest.raises(ValueError, match="unknown split"):
    music.split_items("chorale", "dev")


@needs_music21
def test_chorale_splits_agree_with_the_song_subset():
  chorales = pytest.importorskip("flowav.data.demo.chorales")
  names = [n for n in music._form_items("chorale") if music._split_key(n) in set(chorales.chorale_names())]
  assert len(names) > 50
  for name in names:
    assert music.split_of(name) == chorales.split_of(music._split_key(name)), name


def test_excerpt_notes_cut_and_merge():
  notes = np.array([
    [0.0, 2.0, 60, 0], [0.0, 1.0, 60, 1],  # unison doubling: keep the longer
    [1.0, 3.0, 64, 0], [2.0, 2.5, 64, 1],  # re-struck pitch cuts the held one
    [3.5, 6.0, 67, 0],  # runs past the window end: cut
    [4.0, 5.0, 72, 0], [-1.0, 0.5, 55, 0],  # outside the window
  ])
  got = music.excerpt_notes(notes, 0.0, 4.0)
  assert got.tolist() == [[0, 960, 60, 0], [480, 960, 64, 0], [960, 1200, 64, 1],
                          [1680, 1920, 67, 0]]


@needs_music21
def test_midi_bytes_read_back_by_music21():
  import music21  # noqa: PLC0415

  notes = np.array([[0, 480, 60], [0, 960, 64], [480, 960, 60], [960, 1200, 67]])
  data = music.midi_bytes(notes, np.array([90, 80, 70, 60]), 73, 600_000, 1920)
  mf = music21.midi.MidiFile()
  mf.readstr(data)
  assert mf.ticksPerQuarterNote == 480 and len(mf.tracks) == 1
  events, tick = [], 0
  for e in mf.tracks[0].events:
    if isinstance(e, music21.midi.DeltaTime):
      tick += e.time
    elif e.type == music21.midi.ChannelVoiceMessages.NOTE_ON and e.velocity > 0:
      events.append((tick, e.pitch, e.velocity))
    elif e.type == music21.midi.ChannelVoiceMessages.PROGRAM_CHANGE:
      assert e.data == 73
    elif e.type == music21.midi.MetaEvents.SET_TEMPO:
      assert int.from_bytes(e.data, "big") == 600_000
  assert events == [(0, 60, 90), (0, 64, 80), (480, 60, 70), (960, 67, 60)]
  assert tick == 1920


@needs_render
def test_missing_programs_and_soundfonts_are_clear_errors(monkeypatch, tmp_path):
  monkeypatch.delenv("FLOWAV_SOUNDFONT", raising=False)
  monkeypatch.setattr(music, "SOUNDFONTS", ((str(tmp_path / "none.sf2"), "fluid-soundfont-gm"),))
  with pytest.raises(FileNotFoundError, match="musescore-general-soundfont-small"):
    music.find_soundfont()
  monkeypatch.setenv("FLOWAV_SOUNDFONT", str(tmp_path / "gone.sf3"))
  with pytest.raises(FileNotFoundError, match="FLOWAV_SOUNDFONT"):
    music.find_soundfont()
  monkeypatch.setenv("PATH", str(tmp_path))
  with pytest.raises(RuntimeError, match="apt-get install fluidsynth"):
    music.render_midi(b"", "/x.sf2", SR, 100)
