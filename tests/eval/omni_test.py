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


def test_uniform_phone_durations_keep_each_rows_total_and_order_but_not_its_timing():
  batch = {"phone_durations": np.array([[5, 1, 1, 0], [2, 9, 0, 0], [3, 3, 3, 3]], np.int32),
           "transcript_mask": np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], bool)}
  out = omni.uniform_phone_durations(batch)
  assert out.dtype == np.int32
  np.testing.assert_array_equal(out, [[3, 2, 2, 0], [6, 5, 0, 0], [3, 3, 3, 3]])
  assert batch["phone_durations"][0, 0] == 5  # the input is not modified


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
  assert "uniform phone timing" not in text  # absent for a model that does not read the timing
  result = _result()
  result["tasks"]["speech"]["lip_sync_uniform_timing"] = {"model": {"corr_at_zero_mean": 0.2},
                                                          "control": {"corr_at_zero_mean": 0.19},
                                                          "corr_at_zero_model_minus_control": {
                                                            "diff": 0.01, "ci_low": -0.02,
                                                            "ci_high": 0.04}}
  assert omni.headline(result["tasks"])["speech_lip_corr_uniform_timing/model"] == 0.2
  assert ("| speech: lip corr at lag 0, uniform phone timing | 0.200 | 0.190 | n/a | "
          "another clip's video |") in omni.render(result)
  assert ("speech lip_sync_uniform_timing, corr at lag 0, model minus control: +0.010, paired "
          "bootstrap 95 % CI [-0.020, +0.040]") in omni.render(result)
  result = _result()
  result["dtype_comparison"] = {"seeds": [0, 1000], "float32": [{"a": 0.5}, {"a": 0.7}],
                                "bfloat16": {"a": 0.6}, "within_spread": {"a": True}}
  assert "| a | 0.500, 0.700 | 0.600 | True | n/a | n/a | n/a |" in omni.render(result)
  result["dtype_comparison"].update(same_seed_shift={"a": 0.1}, seed_range={"a": 0.2},
                                    shift_within_seed_range={"a": True})
  assert "| a | 0.500, 0.700 | 0.600 | True | +0.100 | 0.200 | True |" in omni.render(result)
  result["loss_gap"] = {"speech": {"transcript": {"model": 0.12, "control": 0.3, "ratio": 2.5}},
                        "caption_to_sound": {"caption": {
                          "model": 0.1, "control": 0.102, "ratio": 1.02,
                          "by_t": {"0.9": [0.05, 0.05], "0.1": [0.2, 0.21]}}}}
  text = omni.render(result)
  assert "| speech | transcript | 0.1200 | 0.3000 | 2.500 | n/a |" in text
  # The noisiest t is the smallest, wherever it sits in the mapping.
  assert "| caption_to_sound | caption | 0.1000 | 0.1020 | 1.020 | 1.050 |" in text


def test_compare_dtypes_pairs_bf16_with_float32_at_the_same_seed(monkeypatch):
  """compare_dtypes with the sampling stubbed: (dtype, seed) -> onset F1 of model and control."""
  f1 = {("float32", 0): (0.80, 0.10), ("float32", 1000): (0.70, 0.20),
        ("float32", 2000): (0.75, 0.12), ("bfloat16", 0): (0.82, 0.32)}

  def fake_tasks(run, workdir, *, num_clips, seed, tasks, heldout):
    model, control = f1[(run, seed)]
    return {"video_to_sound": {"model": {"f1": model}, "control": {"f1": control}}}

  monkeypatch.setattr(omni.generate, "load_run", lambda workdir, dtype, sample_overrides=(): dtype)
  monkeypatch.setattr(omni, "evaluate_tasks", fake_tasks)
  dc = omni.compare_dtypes(None, num_clips=2, seeds=[0, 1000, 2000], tasks=["video_to_sound"],
                           heldout={})
  model, control = "video_to_sound_f1/model", "video_to_sound_f1/control"
  # model: 0.82 is above the seeds' [0.70, 0.80], but only +0.02 from float32 at its own seed.
  # control: +0.22 from its own seed, more than the seeds' range of 0.10.
  assert dc["within_spread"] == {model: False, control: False}
  assert dc["same_seed_shift"][model] == pytest.approx(0.02)
  assert dc["seed_range"][model] == pytest.approx(0.10)
  assert dc["same_seed_shift"][control] == pytest.approx(0.22)
  assert dc["shift_within_seed_range"] == {model: True, control: False}


