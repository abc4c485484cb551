"""AudioGen-Omni end to end on the tiny config: train -> sample held-out clips and from any subset
of user conditions (no video, caption only, lyrics, video + caption) -> eval, plus clear errors."""

from __future__ import annotations

import json
import pathlib
import subprocess

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import run_main

pytestmark = pytest.mark.slow


def _main(*args: str, check: bool = True) -> subprocess.CompletedProcess:
  return run_main(*args, check=check, timeout=900)  # the tiny Omni model compiles more


@pytest.fixture(scope="module")
def trained(tiny_demo, tmp_path_factory) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp("omni")
  # Phones laid over their frames, as the `demo` variant does (and eval's uniform-timing arm),
  # trained with phone-timing dropout from the command line.
  _main("train", "--config=configs/audiogen_omni.py:tiny", f"--workdir={workdir}",
        f"--config.data.dir={tiny_demo}", "--config.train.ema_decay=0.9",
        "--config.model.lyrics_aligned=True", "--config.flow.dropout.p_timing=0.5")
  return workdir


@pytest.mark.parametrize("conditions, seconds, task", [
  (["--caption=a red ball hits metal twice", "--duration=0.4"], 0.4, "sound"),
  (["--transcript=the red cat", "--duration=0.5"], 0.5, "speech"),
  (["--lyrics=O Herre Gott", "--caption=a woman sings", "--duration=0.3"], 0.3, "song"),
])
def test_sample_from_text_conditions_only(trained, tmp_path, conditions, seconds, task):
  res = _main("sample", f"--workdir={trained}", f"--out={tmp_path}", *conditions)
  assert f"'task': '{task}'" in res.stderr
  wav, sr = sf.read(tmp_path / "sample.wav")
  assert abs(len(wav) / sr - seconds) < 256 / sr + 1e-6 and np.abs(wav).max() > 0


def test_sample_user_video_with_caption_and_heldout(trained, tmp_path):
  from flowav.data import media  # pylint: disable=g-import-not-at-top
  frames = np.random.default_rng(0).integers(0, 255, (10, 48, 48, 3), dtype=np.uint8)
  media.write_mp4(tmp_path / "clip.mp4", frames, 25.0, np.zeros(8820, np.float32), 22050)
  _main("sample", f"--workdir={trained}", f"--out={tmp_path}", f"--video={tmp_path / 'clip.mp4'}",
        "--caption=a ball bounces")
  wav, sr = sf.read(tmp_path / "clip.wav")
  assert abs(len(wav) / sr - 0.4) < 0.05 and (tmp_path / "clip.mp4").exists()
  _main("sample", f"--workdir={trained}", f"--out={tmp_path / 'held'}", "--num_clips=2")
  manifest = json.loads((tmp_path / "held" / "manifest.json").read_text())
  assert {row["task"] for row in manifest["samples"]} == {"sound", "speech"}


def test_bad_conditions_fail_naming_the_flag(trained):
  res = _main("sample", f"--workdir={trained}", "--caption=x", check=False)
  assert res.returncode != 0 and "--duration" in res.stderr
  res = _main("sample", f"--workdir={trained}", "--lyrics=la la", "--duration=3", check=False)
  assert res.returncode != 0 and "window" in res.stderr and "0.50" in res.stderr  # song: one window


def test_caption_past_the_window_makes_long_form_sound(trained):
  out = trained / "long_caption"
  _main("sample", f"--workdir={trained}", f"--out={out}", "--caption=x", "--duration=3")
  wav, sr = sf.read(out / "sample.wav")
  assert abs(wav.size - 3 * sr) <= 256 and np.abs(wav).max() > 0


def test_eval_refuses_a_one_seed_spread(trained):
  res = _main("eval", f"--workdir={trained}", "--dtype_seeds=1", check=False)
  assert res.returncode != 0 and "--dtype_seeds=1" in res.stderr
  res = _main("eval", f"--workdir={trained}", "--spread_seeds=1", check=False)
  assert res.returncode != 0 and "--spread_seeds=1" in res.stderr
  res = _main("eval", f"--workdir={trained}", "--spread_seeds=2", "--spread_tasks=speach",
              check=False)
  assert res.returncode != 0 and "--spread_tasks" in res.stderr and "speach" in res.stderr


def test_eval_scores_every_task_against_its_control(trained):
  _main("eval", f"--workdir={trained}", "--num_clips=2", "--dtype_seeds=2", "--spread_seeds=2",
        "--spread_tasks=video_to_sound,transcript_to_speech")
  result = json.loads((trained / "eval.json").read_text())
  tasks = result["tasks"]
  for arm in ("model", "control", "codec"):
    assert 0.0 <= tasks["video_to_sound"][arm]["f1"] <= 1.0
  assert set(tasks) == {"video_to_sound", "caption_to_sound", "speech", "transcript_to_speech",
                        "song"}
  assert {"lip_sync", "lip_sync_uniform_timing", "intelligibility"} <= set(tasks["speech"])
  assert tasks["speech"]["lip_sync"]["phone_timing"] == "clip"  # Omni has no duration predictor
  uniform = tasks["speech"]["lip_sync_uniform_timing"]
  assert uniform["phone_timing"] == "uniform_phone_durations" and uniform["boundary_error_frames_median"] >= 0
  assert "speech_lip_corr_uniform_timing/control" in result["headline"]
  diff = uniform["corr_at_zero_model_minus_control"]  # paired over the 2 clips
  assert diff["ci_low"] <= diff["diff"] <= diff["ci_high"]
  assert "video_to_sound_f1/model" in result["headline"]
  spread = result["dtype_comparison"]
  assert len(spread["float32"]) == 2 and set(spread["within_spread"]) == set(spread["bfloat16"])
  noise = result["seed_spread"]
  assert noise["seeds"][1] != noise["seeds"][0] and len(noise["runs"]) == 2
  assert noise["runs"][0]["video_to_sound_f1/model"] == result["headline"]["video_to_sound_f1/model"]
  assert {"video_to_sound_f1", "transcript_to_speech_wer"} <= set(noise["model_minus_control"])
  report = (trained / "report.md").read_text()
  assert "video_to_sound: onset F1" in report and "bfloat16" in report
  assert "Sampling noise: video_to_sound, transcript_to_speech re-sampled" in report
  assert "speech lip_sync_uniform_timing, corr at lag 0, model minus control" in report
  gaps = result["loss_gap"]
  assert set(gaps["speech"]) == {"transcript", "video"} and set(gaps["caption_to_sound"]) == {
    "caption"}
  assert "song" not in gaps and "skipped" in tasks["song"]  # the tiny demo has no song clips
  assert all(g["ratio"] > 0 and g["num_clips"] == 2 for by in gaps.values() for g in by.values())
  assert "| speech | transcript |" in report
