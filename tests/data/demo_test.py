"""End-to-end tests of the flowav-demo builder on a tiny config."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest

from flowav.audio.codec import MelCodec
from flowav.data import media, records, schema
from flowav.data.demo import build, speech

TINY = build.DemoConfig(impacts_train=3, impacts_validation=1, impacts_test=1, speech_train=2,
                        speech_validation=1, speech_test=1, num_train_shards=2, workers=2)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  out = tmp_path_factory.mktemp("demo_a")
  return out, build.build_demo(out, TINY, progress=False)


def _examples(out, info, split):
  return [records.decode_example(data) for path in info.shard_paths(out, split)
          for data in records.read_shard(path)]


def test_examples_follow_the_schema(built):
  out, info = built
  for split in ("train", "validation", "test"):
    examples = _examples(out, info, split)
    assert len(examples) == info.splits[split]["num_examples"]
    for ex in examples:
      schema.validate_example(ex, source=ex["clip_id"])
      assert ex["audio_latents"].shape == (172, 80) and ex["audio_mask"].all()
      assert ex["video_features"].shape == (50, 256) and ex["video_mask"].all()
      assert float(ex["duration_s"]) == 2.0 and float(ex["start_s"]) == 0.0
      if ex["clip_id"].startswith("impacts"):
        assert int(ex["task_id"]) == schema.TASKS["sound"]
        assert not {"transcript", "transcript_ids", "phone_durations", "speaker_embedding",
                    "speaker_mask"} & set(ex)
      else:
        assert int(ex["task_id"]) == schema.TASKS["speech"]
        assert ex["phone_durations"].sum() == 172
        assert len(ex["transcript_ids"]) == len(ex["transcript_mask"])
        assert ex["speaker_embedding"].shape == (80,) and bool(ex["speaker_mask"])
        assert ex["transcript"] and ex["caption"] in {v.caption for v in speech.VOICES}


def test_dataset_info(built):
  out, info = built
  loaded = records.DatasetInfo.load(out)
  assert loaded == info
  assert info.name == "flowav-demo"
  assert info.rates == {"audio": 22050 / 256, "video": 25.0}
  assert info.dims == {"audio": 80, "video": 256, "speaker": 80, "phone_vocab": 41}
  assert info.vocab["phones"] == ["<pad>", *speech.PHONES]
  assert info.splits["train"]["num_examples"] == 5
  assert info.splits["train"]["shards"] == ["train-00000-of-00002.array_record",
                                            "train-00001-of-00002.array_record"]
  assert info.splits["test"]["subsets"] == {"impacts": 1, "speech": 1}
  assert info.extra["config"] == json.loads(json.dumps(dataclasses.asdict(TINY)))
  assert info.extra["clip_frames"] == 172 and info.extra["video_frames"] == 50
  assert set(info.extra["licences"]) == {"flowav", "flite"}
  # Latent statistics come from the train split.
  train = np.concatenate([ex["audio_latents"] for ex in _examples(out, info, "train")])
  np.testing.assert_allclose(info.latent_stats["mean"], train.mean(axis=0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(info.latent_stats["std"], train.std(axis=0), rtol=1e-3, atol=1e-4)
  # Train shards are dealt round-robin in natural order (impacts first, then speech).
  ids = [[ex["clip_id"] for ex in map(records.decode_example, records.read_shard(p))]
         for p in info.shard_paths(out, "train")]
  assert ids == [["impacts-train-00000", "impacts-train-00002", "speech-train-00001"],
                 ["impacts-train-00001", "speech-train-00000"]]


def test_raw_ground_truth_files(built):
  out, info = built
  for split in ("train", "validation", "test"):
    for ex in _examples(out, info, split):
      stem = out / "raw" / split / ex["clip_id"]
      truth = json.loads(stem.with_suffix(".json").read_text())
      assert truth["clip_id"] == ex["clip_id"] and truth["caption"] == ex["caption"]
      clip = media.read_video(stem.with_suffix(".mp4"), fps=25.0)
      assert clip.frames.shape == (50, 64, 64, 3) and abs(len(clip.audio) - 44100) <= 1024
      assert stem.with_suffix(".wav").stat().st_size > 44100 * 2
      if truth["subset"] == "impacts":
        assert len(truth["contact_times_s"]) >= 1 and truth["material"] in ex["caption"]
      else:
        assert truth["text"] == ex["transcript"] and len(truth["mouth_open"]) == 50
        assert [p["frames"] for p in truth["phones"]] == ex["phone_durations"].tolist()


def test_two_builds_are_byte_identical(built, tmp_path):
  out_a, info_a = built  # built by a pool of 2 spawned workers
  out_b = tmp_path / "demo_b"
  info_b = build.build_demo(out_b, dataclasses.replace(TINY, workers=0), progress=False)
  for split in info_a.splits:
    for name in info_a.splits[split]["shards"]:
      assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name
  # dataset_info.json differs only in the recorded worker count (speed, not content).
  saved_b = json.loads((out_b / "dataset_info.json").read_text())
  saved_b["extra"]["config"]["workers"] = TINY.workers
  assert saved_b == json.loads((out_a / "dataset_info.json").read_text())
  assert dataclasses.replace(info_b, extra=info_a.extra) == info_a
  for clip in ("impacts-test-00000", "speech-test-00000"):
    for suffix in (".json", ".wav", ".mp4"):
      raw = f"raw/test/{clip}{suffix}"
      assert (out_a / raw).read_bytes() == (out_b / raw).read_bytes(), raw


def test_rerun_same_config_is_a_no_op_and_changed_config_rebuilds(tmp_path, caplog):
  cfg = dataclasses.replace(TINY, impacts_train=1, speech_train=1, impacts_validation=0,
                            speech_validation=0, impacts_test=0, speech_test=1, workers=0)
  out = tmp_path / "demo"
  first = build.build_demo(out, cfg, progress=False)
  stamp = (out / "dataset_info.json").stat().st_mtime_ns
  with caplog.at_level(logging.INFO, logger="flowav.data.demo.build"):
    again = build.build_demo(out, dataclasses.replace(cfg, workers=3), progress=False)
  assert again == first and "already built" in caplog.text
  assert (out / "dataset_info.json").stat().st_mtime_ns == stamp
  changed = build.build_demo(out, dataclasses.replace(cfg, speech_test=0, num_train_shards=1),
                             progress=False)
  assert changed.splits["test"]["num_examples"] == 0
  assert not (out / "raw" / "test" / "speech-test-00000.json").exists()  # stale clips removed
  assert sorted(p.name for p in out.glob("*.array_record")) == [
    "test-00000-of-00001.array_record", "train-00000-of-00001.array_record",
    "validation-00000-of-00001.array_record"]


def test_refuses_a_directory_holding_another_dataset(tmp_path):
  other = records.DatasetInfo(name="my-data", codec={}, latent_stats={}, rates={}, dims={},
                              splits={})
  other.save(tmp_path)
  with pytest.raises(ValueError, match="my-data"):
    build.build_demo(tmp_path, TINY, progress=False)


def test_subsets_are_seeded_independently():
  codec = MelCodec()
  a = build.make_example(TINY, "speech", "train", 1, codec, None)
  b = build.make_example(dataclasses.replace(TINY, impacts_train=50, speech_test=9), "speech",
                         "train", 1, codec, None)
  assert records.encode_example(a) == records.encode_example(b)
  c = build.make_example(TINY, "speech", "test", 1, codec, None)
  assert records.encode_example(a) != records.encode_example(c)


def test_bad_config_raises():
  with pytest.raises(ValueError, match="speech_test"):
    build.DemoConfig(speech_test=-1)
  with pytest.raises(ValueError, match="train split"):
    build.DemoConfig(impacts_train=0, speech_train=0)
  with pytest.raises(ValueError, match="frame_size"):
    build.DemoConfig(frame_size=4)


def test_presets():
  assert build.preset("default") == build.DemoConfig()
  tiny = build.preset("tiny")
  assert tiny.impacts_test >= 4 and tiny.speech_test >= 2 and tiny.workers <= 1
  assert build.preset("small").impacts_train < build.DemoConfig().impacts_train
  with pytest.raises(KeyError, match="'huge'"):
    build.preset("huge")
