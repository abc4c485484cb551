"""The full flowav-demo build: every subset through the builder into schema examples and raw truth."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil

import numpy as np
import pytest

from flowav.audio import codec as codec_lib
from flowav.audio import io as audio_io
from flowav.data import records, schema
from flowav.data.demo import build, human_speech

_MISSING = [what for what, ok in (
  ("festival (apt-get install festival festvox-us-slt-hts)", shutil.which("festival")),
  ("fluidsynth (apt-get install fluidsynth musescore-general-soundfont-small)",
   shutil.which("fluidsynth")),
  ("music21 / pocketsphinx (pip install -e '.[demo-full]')",
   importlib.util.find_spec("music21") and importlib.util.find_spec("pocketsphinx")),
  ("the asterisk prompts", human_speech.missing_reason() is None),
) if not ok]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"full build needs {_MISSING}")

# A few clips of every subset and split, with festival's voice among the speakers.
FULL_TINY = dataclasses.replace(
  build.preset("tiny"), speech_train=4, speech_voices=("slt", "hts_slt"),
  human_speech_train=3, human_speech_validation=1, human_speech_test=1,
  song_train=3, song_validation=1, song_test=2, music_train=3, music_validation=1, music_test=1)
TASK_OF = {"impacts": "sound", "speech": "speech", "human_speech": "speech", "song": "song",
           "music": "music"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  out = tmp_path_factory.mktemp("demo-full")
  return out, build.build_demo(out, FULL_TINY, progress=False)


def _examples(out, info, split):
  for name in info.splits[split]["shards"]:
    for i, data in enumerate(records.read_shard(out / name)):
      yield records.decode_example(data, source=f"{name}[{i}]")


def test_full_preset_is_valid_and_resolves_every_prompt():
  full = build.preset("full")
  assert "hts_slt" in full.speech_voices and full.human_speech_train == -1
  counts = build.resolve_counts(full)
  assert counts["human_speech", "train"] == human_speech.available("train", full.human_speech_max_seconds)
  assert counts["song", "test"] == full.song_test and counts["impacts", "train"] == 1200
  with pytest.raises(ValueError, match="human_speech_test=100000"):
    build.resolve_counts(dataclasses.replace(full, human_speech_test=100_000))
  with pytest.raises(ValueError, match="speech_voices"):
    dataclasses.replace(full, speech_voices=("nobody",))


def test_every_subset_lands_with_its_task_caption_and_streams(built):
  out, info = built
  assert info.splits["test"]["subsets"] == {"impacts": 4, "speech": 2, "human_speech": 1, "song": 2,
                                            "music": 1}
  assert {"festival", "human_speech", "song", "music"} <= set(info.extra["licences"])
  codec = codec_lib.MelCodec()
  seen = set()
  for split in ("train", "validation", "test"):
    for ex in _examples(out, info, split):
      subset = ex["clip_id"].rsplit("-", 2)[0]
      seen.add(subset)
      assert int(ex["task_id"]) == schema.TASKS[TASK_OF[subset]], ex["clip_id"]
      assert ex["caption"].strip(), f"{ex['clip_id']} has no caption"
      wav = audio_io.read_audio(out / "raw" / split / f"{ex['clip_id']}.wav", codec.sample_rate)
      assert float(ex["duration_s"]) == pytest.approx(len(wav) / codec.sample_rate, abs=1e-6)
      assert len(ex["audio_latents"]) == codec.num_frames(len(wav))
      has_mp4 = (out / "raw" / split / f"{ex['clip_id']}.mp4").exists()
      assert has_mp4 == ("video_features" in ex) == (subset != "music")
      if "phone_durations" in ex:  # speech, human speech and song: timings cover the audio
        assert int(ex["phone_durations"].sum()) == len(ex["audio_latents"])
        assert ex["speaker_embedding"].shape == (80,)
      if subset == "song":
        lyrics = bytes((ex["lyric_ids"] - 1).astype(np.uint8)).decode("utf-8")
        assert lyrics == ex["transcript"]
      if subset in ("human_speech", "song"):
        truth = json.loads((out / "raw" / split / f"{ex['clip_id']}.json").read_text())
        assert len(truth["mouth_open"]) == len(ex["video_features"])  # the lip-sync metric's truth
  assert seen == set(TASK_OF)


@pytest.mark.slow  # 25 s; keeps `make test` inside its 10 minutes
def test_song_pitch_known_answer_and_codec_upper_bound(built):
  """Raw sung clips follow their melody (>= 90 % of voiced frames within 50 cents); through the
  codec and Griffin-Lim (the song upper bound) they still mostly do; another melody does not."""
  from flowav.eval import pitch  # noqa: PLC0415 -- librosa, the eval extra

  out, info = built
  codec = codec_lib.MelCodec()
  notes, scores = [], []
  for ex in _examples(out, info, "test"):
    if ex["clip_id"].startswith("song"):
      truth = json.loads((out / "raw" / "test" / f"{ex['clip_id']}.json").read_text())
      wav = audio_io.read_audio(out / "raw" / "test" / f"{ex['clip_id']}.wav", codec.sample_rate)
      notes.append(truth["notes"])
      decoded = codec.decode(ex["audio_latents"], vocoder="griffin_lim")
      scores.append((pitch.pitch_accuracy(wav, codec.sample_rate, truth["notes"]),
                     pitch.pitch_accuracy(decoded, codec.sample_rate, truth["notes"]), wav))
  assert len(scores) == 2
  for raw, through_codec, _ in scores:
    assert raw["raw_pitch_accuracy"] >= 0.9, raw
    assert through_codec["raw_pitch_accuracy"] >= 0.85, through_codec
  wav = scores[0][2]
  assert pitch.pitch_accuracy(wav, codec.sample_rate, notes[1])["raw_pitch_accuracy"] < 0.5


@pytest.mark.slow
def test_two_workers_write_the_same_bytes(built, tmp_path):
  """Spawned workers (pocketsphinx, flite, festival, fluidsynth in other processes, other orders)
  give byte-identical shards and raw audio."""
  out, info = built
  other = build.build_demo(tmp_path, dataclasses.replace(FULL_TINY, workers=2), progress=False)
  for split in info.splits.values():
    for name in split["shards"]:
      assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
  for wav in (out / "raw").glob("*/*.wav"):
    assert (tmp_path / "raw" / wav.parent.name / wav.name).read_bytes() == wav.read_bytes(), wav
  assert other.latent_stats == info.latent_stats
