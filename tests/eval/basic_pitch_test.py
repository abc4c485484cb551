"""Known-answer tests of the basic_pitch embedder (flowav.eval.basic_pitch_embedder): its windowing
against basic-pitch's own inference code, the posteriorgrams of pure tones, and Fréchet / kernel distances
between sets of melodies. Tests needing the model skip when its nmp.onnx is not there."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys
import time
import types

import numpy as np
import pytest

from flowav.eval import basic_pitch_embedder, distances, embedders

SR = 22050
try:
  MODEL: pathlib.Path | None = basic_pitch_embedder.basic_pitch_model_path()
  _WHY = ""
except FileNotFoundError as e:
  MODEL, _WHY = None, str(e)
_HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_model = pytest.mark.skipif(MODEL is None or not _HAVE_ORT,
                                 reason=_WHY or "pip install 'onnxruntime>=1.32,<2'")


def _tone(midi: float, seconds: float = 1.0, amp: float = 0.3) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return (amp * np.sin(2 * np.pi * 440.0 * 2 ** ((midi - 69) / 12) * t)).astype(np.float32)


def _melody(rng: np.random.Generator, low: int, n_notes: int = 8, note_s: float = 0.25) -> np.ndarray:
  """`n_notes` notes drawn from MIDI [low, low + 12), 3 harmonics, 10 ms attack, 20 ms release."""
  t = np.arange(int(note_s * SR)) / SR
  env = np.minimum(1.0, np.minimum(t / 0.01, (note_s - t) / 0.02))
  notes = []
  for midi in rng.integers(low, low + 12, n_notes):
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    notes.append(env * sum(0.3 / h * np.sin(2 * np.pi * h * f0 * t) for h in (1, 2, 3)))
  return np.concatenate(notes).astype(np.float32)


@pytest.fixture(scope="module")
def emb():
  return embedders.get("basic_pitch", threads=1)


# --- without the model ---------------------------------------------------------------------------

def test_windows_and_unwrapping_follow_basic_pitch_inference():
  n = 5 * SR + 123
  wav = np.arange(1, n + 1, dtype=np.float32)
  windows = basic_pitch_embedder.basic_pitch_windows(wav)
  # 3840 zeros (half of the 30-frame overlap) lead; a 43844-sample window every 36164 samples.
  assert windows.shape == (math.ceil((n + 3840) / 36164), 43844) == (4, 43844)
  assert np.all(windows[0, :3840] == 0) and windows[0, 3840] == 1
  assert windows[1, 0] == 36164 - 3840 + 1
  assert windows[-1, -1] == 0 and windows[-1].max() == n  # the last window is zero-padded
  # Outputs: 15 frames dropped at both ends of each window, cut to floor(n * 86 / 22050) frames.
  frames = np.arange(4)[:, None, None] * 1000 + np.arange(172)[None, :, None] + np.zeros((1, 1, 2))
  out = basic_pitch_embedder.unwrap_basic_pitch(frames, n)
  assert out.shape == (int(n * 86 / 22050), 2) == (430, 2)
  assert out[0, 0] == 15 and out[141, 0] == 156 and out[142, 0] == 1015


def test_fold_pitch_classes_takes_the_max_over_octaves():
  contour = np.zeros((3, 264), np.float32)
  contour[0, 145] = 0.9  # A4 in tune: the middle bin of its semitone
  contour[1, [1, 37, 73]] = [0.2, 0.7, 0.4]
  contour[2, 263] = 0.5  # the partial top octave: 263 = 7 * 36 + 11
  folded = basic_pitch_embedder.fold_pitch_classes(contour)
  assert folded.shape == (3, 36)
  assert folded[0, 1] == pytest.approx(0.9) and folded[1, 1] == pytest.approx(0.7)
  assert folded[2, 11] == pytest.approx(0.5) and folded.sum() == pytest.approx(0.9 + 0.7 + 0.5)


def test_missing_model_or_runtime_names_what_to_install(monkeypatch, tmp_path):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(basic_pitch_embedder, "EXTRACTED_DIR", tmp_path)
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "basic_pitch" else real_find_spec(name, *a))
  assert "basic_pitch" in embedders.available()
  with pytest.raises(FileNotFoundError, match=r"nmp.onnx not found.*make.*basic-pitch==0\.4\.0"):
    embedders.get("basic_pitch")
  with pytest.raises(FileNotFoundError, match="nope.onnx"):
    embedders.get("basic_pitch", model_path=tmp_path / "nope.onnx")
  if _HAVE_ORT:
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.onnx: onnxruntime cannot load it"):
      embedders.get("basic_pitch", model_path=tmp_path / "bad.onnx")
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a))
  with pytest.raises(ImportError, match="needs onnxruntime"):
    embedders.get("basic_pitch")


# --- with the model ------------------------------------------------------------------------------

@needs_model
def test_posteriorgrams_equal_basic_pitchs_own_run_inference(emb, monkeypatch, tmp_path):
  """basic_pitch.inference.run_inference (its ONNX path) from the wheel's own source. Its note
  creation and MIDI dependencies (pretty_midi, mir_eval, resampy) are not needed for the
  posteriorgrams, so they are stubbed where missing; TensorFlow is not needed for ONNX."""
  import soundfile  # noqa: PLC0415

  source = MODEL.parents[3]  # .../basic_pitch/saved_models/icassp_2022/nmp.onnx
  if not (source / "basic_pitch" / "inference.py").is_file():
    pytest.skip(f"basic-pitch's source is not next to {MODEL}")
  missing = {m for m in ("pretty_midi", "mir_eval", "resampy") if importlib.util.find_spec(m) is None}
  if "pretty_midi" in missing:  # inference.py names pretty_midi.PrettyMIDI in an annotation
    monkeypatch.setitem(sys.modules, "pretty_midi", types.SimpleNamespace(PrettyMIDI=object))
  if missing:
    monkeypatch.setitem(sys.modules, "basic_pitch.note_creation", types.ModuleType("note_creation"))
  monkeypatch.syspath_prepend(str(source))
  before = set(sys.modules)
  try:
    from basic_pitch import inference  # noqa: PLC0415

    model = inference.Model(str(MODEL))
    rng = np.random.default_rng(0)
    for n in (1000, 5 * SR + 123):  # one window; four windows
      wav = (_tone(69, n / SR) + 0.05 * rng.standard_normal(n)).astype(np.float32)
      soundfile.write(tmp_path / "clip.wav", wav, SR, subtype="FLOAT")  # read back unresampled
      ref = inference.run_inference(tmp_path / "clip.wav", model)
      ours = emb.posteriorgrams([wav])[0]
      for key in ("note", "onset", "contour"):
        assert ours[key].shape == ref[key].shape
        np.testing.assert_allclose(ours[key], ref[key], atol=1e-5, err_msg=key)
  finally:
    for name in set(sys.modules) - before:
      if name.startswith("basic_pitch"):
        del sys.modules[name]


@needs_model
def test_pure_tones_activate_their_note_and_contour_bins(emb):
  midis = [33, 45, 57, 64, 69, 76, 84, 96]  # A1 .. C7
  post = emb.posteriorgrams([_tone(m) for m in midis])
  x = embedders.embed_audio(emb, [_tone(m) for m in midis], SR)
  assert x.shape == (8, 424)
  for i, (m, p) in enumerate(zip(midis, post)):
    note = p["note"].mean(0)
    assert note.argmax() == m - 21  # key 0 = A0 = MIDI 21
    assert note.max() > 3 * np.sort(note)[-2]  # measured: 0.52..0.64 against <= 0.15
    assert p["contour"].mean(0).argmax() == 3 * (m - 21) + 1  # the middle of its 3 bins
    # Layout: means of [note 88, onset 88, folded contour 36], then their stds.
    np.testing.assert_allclose(x[i, :88], note, atol=1e-6)
    assert x[i, 176:212].argmax() == (3 * (m - 21) + 1) % 36
    np.testing.assert_allclose(x[i, 212 + 88:212 + 176], p["onset"].std(0), atol=1e-6)
  full = embedders.get("basic_pitch", fold_contour=False, threads=1).embed([_tone(69)])
  assert full.shape == (1, 880) and full[0, 176:440].argmax() == 145
  # A third of a semitone flat or sharp: the same note bin, the neighbouring contour bins.
  for cents, shift in ((-33, -1), (33, 1)):
    p = emb.posteriorgrams([_tone(69 + cents / 100)])[0]
    assert p["note"].mean(0).argmax() == 48 and p["contour"].mean(0).argmax() == 145 + shift
  # The onset posteriorgram peaks where the tone starts (0.5 s = frame 43).
  p = emb.posteriorgrams([np.concatenate([np.zeros(SR // 2, np.float32), _tone(69)])])[0]
  assert abs(int(p["onset"][:, 48].argmax()) - 43) <= 2
  with pytest.raises(ValueError, match="shorter than one basic-pitch frame"):
    emb.embed([np.zeros(200, np.float32)])


@needs_model
def test_frechet_distance_separates_melodies_an_octave_apart(emb):
  rng = np.random.default_rng(0)
  n = 16
  low_a = [_melody(rng, 60) for _ in range(n)]  # 2 s each, C4..B4
  low_b = [_melody(rng, 60) for _ in range(n)]
  high = [_melody(rng, 72) for _ in range(n)]  # C5..B5
  start = time.perf_counter()
  xa, xb, xh = (embedders.embed_audio(emb, s, SR) for s in (low_a, low_b, high))
  per_clip = (time.perf_counter() - start) / (3 * n)
  print(f"basic_pitch: {per_clip * 1000:.0f} ms per 2 s clip")  # measured ~70 ms on 1 thread
  assert per_clip < 1.0
  same = distances.frechet_distance(xa, xb, shrinkage="ledoit_wolf")
  octave = distances.frechet_distance(xa, xh, shrinkage="ledoit_wolf")
  # Measured: 0.18 against 0.91.
  assert same < 0.35 * octave
  kd_same = distances.kernel_distance(xa, xb, subset_size=n).mean
  kd_octave = distances.kernel_distance(xa, xh, subset_size=n).mean
  assert kd_same < 0.2 * kd_octave  # measured: 2.0e-4 against 3.8e-3
