"""End to end on the tiny config: train -> sample (held-out and a user's video) -> eval -> export,
plus the entry point's errors for bad input. One short training run is shared by the tests."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import run_main as _main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_demo, tmp_path_factory) -> pathlib.Path:
  workdir = tmp_path_factory.mktemp("run")
  _main("train", "--config=configs/vssflow.py:tiny", f"--workdir={workdir}",
        f"--config.data.dir={tiny_demo}", "--config.train.ema_decay=0.9")
  return workdir


def test_sample_heldout_writes_nonsilent_wav_mp4_png(trained):
  out = trained / "samples"
  _main("sample", f"--workdir={trained}", f"--out={out}", "--num_clips=2")
  manifest = json.loads((out / "manifest.json").read_text())
  tasks = {row["task"] for row in manifest["samples"]}
  assert tasks == {"sound", "speech"}
  assert manifest["weights"] == "ema"
  for row in manifest["samples"]:
    wav, sr = sf.read(row["wav"])
    assert sr == 22050 and wav.size > 0
    assert np.sqrt(np.mean(wav**2)) > 1e-4, f"{row['wav']} is silent"
    assert pathlib.Path(row["mp4"]).stat().st_size > 0
    assert pathlib.Path(row["png"]).stat().st_size > 0


def test_sample_override_changes_the_sampler_not_the_run(trained):
  saved = (trained / "config.json").read_text()
  out = trained / "samples_2_steps"
  flags = ["--sample_override=sample.num_steps=2", "--sample_override=sample.cfg_scale=1.0"]
  _main("sample", f"--workdir={trained}", f"--out={out}", "--num_clips=2", *flags)
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["sample_overrides"] == [f.split("=", 1)[1] for f in flags]
  if not (trained / "samples" / "manifest.json").exists():  # this test run alone
    _main("sample", f"--workdir={trained}", f"--out={trained / 'samples'}", "--num_clips=2")
  default = json.loads((trained / "samples" / "manifest.json").read_text())["samples"][0]["wav"]
  assert not np.allclose(sf.read(manifest["samples"][0]["wav"])[0], sf.read(default)[0])
  assert (trained / "config.json").read_text() == saved
  res = _main("eval", f"--workdir={trained}", "--sample_override=sample.cfg_scal=3", check=False)
  assert res.returncode != 0 and "'sample.cfg_scal': unknown key" in res.stderr
  res = _main("export", f"--workdir={trained}", *flags, check=False)
  assert res.returncode != 0 and "for modes sample and eval" in res.stderr


def _write_video(path: pathlib.Path, seconds: float, fps: float) -> None:
  from flowav.data import media  # pylint: disable=g-import-not-at-top
  n = int(seconds * fps)
  frames = np.random.default_rng(0).integers(0, 255, (n, 48, 48, 3), dtype=np.uint8)
  media.write_mp4(path, frames, fps, np.zeros(int(seconds * 22050), np.float32), 22050)


def test_sample_user_video_with_transcript_and_long_video(trained, tmp_path):
  short = tmp_path / "face.mp4"
  _write_video(short, 0.4, 30.0)  # another frame rate than the model's 25 fps
  _main("sample", f"--workdir={trained}", f"--out={tmp_path / 'out'}", f"--video={short}",
        "--transcript=the red cat")
  wav, _ = sf.read(tmp_path / "out" / "face.wav")
  assert wav.size > 0 and np.abs(wav).max() > 0
  long = tmp_path / "long.mp4"
  _write_video(long, 3.0, 25.0)
  res = _main("sample", f"--workdir={trained}", f"--video={long}", "--transcript=the red cat",
              check=False)
  assert res.returncode != 0  # speech is not split across windows
  assert "window is 0.50 s" in res.stderr and "long.mp4" in res.stderr
  # Sound past the 0.5 s window: made in overlapping windows, as long as the video.
  _main("sample", f"--workdir={trained}", f"--out={tmp_path / 'long_out'}", f"--video={long}")
  wav, sr = sf.read(tmp_path / "long_out" / "long.wav")
  assert wav.size == int(np.floor(3.0 * sr / 256 + 1e-6)) * 256 and np.abs(wav).max() > 0
  assert (tmp_path / "long_out" / "long.mp4").stat().st_size > 0


def test_eval_and_export(trained):
  _main("eval", f"--workdir={trained}", "--num_clips=2")
  result = json.loads((trained / "eval.json").read_text())
  for arm in ("model", "control", "codec"):
    assert 0.0 <= result["impacts"][arm]["f1"] <= 1.0
    assert result["impacts"]["desync"][arm]["n_clips"] == 2
  assert result["speech"]["phone_timing"] == "duration_predictor"  # never the clip's own timing
  measures = result["measures"]  # measured, or skipped with a reason (2 clips is too few for FD)
  assert {"class_accuracy", "distribution"} <= set(measures["impacts"]) or measures["impacts"]["skipped"]
  assert {"intelligibility", "dnsmos", "speaker_similarity"} <= set(measures["speech"])
  assert "## Impacts" in (trained / "report.md").read_text()
  from flowav.encoders import hifigan  # pylint: disable=g-import-not-at-top
  if hifigan.is_available():  # the vocoder section: HiFi-GAN vs Griffin-Lim on the real audio
    for task in ("sound", "speech"):
      rows = result["vocoder"][task]
      assert rows["num_clips"] >= 1
      assert rows["gain/mrstft"] == rows["griffin_lim/mrstft"] - rows["hifigan/mrstft"]
  else:
    assert "vocoder" not in result
  default = (trained / "eval.json").read_text()
  _main("eval", f"--workdir={trained}", "--num_clips=2", "--sample_override=sample.num_steps=2")
  assert (trained / "eval.json").read_text() == default  # kept: the override's eval goes beside it
  assert json.loads((trained / "eval.num_steps=2.json").read_text())["sample_overrides"] == [
    "sample.num_steps=2"]
  assert "sample.num_steps=2" in (trained / "report.num_steps=2.md").read_text()
  assert (trained / "eval_plots.num_steps=2" / "metrics.png").exists()
  res = _main("eval", f"--workdir={trained}", "--dtype_seeds=3", check=False)
  assert res.returncode != 0 and "'vssflow'" in res.stderr  # the bf16 spread is AudioGen-Omni's
  _main("export", f"--workdir={trained}")
  meta = json.loads((trained / "export" / "meta.json").read_text())
  assert meta["weights"] == "ema" and meta["model"] == "vssflow"
  from flowav.train import export  # pylint: disable=g-import-not-at-top
  params, _ = export.load_exported(trained / "export")
  assert "blocks" in params


def test_unknown_config_key_fails_clearly(tiny_demo, tmp_path):
  res = _main("train", "--config=configs/vssflow.py:tiny", f"--workdir={tmp_path}",
              f"--config.data.dir={tiny_demo}", "--config.train.num_stepz=3", check=False)
  assert res.returncode != 0 and "num_stepz" in res.stderr
  assert not (tmp_path / "checkpoints").exists()


def test_changed_model_refused_and_foreign_checkpoint_named(trained, tiny_demo):
  before = sorted(p.name for p in (trained / "checkpoints").iterdir())
  res = _main("train", "--config=configs/vssflow.py:tiny", f"--workdir={trained}",
              f"--config.data.dir={tiny_demo}", "--config.model.depth=3", check=False)
  assert res.returncode != 0 and "model.depth: 2 -> 3" in res.stderr
  res = _main("train", "--config=configs/vssflow.py:tiny", f"--workdir={trained}",
              f"--config.data.dir={tiny_demo}", "--config.model.depth=3",
              "--allow_config_change", check=False)
  assert res.returncode != 0 and "does not fit this config" in res.stderr
  assert str(trained / "checkpoints") in res.stderr
  after = sorted(p.name for p in (trained / "checkpoints").iterdir())
  assert before == after, "a refused resume must not touch the checkpoints"
