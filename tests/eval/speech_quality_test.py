"""Known-answer tests of DNSMOS and GE2E speaker similarity on real speech: three flite voices (slt
female, rms and awb male) and, when installed, the human Asterisk prompts (one female speaker).

Measured on 2 shared CPU cores (9.5 s clips, one DNSMOS window each; white noise sigma 0.05):
  DNSMOS ovrl clean -> noisy: slt 2.68 -> 1.86, rms 3.25 -> 2.10, awb 2.84 -> 1.90, human 3.24 -> 1.97
  (bak 3.97-4.17 -> 1.80-2.05).
  GE2E cosine, same voice / other sentence: slt 0.92, rms 0.96, awb 0.93, human 0.97; across voices
  0.48-0.76 (rms vs awb the closest pair).
The bounds below leave at least ~0.1 of margin on each side.
"""

from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest

from flowav.audio.io import resample
from flowav.encoders.weights import WeightsError
from flowav.eval import speech_quality as sq
from tests.eval import asr_testlib as corpus

_HINT = "pip install -e '.[eval]'"
_HAVE_DNSMOS = all(importlib.util.find_spec(m) for m in ("speechmos", "onnxruntime", "librosa"))
_HAVE_GE2E = all(importlib.util.find_spec(m) for m in ("resemblyzer", "webrtcvad", "librosa", "torch"))
needs_dnsmos = pytest.mark.skipif(not _HAVE_DNSMOS, reason=f"{_HINT} (speechmos, onnxruntime, librosa)")
needs_ge2e = pytest.mark.skipif(not _HAVE_GE2E, reason=f"{_HINT} (resemblyzer, webrtcvad-wheels, torch)")
needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="apt-get install flite")
HAVE_HUMAN = corpus.missing_reason() is None

SENTENCES = (
  "the quick brown fox jumps over the lazy dog near the river bank",
  "a small red boat drifts slowly past the old harbour wall today",
  "please call stella and ask her to bring these things with her from the store",
  "we will meet again at seven in the evening after the long concert ends",
)
VOICES = ("slt", "rms", "awb")
RATE = sq.SAMPLE_RATE


def _speak(text: str, voice: str) -> np.ndarray:
  from flowav.data.demo.speech import synthesize  # noqa: PLC0415 -- needs the flite program

  return synthesize(text, voice, RATE)[0]


def _long_clip(voice: str, seconds: float = 9.5) -> np.ndarray:
  """All sentences in `voice`, cut to `seconds` (one DNSMOS window: 9.01 <= length < 10 s)."""
  wav = np.concatenate([_speak(s, voice) for s in SENTENCES])
  assert wav.size >= seconds * RATE
  return wav[: int(seconds * RATE)]


def _human(first: int, count: int) -> np.ndarray:
  """`count` Asterisk prompts joined, at 16 kHz."""
  prompts = corpus.subset(12)[first: first + count]
  return resample(np.concatenate(corpus.load(prompts, corpus.SAMPLE_RATE)), corpus.SAMPLE_RATE, RATE)


@pytest.fixture(scope="module")
def dnsmos_model():
  return sq.load_dnsmos(num_threads=1)


@pytest.fixture(scope="module")
def ge2e():
  return sq.load_ge2e()


# --- input checks, no model needed -----------------------------------------------------------------

