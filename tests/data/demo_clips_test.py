"""Ground-truth checks of the demo clip generators: sound at the contacts, the ball's lowest
points, phone durations and the mouth track."""

from __future__ import annotations

import numpy as np
import pytest

from flowav.audio.codec import MelCodec
from flowav.data.demo import impacts, speech
from flowav.data.demo.build import DemoConfig

CFG = DemoConfig()
SR = 22050
SEEDS = [np.random.SeedSequence([7, 0, 0, i]) for i in range(6)]


@pytest.fixture(scope="module")
def impact_clips():
  return [impacts.make_impact_clip(seed, CFG) for seed in SEEDS]


@pytest.fixture(scope="module")
def speech_clips():
  return [speech.make_speech_clip(np.random.SeedSequence([7, 1, 0, i]), CFG) for i in range(4)]


def test_impact_clip_shapes_and_caption(impact_clips):
  for clip in impact_clips:
    assert clip["frames"].shape == (50, 64, 64, 3) and clip["frames"].dtype == np.uint8
    assert clip["wav"].shape == (44100,) and clip["wav"].dtype == np.float32
    assert np.max(np.abs(clip["wav"])) <= 0.9 + 1e-6
    truth = clip["truth"]
    assert truth["material"] in impacts.MATERIALS and truth["material"] in clip["caption"]
    assert truth["ball_colour"] in clip["caption"]
    words = {1: "once", 2: "twice", 3: "three times", 4: "four times"}
    assert clip["caption"].endswith(words[len(truth["contact_frames"])])


def test_contact_frames_follow_the_rules():
  rng = np.random.default_rng(0)
  counts = set()
  for _ in range(300):
    frames = impacts.sample_contact_frames(rng, 50)
    counts.add(len(frames))
    assert 1 <= len(frames) <= 4
    assert frames.min() >= 3 and frames.max() <= 46
    assert np.all(np.diff(frames) >= 8)
  assert counts == {1, 2, 3, 4}
  with pytest.raises(ValueError, match="too short"):
    impacts.sample_contact_frames(rng, 6)


def _short_energy(wav: np.ndarray, window: int) -> np.ndarray:
  return np.convolve(wav.astype(np.float64) ** 2, np.ones(window) / window, mode="valid")


def test_sound_onsets_at_contact_times(impact_clips):
  for clip in impact_clips:
    wav, truth = clip["wav"], clip["truth"]
    starts = truth["contact_samples"]
    assert starts == [round(t * SR) for t in truth["contact_times_s"]]
    assert np.all(wav[:starts[0]] == 0)  # silence until the first contact
    window = int(0.001 * SR)  # 1 ms energy windows
    energy = _short_energy(wav, window)  # energy[i] covers wav[i:i + window]
    for start in starts:
      # The largest rise of 1 ms energy within +-20 ms of the contact is at the contact.
      lo, hi = start - int(0.02 * SR), start + int(0.02 * SR)
      rise = energy[lo + window:hi] - energy[lo:hi - window]  # energy after i minus before i
      onset = lo + window + int(np.argmax(rise))
      assert abs(onset - start) <= int(0.003 * SR), (truth["material"], start, onset)
      before = energy[start - window]
      after = energy[start]
      assert after > 2.0 * before


def _ball_centre_rows(frames: np.ndarray, rgb: list[int]) -> np.ndarray:
  """Row centroid of the pixels of the ball's colour, per frame."""
  close = np.all(np.abs(frames.astype(int) - np.asarray(rgb)) < 30, axis=-1)  # [T, H, W]
  rows = np.arange(frames.shape[1])[None, :, None]
  return (close * rows).sum(axis=(1, 2)) / np.maximum(close.sum(axis=(1, 2)), 1)


def test_contacts_are_the_balls_lowest_points(impact_clips):
  for clip in impact_clips:
    truth = clip["truth"]
    rows = _ball_centre_rows(clip["frames"], truth["ball_rgb"])
    lowest = [t for t in range(1, len(rows) - 1) if rows[t] > rows[t - 1] and rows[t] > rows[t + 1]]
    assert lowest == truth["contact_frames"]
    # In the ground truth the ball rests on the floor exactly at contacts and is above it elsewhere
    # (in particular it does not land again after the last contact).
    on_floor = np.isclose(truth["ball_y"], truth["floor_y"] - truth["ball_radius"], atol=1e-3)
    assert np.flatnonzero(on_floor).tolist() == truth["contact_frames"]


def test_impacts_are_deterministic_per_seed():
  a = impacts.make_impact_clip(np.random.SeedSequence([1, 2, 3]), CFG)
  b = impacts.make_impact_clip(np.random.SeedSequence([1, 2, 3]), CFG)
  c = impacts.make_impact_clip(np.random.SeedSequence([1, 2, 4]), CFG)
  assert np.array_equal(a["wav"], b["wav"]) and np.array_equal(a["frames"], b["frames"])
  assert not np.array_equal(a["wav"], c["wav"])


