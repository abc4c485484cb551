"""flowav.eval.omni: per-task condition masking, mismatched controls, headline and report."""

from __future__ import annotations

import numpy as np
import pytest

from flowav.eval import omni


def _batch() -> dict[str, np.ndarray]:
  b = 3
  return {"video_features": np.arange(b * 4 * 2, dtype=np.float32).reshape(b, 4, 2),
          "video_mask": np.ones((b, 4), bool), "text_ids": np.arange(b * 5).reshape(b, 5),
          "text_mask": np.ones((b, 5), bool), "transcript_ids": np.ones((b, 6), np.int32),
          "transcript_mask": np.ones((b, 6), bool), "phone_durations": np.ones((b, 6), np.int32),
          "audio_mask": np.ones((b, 8), bool)}


@pytest.mark.parametrize("keep, on", [
  (("video",), {"video_mask"}), (("caption",), {"text_mask"}),
  (("video", "transcript"), {"video_mask", "transcript_mask"}),
  (("video", "lyrics"), {"video_mask", "transcript_mask"}), ((), set())])
def test_keep_conditions_masks_everything_else(keep, on):
  batch = _batch()
  out = omni.keep_conditions(batch, keep)
  for m in ("video_mask", "text_mask", "transcript_mask"):
    assert out[m].all() == (m in on), m
  assert out["audio_mask"].all()  # never a condition
  assert batch["text_mask"].all()  # the input is not modified


def test_keep_conditions_rejects_unknown_names():
  with pytest.raises(ValueError, match="speaker"):
    omni.keep_conditions(_batch(), ("speaker",))


def test_swap_condition_takes_only_that_condition():
  batch = _batch()
  other = {k: np.roll(v, -1, axis=0) for k, v in batch.items()}
  other["text_mask"] = np.zeros_like(other["text_mask"])
  out = omni.swap_condition(batch, other, "caption")
  np.testing.assert_array_equal(out["text_ids"], other["text_ids"])
  assert not out["text_mask"].any()
  np.testing.assert_array_equal(out["video_features"], batch["video_features"])
  out = omni.swap_condition(batch, other, "video")
  np.testing.assert_array_equal(out["video_features"], other["video_features"])
  np.testing.assert_array_equal(out["text_ids"], batch["text_ids"])


def _result() -> dict:
  tasks = {"video_to_sound": {"model": {"f1": 0.8}, "control": {"f1": 0.2}, "codec": {"f1": 1.0}},
           "caption_to_sound": {"model": 0.7, "control": 0.3, "codec": 1.0},
           "speech": {"intelligibility": {"skipped": "ImportError: no whisper"},
                      "lip_sync": {"model": {"corr_at_zero_mean": 0.5},
                                   "control": {"corr_at_zero_mean": 0.1}}},
           "song": {"model": {"raw_pitch_accuracy": 0.4}, "control": {"raw_pitch_accuracy": 0.1},
                    "codec": {"raw_pitch_accuracy": 0.95}}}
  return {"workdir": "w", "step": 10, "weights": "ema", "num_clips_per_task": 4, "tasks": tasks}


def test_headline_reads_each_task_and_skips_missing_parts():
  h = omni.headline(_result()["tasks"])
  assert h["video_to_sound_f1/model"] == 0.8 and h["caption_to_sound_accuracy/control"] == 0.3
  assert h["song_pitch_accuracy/model"] == 0.4 and h["speech_lip_corr/control"] == 0.1
  assert not any(k.startswith("speech_wer") for k in h)


def test_render_puts_model_beside_control_and_says_what_was_skipped():
  text = omni.render(_result())
  assert "| video_to_sound: onset F1 | 0.800 | 0.200 | 1.000 | another clip's video |" in text
  assert "| caption_to_sound: material accuracy | 0.700 | 0.300 | 1.000 |" in text
  assert "skipped: ImportError: no whisper" in text
  result = _result()
  result["dtype_comparison"] = {"seeds": [0, 1000], "float32": [{"a": 0.5}, {"a": 0.7}],
                                "bfloat16": {"a": 0.6}, "within_spread": {"a": True}}
  assert "| a | 0.500, 0.700 | 0.600 | True |" in omni.render(result)
  result["loss_gap"] = {"speech": {"transcript": {"model": 0.12, "control": 0.3, "ratio": 2.5}}}
  assert "| speech | transcript | 0.1200 | 0.3000 | 2.500 |" in omni.render(result)