def test_partial_starts_follow_resemblyzer_slicing():
  one = sq.PARTIAL_FRAMES * sq.HOP  # 25600 samples, 1.6 s
  assert sq.partial_starts(100) == [0]  # shorter than one partial: one zero-padded partial
  assert sq.partial_starts(one) == [0]  # 2nd partial would hold only 52 % audio: dropped
  # 2nd partial starts at frame 77 (sample 12320); kept once it is >= 75 % audio.
  kept = 77 * sq.HOP + int(np.ceil(0.75 * one))
  assert sq.partial_starts(kept - 1) == [0]
  assert sq.partial_starts(kept) == [0, 77]
  # 10 s: 1001 frames; starts every 77 frames up to 847, whose partial is 96 % audio.
  assert sq.partial_starts(10 * RATE) == list(range(0, 848, 77))


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="empty clip"):
    sq.preprocess(np.zeros(0, np.float32), RATE)
  with pytest.raises(ValueError, match="silent clip"):
    sq.preprocess(np.zeros(RATE, np.float32), RATE)
  with pytest.raises(ValueError, match=r"mono \[N\]"):
    sq.preprocess(np.zeros((2, RATE), np.float32), RATE)
  with pytest.raises(ValueError, match="NaN or inf"):
    sq.preprocess(np.full(RATE, np.nan, np.float32), RATE)
  # Shorter than one 30 ms VAD frame, or no speech at all: kept untrimmed and flagged.
  tiny = np.full(100, 0.1, np.float32)
  wav, voiced = sq.preprocess(tiny, RATE)
  assert not voiced and wav.size == 100
  with pytest.raises(ValueError, match="2 clips but 1 references"):
    sq.speaker_similarity([np.ones(10)] * 2, [np.ones(10)], RATE)
  with pytest.raises(ValueError, match="no clips"):
    sq.dnsmos([], RATE)
  state = {"linear.weight": np.zeros((256, 256))}
  with pytest.raises(WeightsError, match=r"ckpt\.pt: missing linear\.bias"):
    sq.GE2EEncoder(state, source="ckpt.pt")


def test_missing_package_names_the_extra(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in (
    "speechmos", "resemblyzer") else real(name, *a))
  with pytest.raises(ImportError, match=r"pip install -e '\.\[eval\]'"):
    sq.load_dnsmos()
  with pytest.raises(ImportError, match="resemblyzer"):
    sq.find_ge2e_weights()


# --- DNSMOS -------------------------------------------------------------------------------------

@needs_dnsmos
@needs_flite
@pytest.mark.skipif(importlib.util.find_spec("requests") is None, reason="speechmos.dnsmos imports requests")
def test_dnsmos_equals_speechmos_and_is_deterministic(dnsmos_model):
  from speechmos import dnsmos as reference  # noqa: PLC0415

  # 4.6 s is repeated once to 9.2 s (one window); 11.5 s holds two windows, 1 s apart.
  short = _speak(SENTENCES[2], "rms")[: int(4.6 * RATE)]
  long = np.concatenate([_long_clip("slt"), _speak(SENTENCES[0], "slt")])[: int(11.5 * RATE)]
  for wav, windows in ((short, 1), (long, 2)):
    ours = dnsmos_model.score(wav, RATE)
    theirs = reference.run(wav, RATE)
    assert ours["windows"] == windows
    for key in sq.DNSMOS_KEYS:
      assert ours[key] == pytest.approx(float(theirs[f"{key}_mos"]), abs=1e-5), key
  assert dnsmos_model.score(short, RATE) == dnsmos_model.score(short, RATE)
  # Out-of-range samples are clipped (speechmos would refuse them) and counted.
  loud = short * (1.5 / np.abs(short).max())
  assert dnsmos_model.score(loud, RATE)["clipped"] == int(np.count_nonzero(np.abs(loud) > 1)) > 0


@needs_dnsmos
@needs_flite
def test_dnsmos_overall_drops_with_white_noise(dnsmos_model):
  rng = np.random.default_rng(0)
  clips = [(v, _long_clip(v)) for v in VOICES]
  if HAVE_HUMAN:
    clips.append(("human", _human(0, 12)[: int(9.5 * RATE)]))
  clean = [wav for _, wav in clips]
  noisy = [wav + 0.05 * rng.standard_normal(wav.size).astype(np.float32) for wav in clean]
  names = [n for n, _ in clips]
  a, b = sq.dnsmos(clean, RATE, dnsmos_model, names=names), sq.dnsmos(noisy, RATE, dnsmos_model, names=names)
  for ra, rb in zip(a["rows"], b["rows"], strict=True):
    assert ra["windows"] == 1
    assert ra["ovrl"] > 2.5 and ra["bak"] > 3.6, ra  # clean: 2.68-3.25, bak 3.97-4.17
    assert rb["ovrl"] < ra["ovrl"] - 0.5, (ra, rb)  # drops 0.82-1.27
    assert rb["bak"] < 2.4, rb  # 1.80-2.05
  assert a["ovrl"] == pytest.approx(np.mean([r["ovrl"] for r in a["rows"]]))
  if HAVE_HUMAN:
    assert a["rows"][-1]["ovrl"] > 3.0  # human prompts 3.24: better than the flite voices but rms
  # Any input rate: the same speech at 22.05 kHz scores close to the 16 kHz clip.
  wav22 = resample(clean[0], RATE, 22050)
  assert dnsmos_model.score(wav22, 22050)["ovrl"] == pytest.approx(a["rows"][0]["ovrl"], abs=0.1)