def test_materials_have_distinct_timbres():
  rng = np.random.default_rng(0)
  centroids, decays = {}, {}
  for name, material in impacts.MATERIALS.items():
    hit = impacts.impact_sound(material, float(np.mean(material.base_hz)), 1.0, SR, SR, rng)
    spectrum = np.abs(np.fft.rfft(hit))
    freqs = np.fft.rfftfreq(len(hit), 1 / SR)
    centroids[name] = (spectrum * freqs).sum() / spectrum.sum()
    energy = np.cumsum(hit[::-1] ** 2)[::-1]
    decays[name] = np.argmax(energy < 1e-3 * energy[0]) / SR  # time to -30 dB of energy
  assert centroids["glass"] > centroids["metal"] > centroids["wood"]
  assert decays["metal"] > decays["glass"] > decays["wood"] > decays["stone"]


def test_speech_durations_sum_to_latent_frames(speech_clips):
  for clip in speech_clips:
    durations, ids = clip["phone_durations"], clip["phone_ids"]
    assert durations.dtype == np.int32 and ids.dtype == np.int32
    assert durations.sum() == 44100 // 256 == 172
    assert np.all(durations >= 1) and len(durations) == len(ids)
    assert ids[0] == ids[-1] == speech.PHONE_IDS["pau"]
    assert np.all((ids >= 1) & (ids <= len(speech.PHONES)))
    phones = clip["truth"]["phones"]
    assert [p["frames"] for p in phones] == durations.tolist()
    # The first pause holds the offset: the speech audio starts inside it.
    assert phones[0]["end_s"] >= clip["truth"]["offset_s"]
    assert np.all(clip["wav"][:int(clip["truth"]["offset_s"] * SR)] == 0)


def test_speech_text_and_caption(speech_clips):
  vocabulary = set(speech.DETERMINERS + speech.ADJECTIVES + speech.NOUNS + speech.VERBS +
                   speech.ADVERBS)
  captions = {v.name: v.caption for v in speech.VOICES}
  for clip in speech_clips:
    words = clip["transcript"].split()
    assert 2 <= len(words) <= 5 and set(words) <= vocabulary
    assert clip["caption"] == captions[clip["voice"]]
    assert clip["frames"].shape == (50, 64, 64, 3)


def test_mouth_follows_the_speech_envelope(speech_clips):
  for clip in speech_clips:
    mouth = clip["mouth_open"]
    assert mouth.shape == (50,) and mouth.min() >= 0 and mouth.max() <= 1
    envelope = np.sqrt(np.mean(clip["wav"].reshape(50, -1) ** 2, axis=1))  # per video frame
    assert np.corrcoef(envelope, mouth)[0, 1] > 0.4
    # The drawn mouth opens with the track: count dark mouth-cavity pixels per frame.
    cavity = np.all(np.abs(clip["frames"].astype(int) - (60, 15, 20)) < 40, axis=-1).sum((1, 2))
    assert np.corrcoef(cavity, mouth)[0, 1] > 0.6


def test_speech_is_deterministic_per_seed():
  a = speech.make_speech_clip(np.random.SeedSequence([3, 1]), CFG)
  b = speech.make_speech_clip(np.random.SeedSequence([3, 1]), CFG)
  assert a["transcript"] == b["transcript"] and np.array_equal(a["wav"], b["wav"])
  assert np.array_equal(a["phone_durations"], b["phone_durations"])


def test_parse_phone_durations_maps_flite_phones():
  phones, ends = speech.parse_phone_durations("pau:0.18 dh:0.23 ax:0.27 pau:0.5", "test")
  assert phones == ["pau", "dh", "ah", "pau"] and ends.tolist() == [0.18, 0.23, 0.27, 0.5]
  with pytest.raises(ValueError, match="unknown phone 'qq'"):
    speech.parse_phone_durations("pau:0.1 qq:0.2 pau:0.3", "test")
  with pytest.raises(ValueError, match="framed by 'pau'"):
    speech.parse_phone_durations("dh:0.1 pau:0.3", "test")


def test_phone_frame_durations_rounding_and_minimum():
  rate = 100.0
  durations = speech.phone_frame_durations(np.array([0.1, 0.25, 0.4]), rate, 60)
  assert durations.tolist() == [10, 15, 35]  # round(end * rate); the last runs to the end
  # Two phones ending in the same frame still get one frame each.
  durations = speech.phone_frame_durations(np.array([0.1, 0.101, 0.102, 0.3]), rate, 40)
  assert durations.tolist() == [10, 1, 1, 28] and durations.sum() == 40
  with pytest.raises(ValueError, match="do not fit"):
    speech.phone_frame_durations(np.array([0.1, 0.2, 0.3]), rate, 2)


def test_mouth_track_known_values():
  phones = ["pau", "aa", "m", "pau"]
  starts, ends = np.array([0.0, 0.2, 0.4, 0.6]), np.array([0.2, 0.4, 0.6, 1.0])
  track = speech.mouth_track(phones, starts, ends, num_frames=10, fps=10.0)
  raw = np.array([0, 0, 0.9, 0.9, 0, 0, 0, 0, 0, 0])
  padded = np.pad(raw, 1, mode="edge")
  expected = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
  np.testing.assert_allclose(track, expected, atol=1e-6)


def test_speaker_embedding_differs_between_voices():
  codec = MelCodec()
  slt = speech.speaker_embedding("slt", codec)
  rms = speech.speaker_embedding("rms", codec)
  assert slt.shape == (80,) and slt.dtype == np.float32
  assert np.array_equal(slt, speech.speaker_embedding("slt", codec))
  assert np.linalg.norm(slt - rms) > 1.0