def test_seed_spread_summarises_each_measure_and_each_gap(monkeypatch):
  """seed_spread with the sampling stubbed: each seed's tasks give known numbers."""
  per_seed = {1000: (0.9, 1.4), 2000: (0.5, 1.0)}  # seed -> (speech WER model, control)
  calls = []

  def fake_tasks(run, workdir, *, num_clips, seed, tasks, heldout):
    calls.append((seed, tuple(tasks)))
    model, control = per_seed[seed]
    return {"speech": {"intelligibility": {"model": {"wer": model}, "control": {"wer": control}}}}

  monkeypatch.setattr(omni, "evaluate_tasks", fake_tasks)
  first = {"speech_wer/model": 0.7, "speech_wer/control": 1.5}
  spread = omni.seed_spread(None, None, num_clips=2, seeds=[0, 1000, 2000], tasks=["speech"],
                            first=first)
  assert calls == [(1000, ("speech",)), (2000, ("speech",))]  # seed 0 reused, not re-sampled
  s = spread["summary"]["speech_wer/model"]
  assert s["mean"] == pytest.approx(0.7) and s["min"] == 0.5 and s["max"] == 0.9
  assert s["std"] == pytest.approx(0.2)
  gap = spread["model_minus_control"]["speech_wer"]  # per seed: -0.8, -0.5, -0.5
  assert gap["mean"] == pytest.approx(-0.6) and gap["min"] == pytest.approx(-0.8)
  result = _result()
  result["seed_spread"] = spread
  text = omni.render(result)
  assert "speech re-sampled at seeds [0, 1000, 2000]" in text
  assert "| speech_wer/model | 0.700, 0.900, 0.500 | 0.700 | 0.200 | 0.500 | 0.900 |" in text
  assert "| speech_wer: model - control | -0.800, -0.500, -0.500 | -0.600 |" in text
  with pytest.raises(ValueError, match="unknown tasks"):
    omni.seed_spread(None, None, num_clips=2, seeds=[0, 1], tasks=["speach"])
  with pytest.raises(ValueError, match="at least 2 seeds"):
    omni.seed_spread(None, None, num_clips=2, seeds=[0], tasks=["speech"])


def test_speech_wer_reports_the_paired_per_clip_difference(monkeypatch):
  """A recognizer that hears each arm's own 'audio' (a clip index): the model's words are right on
  every clip, the control's on none, so the per-clip difference is -1 with a tight interval."""
  from flowav.eval import asr  # pylint: disable=g-import-not-at-top

  words = [f"word{i} again" for i in range(6)]
  clips = [type("Clip", (), {"example": {"transcript": w}})() for w in words]
  heard = {"model": words, "control": ["nothing here"] * 6, "codec": words}
  wavs = {arm: [np.full(4, i, np.float32) + 10 * k for i in range(6)]
          for k, arm in enumerate(heard)}

  class Recognizer:
    name = "fake"

    def transcribe(self, wav, sample_rate):
      del sample_rate
      arm = list(heard)[int(wav[0]) // 10]
      return heard[arm][int(wav[0]) % 10]

  monkeypatch.setattr(omni, "_arm_wavs", lambda *a, **k: wavs)
  monkeypatch.setattr(asr, "load_whisper", Recognizer)
  run = type("Run", (), {"codec": type("Codec", (), {"sample_rate": 16000})()})()
  out = omni.speech_wer(run, clips, ("transcript",), seed=0, batch_size=2)
  assert out["model"]["wer"] == 0.0 and out["control"]["wer"] == 1.0
  d = out["wer_model_minus_control"]
  assert d["diff"] == -1.0 and d["ci_low"] == d["ci_high"] == -1.0
  assert out["cer_model_minus_control"]["diff"] < -0.5
  text = omni.render({"workdir": "w", "step": 1, "weights": "ema", "num_clips_per_task": 6,
                      "tasks": {"transcript_to_speech": out}})
  assert "transcript_to_speech per-clip WER (negative: fewer errors than the control)" in text