# --- GE2E speaker similarity ------------------------------------------------------------------------

@needs_ge2e
@needs_flite
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # resemblyzer imports scipy.ndimage.morphology
def test_ge2e_equals_resemblyzer(ge2e):
  import resemblyzer  # noqa: PLC0415

  reference = resemblyzer.VoiceEncoder("cpu", verbose=False)  # torch 2.13 loads with weights_only=True
  pause = np.zeros(RATE, np.float32)  # a 1 s silence inside, which the VAD trims
  paused = np.concatenate([_speak(SENTENCES[0], "slt"), pause, _speak(SENTENCES[3], "slt")])
  wavs = [_speak(SENTENCES[1], "awb"), paused]
  ours = [sq.preprocess(w, RATE) for w in wavs]
  theirs = [resemblyzer.preprocess_wav(w) for w in wavs]
  for (wav, voiced), ref in zip(ours, theirs, strict=True):
    assert voiced
    np.testing.assert_array_equal(wav, ref)
  assert ours[1][0].size < paused.size - 0.8 * RATE  # most of the pause is gone
  expected = np.stack([reference.embed_utterance(w) for w in theirs])
  np.testing.assert_allclose(ge2e.embed_preprocessed([w for w, _ in ours]), expected, atol=1e-5)


@needs_ge2e
@needs_flite
def test_same_voice_is_closer_than_other_voices(ge2e):
  clips = {v: [_speak(SENTENCES[0], v), _speak(SENTENCES[2], v)] for v in VOICES}
  if HAVE_HUMAN:
    clips["human"] = [_human(0, 4), _human(4, 4)]
  flat = ge2e.embed([w for pair in clips.values() for w in pair], RATE)
  embeds = {v: flat[2 * i: 2 * i + 2] for i, v in enumerate(clips)}
  names = list(embeds)
  for v in names:
    same = float(embeds[v][0] @ embeds[v][1])
    assert same > 0.85, (v, same)  # 0.92-0.97
    for w in names:
      if w != v:
        other = max(float(embeds[v][0] @ embeds[w][1]), float(embeds[v][1] @ embeds[w][0]))
        assert other < same - 0.1, (v, w, same, other)  # at most 0.76 vs >= 0.92


@needs_ge2e
@needs_flite
def test_speaker_similarity_rotation_control(ge2e):
  wavs = [_speak(SENTENCES[1], v) for v in VOICES]
  refs = [resample(_speak(SENTENCES[3], v), RATE, 22050) for v in VOICES]  # other rate, other text
  out = sq.speaker_similarity(wavs, refs, RATE, ge2e, reference_sample_rate=22050, names=VOICES)
  assert out["num_pairs"] == 3 and [r["name"] for r in out["rows"]] == list(VOICES)
  for row in out["rows"]:
    assert row["cosine"] > 0.85 and row["cosine_shuffled"] < row["cosine"] - 0.1, row
  assert out["cosine"] > out["cosine_shuffled"] + 0.15
  single = sq.speaker_similarity(wavs[:1], refs[:1], RATE, ge2e, reference_sample_rate=22050)
  assert single["cosine"] == pytest.approx(out["rows"][0]["cosine"], abs=1e-6)
  assert np.isnan(single["cosine_shuffled"])
