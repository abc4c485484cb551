"""preprocess: a folder of media -> dataset; records, skips, splits, resumption, several processes."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from configs import preprocess as preprocess_config
from configs import vssflow as vssflow_config
from flowav.audio import codec as codec_lib
from flowav.data import pipeline, preprocess, preprocess_clip, preprocess_scan, records, schema
from flowav.encoders import frame_encoders
from tests.data import preprocess_testlib as testlib

REPO = pathlib.Path(__file__).resolve().parents[2]


def _config(**overrides):
  cfg = preprocess_config.get_config("tiny")
  cfg.update(overrides)
  return cfg


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> pathlib.Path:
  return testlib.make_folder(tmp_path_factory.mktemp("media") / "in")


@pytest.fixture(scope="module")
def built(media_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp("pre") / "out"
  report = preprocess.run(str(media_dir), str(out), _config(), progress=False)
  return out, report


def _dataset(out: pathlib.Path) -> dict[str, list[tuple[str, bytes]]]:
  """split -> [(clip_id, record bytes)] sorted by clip id."""
  info = records.DatasetInfo.load(out)
  result = {}
  for split in info.splits:
    recs = [records.decode_example(b)["clip_id"] for p in info.shard_paths(out, split)
            for b in records.read_shard(p)]
    data = [b for p in info.shard_paths(out, split) for b in records.read_shard(p)]
    result[split] = sorted(zip(recs, data))
  return result


def _by_source(out: pathlib.Path) -> dict[str, list[dict]]:
  """source file stem -> its decoded examples in window order (with their split)."""
  info = records.DatasetInfo.load(out)
  found: dict[str, list[dict]] = {}
  for split in info.splits:
    for p in info.shard_paths(out, split):
      for b in records.read_shard(p):
        ex = records.decode_example(b)
        ex["_split"] = split
        found.setdefault(ex["clip_id"].rsplit("-", 2)[0], []).append(ex)
  return {k: sorted(v, key=lambda e: e["clip_id"]) for k, v in found.items()}


def test_records_follow_the_schema_with_windows_masks_and_text(built):
  out, report = built
  by_source = _by_source(out)
  assert set(by_source) == {pathlib.PurePosixPath(r).stem for r in testlib.GOOD}
  codec = codec_lib.MelCodec()
  for rel, (kind, task, num_windows) in testlib.GOOD.items():
    exs = by_source[pathlib.PurePosixPath(rel).stem]
    assert len(exs) == num_windows, rel
    assert len({e["_split"] for e in exs}) == 1  # all windows of a source in one split
    for k, ex in enumerate(exs):
      schema.validate_example({k2: v for k2, v in ex.items() if k2 != "_split"}, source=rel)
      assert int(ex["task_id"]) == schema.TASKS[task], rel
      assert float(ex["start_s"]) == pytest.approx(k * 1.0), rel
      assert ex["audio_mask"].all() and ex["audio_latents"].shape[1] == 80
      if kind == "video":
        assert ex["video_features"].shape[1] == 256 and ex["video_mask"].all()
        # 25 feature frames per second of the window: as many as the audio covers.
        want = ex["audio_latents"].shape[0] * 256 / codec.sample_rate * 25
        assert abs(ex["video_features"].shape[0] - want) <= 1.01, rel
      else:
        assert ex["video_features"].shape == (0, 256) and ex["video_mask"].shape == (0,)
  long = by_source["long"]
  assert [e["audio_latents"].shape[0] for e in long] == [86, 86, 51]  # 1 + 1 + 0.6 s
  assert [e["video_features"].shape[0] for e in long] == [25, 25, 15]
  assert all(float(e["duration_s"]) == pytest.approx(2.6, abs=0.02) for e in long)
  v30 = by_source["v30"]
  assert v30[0]["caption"] == testlib.CAPTIONS["v30.mp4"]
  assert bytes((v30[1]["text_ids"] - 1).astype(np.uint8).tolist()).decode() == v30[0]["caption"]
  assert "caption" not in by_source["v24"][0] and "text_ids" not in by_source["v24"][0]
  song = by_source["song"][0]
  assert bytes((song["lyric_ids"] - 1).astype(np.uint8).tolist()).decode() == testlib.LYRICS
  speech = by_source["speech"][0]
  assert speech["transcript"] == testlib.TRANSCRIPT
  n = speech["audio_latents"].shape[0]
  assert n > 86  # longer than the 1 s window but kept whole (a transcript is not split)
  dur = speech["phone_durations"]
  assert dur.sum() == n and dur.min() >= 1 and len(dur) == len(speech["transcript_ids"])
  # The first pause covers the 0.2 s of leading silence (17 frames), roughly.
  assert 8 <= dur[0] <= 30
  assert report["windows"] == sum(w for _, _, w in testlib.GOOD.values())


def test_bad_files_are_reported_by_reason_and_skipped(built):
  out, report = built
  saved = json.loads((out / preprocess.REPORT_FILE).read_text())
  assert saved["skipped"] == report["skipped"]
  got = {s["path"]: s["reason"] for s in saved["skipped_files"]}
  assert got == testlib.BAD
  assert saved["ok"] == len(testlib.GOOD) and saved["sources"] == len(testlib.GOOD) + len(testlib.BAD)
  assert any("missing_clip" in n for n in saved["notes"])
  text = preprocess.format_report(saved)
  assert "bad/codec.mkv: unsupported_codec" in text and "windows written" in text


def test_rotation_metadata_turns_the_frames(built):
  out, _ = built
  feats = _by_source(out)["rot"][0]["video_features"]  # 25 frames of [8x8 RGB | motion]
  red = feats[:, :192].reshape(-1, 8, 8, 3)[..., 0] - 30 / 255  # square minus background
  seen = red.max(axis=(1, 2)) > 0.2  # frames where the square is inside the centre crop
  assert seen.sum() >= 8
  grid = np.arange(8)
  rows = [(r.sum(axis=1) @ grid) / r.sum() for r in red[seen]]
  cols = [(r.sum(axis=0) @ grid) / r.sum() for r in red[seen]]
  # The square runs along the top edge of the stored frames (left to right); shown rotated 90
  # degrees counter-clockwise it runs up the left edge: its column stays, its row falls.
  np.testing.assert_allclose(cols, 1.5, atol=0.2)
  assert np.all(np.diff(rows) <= 0.05) and rows[0] - rows[-1] > 2.5


def test_dataset_info_fits_the_training_pipeline(built):
  out, _ = built
  from flowav.train import loop  # pylint: disable=g-import-not-at-top
  cfg = vssflow_config.get_config("tiny")
  cfg.data.dir = str(out)
  info, lengths = loop.data_info(cfg)  # checks widths, rates and vocab sizes against the model
  assert info.dims["video"] == 256 and info.rates["video"] == 25.0
  assert info.extra["phone_durations"]["method"] == "estimate"
  batch = pipeline.make_dataset(str(out), "train", lengths=lengths, global_batch=2, seed=0)[0]
  assert batch["audio_latents"].shape == (2, lengths.audio, 80)
  train = [records.decode_example(b)["audio_latents"] for p in info.shard_paths(out, "train")
           for b in records.read_shard(p)]
  stats = codec_lib.compute_stats(train)
  np.testing.assert_allclose(info.latent_stats["mean"], stats.mean, rtol=1e-6)
  assert sum(s["num_examples"] for s in info.splits.values()) == sum(
    w for _, _, w in testlib.GOOD.values())


def test_rerun_is_a_no_op_and_new_files_move_nothing(media_dir, tmp_path):
  src = tmp_path / "in"
  shutil.copytree(media_dir, src)
  out = tmp_path / "out"
  first = preprocess.run(str(src), str(out), _config(), progress=False)
  before = _dataset(out)
  info_mtime = (out / records.INFO_FILE).stat().st_mtime_ns
  again = preprocess.run(str(src), str(out), _config(), progress=False)
  assert again["processed_now"] == 0 and again["reused"] == first["sources"]
  assert (out / records.INFO_FILE).stat().st_mtime_ns == info_mtime and _dataset(out) == before
  testlib.add_clip(src)
  added = preprocess.run(str(src), str(out), _config(), progress=False)
  assert added["processed_now"] == 1
  after = _dataset(out)
  old = {cid: (split, b) for split, items in before.items() for cid, b in items}
  new = {cid: (split, b) for split, items in after.items() for cid, b in items}
  assert set(new) - set(old) == {next(c for c in new if c.startswith("added-"))}
  assert all(new[cid] == old[cid] for cid in old)  # same split, same bytes


def test_changed_caption_redoes_only_that_clip(media_dir, tmp_path):
  src = tmp_path / "in"
  shutil.copytree(media_dir, src)
  out = tmp_path / "out"
  preprocess.run(str(src), str(out), _config(), progress=False)
  (src / "v30.txt").write_text("a different caption\n")
  rerun = preprocess.run(str(src), str(out), _config(), progress=False)
  assert rerun["processed_now"] == 1
  assert _by_source(out)["v30"][0]["caption"] == "a different caption"
  assert len(list((out / preprocess.WORK_DIR).glob("*.rec"))) == rerun["sources"]  # old one gone


def test_splits_are_stable_hash_fractions():
  fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
  names = [f"clips/{i:05d}.mp4" for i in range(4000)]
  splits = [preprocess_scan.split_of(n, fractions, "flowav") for n in names]
  counts = {s: splits.count(s) / len(names) for s in fractions}
  for s, f in fractions.items():
    assert abs(counts[s] - f) < 0.025, counts
  assert splits == [preprocess_scan.split_of(n, fractions, "flowav") for n in names]
  other = [preprocess_scan.split_of(n, fractions, "other-salt") for n in names]
  assert sum(a != b for a, b in zip(splits, other)) > 400  # the salt reshuffles
  with pytest.raises(ValueError, match="train"):
    preprocess_scan.check_fractions({"validation": 1.0})


def _settings(**kw) -> preprocess_clip.Settings:
  return preprocess_clip.Settings.from_config(_config(**kw))


def test_windows_split_crop_and_text():
  s = _settings()  # clip_seconds 1, min_seconds 0.25, max_text_seconds 4
  flat = lambda ws: [x for w in ws for x in w]
  assert flat(preprocess_clip.windows(2.6, s, False)) == pytest.approx([0, 1, 1, 1, 2, 0.6])
  assert flat(preprocess_clip.windows(2.1, s, False)) == pytest.approx([0, 1, 1, 1])  # tail < 0.25
  assert preprocess_clip.windows(0.7, s, False) == [(0.0, 0.7)]
  assert preprocess_clip.windows(2.6, _settings(long_clips="crop"), False) == [(0.0, 1.0)]
  assert preprocess_clip.windows(3.0, s, True) == [(0.0, 3.0)]
  with pytest.raises(preprocess_clip.Skip, match="text_clip_too_long"):
    preprocess_clip.windows(5.0, s, True)
  with pytest.raises(preprocess_clip.Skip, match="too_short"):
    preprocess_clip.windows(0.2, s, False)
  with pytest.raises(ValueError, match="long_clips"):
    _settings(long_clips="cut")


def test_phone_duration_estimate_follows_the_voiced_span():
  latents = np.full((100, 80), -11.0, np.float32)
  latents[30:70] = -2.0  # speech from frame 30 to 70
  ends = np.array([0.5, 0.6, 0.8, 1.0, 1.1, 1.6])  # pau, 4 phones, pau (flite's own timing)
  dur = preprocess_clip.estimate_phone_durations(ends, latents, frame_rate=50.0)
  assert dur.sum() == 100 and dur.min() >= 1
  assert dur[0] == 30 and dur[-1] == 30  # the pauses fill the silence
  np.testing.assert_array_equal(dur[1:-1], [7, 13, 13, 7])  # 0.1/0.2/0.2/0.1 s over 40 frames
  with pytest.raises(preprocess_clip.Skip, match="bad_transcript"):
    preprocess_clip.estimate_phone_durations(np.linspace(0.1, 2, 200), latents, 50.0)


def test_frame_encoder_registry(monkeypatch):
  enc = frame_encoders.make("builtin")
  assert enc.dim == 256 and enc.frame_size == 64 and enc.describe()["name"] == "builtin"
  frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
  assert enc.encode_frames(frames).shape == (3, 256)
  assert {"builtin", "mobilenet_v2", "clip"} <= set(frame_encoders.names())
  with pytest.raises(KeyError, match="resnet.*registered"):
    frame_encoders.make("resnet")
  monkeypatch.setattr(frame_encoders, "CLIP_MODULE", "flowav.encoders.no_such_module")
  with pytest.raises(frame_encoders.EncoderUnavailableError, match="no default weights"):
    frame_encoders.make("clip")
  with pytest.raises(frame_encoders.EncoderUnavailableError, match="no_such_module"):
    frame_encoders.make("clip", weights="/some/clip/checkpoint")
  with pytest.raises(frame_encoders.EncoderUnavailableError, match="weights"):
    frame_encoders.make("mobilenet_v2", weights="/nonexistent/mobilenet_v2.pth")


def test_host_share_from_flags_or_environment(monkeypatch):
  for var in ("FLOWAV_PROCESS_ID", "FLOWAV_NUM_PROCESSES", "SLURM_PROCID", "SLURM_NTASKS"):
    monkeypatch.delenv(var, raising=False)
  assert preprocess.host_share() == (0, 1)
  monkeypatch.setenv("SLURM_PROCID", "2")
  monkeypatch.setenv("SLURM_NTASKS", "4")
  assert preprocess.host_share() == (2, 4)
  monkeypatch.setenv("FLOWAV_PROCESS_ID", "1")
  monkeypatch.setenv("FLOWAV_NUM_PROCESSES", "3")
  assert preprocess.host_share() == (1, 3)
  assert preprocess.host_share(0, 2) == (0, 2)  # flags win
  with pytest.raises(ValueError, match="process id 2 is not in"):
    preprocess.host_share(2, 2)


def test_refuses_to_overwrite_another_dataset(media_dir, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  records.DatasetInfo(name="flowav-demo", codec={}, latent_stats={}, rates={}, dims={},
                      splits={}).save(out)
  with pytest.raises(ValueError, match="flowav-demo.*refusing"):
    preprocess.run(str(media_dir), str(out), _config(), progress=False)


# ---- The command line: SIGKILL and rerun, several processes (slow: each run starts Python). ----


def _cli(inp, out, *extra, env=None, **popen) -> subprocess.Popen:
  cmd = [sys.executable, "-m", "flowav.main", "preprocess", f"--input={inp}", f"--out={out}",
         "--config=configs/preprocess.py:tiny", "--progress=false", *extra]
  full_env = {**os.environ, **(env or {})}
  return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen)


def _finish(proc: subprocess.Popen, timeout: float = 240) -> str:
  out, _ = proc.communicate(timeout=timeout)
  assert proc.returncode == 0, out
  return out


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
  """SIGKILLs the job's whole process group once `ready()` holds."""
  end = time.time() + timeout
  while not ready():
    assert proc.poll() is None, proc.communicate()[0]
    assert time.time() < end, "the job never reached the kill point"
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()


@pytest.fixture(scope="module")
def clean(media_dir, tmp_path_factory):
  """An uninterrupted CLI run with a pool of two workers."""
  out = tmp_path_factory.mktemp("clean") / "out"
  text = _finish(_cli(media_dir, out, "--config.num_workers=2"))
  assert "windows written" in text and "unsupported_codec" in text
  return out


def _same_dataset(a: pathlib.Path, b: pathlib.Path) -> None:
  assert _dataset(a) == _dataset(b)
  assert (a / records.INFO_FILE).read_text() == (b / records.INFO_FILE).read_text()


@pytest.mark.slow
def test_sigkill_while_processing_clips_then_rerun_equals_clean(media_dir, clean, tmp_path):
  out = tmp_path / "out"
  work = out / preprocess.WORK_DIR
  proc = _cli(media_dir, out, env={preprocess.TEST_DELAY_ENV: "clip=0.5"})
  _kill_when(proc, lambda: work.is_dir() and len(list(work.glob("*.rec"))) >= 3)
  done = len(list(work.glob("*.rec")))
  assert 3 <= done < len(testlib.GOOD) + len(testlib.BAD)
  assert not (out / records.INFO_FILE).exists()
  text = _finish(_cli(media_dir, out))
  report = json.loads((out / preprocess.REPORT_FILE).read_text())
  assert report["reused"] >= done and report["processed_now"] <= report["sources"] - done, text
  _same_dataset(out, clean)


@pytest.mark.slow
def test_sigkill_while_writing_shards_then_rerun_equals_clean(media_dir, clean, tmp_path):
  out = tmp_path / "out"
  proc = _cli(media_dir, out, env={preprocess.TEST_DELAY_ENV: "shard=30"})
  _kill_when(proc, lambda: out.is_dir() and any(out.glob("*.array_record")))
  assert not (out / records.INFO_FILE).exists()  # incomplete: no dataset_info.json yet
  _finish(_cli(media_dir, out))
  report = json.loads((out / preprocess.REPORT_FILE).read_text())
  assert report["processed_now"] == 0  # every clip result survived the kill
  _same_dataset(out, clean)
  assert not list(out.glob("*.tmp")) and not list((out / preprocess.WORK_DIR).glob(".*.tmp"))


@pytest.mark.slow
def test_two_processes_split_the_work_and_equal_one(media_dir, clean, tmp_path):
  out = tmp_path / "out"
  procs = [_cli(media_dir, out, f"--process_id={i}", "--num_processes=2") for i in (1, 0)]
  logs = [_finish(p) for p in procs]
  share = json.loads(next(line for line in logs[0].splitlines() if line.startswith('{"process_index"')))
  assert share["process_index"] == 1 and share["processed_now"] == share["sources"]
  report = json.loads((out / preprocess.REPORT_FILE).read_text())
  assert report["processed_now"] + share["processed_now"] == report["sources"]
  assert 0 < share["processed_now"] < report["sources"]
  _same_dataset(out, clean)


@pytest.mark.slow
def test_cli_refuses_unknown_config_keys_and_missing_flags(media_dir, tmp_path):
  proc = _cli(media_dir, tmp_path / "out", "--config.no_such_key=1")
  text, _ = proc.communicate(timeout=120)
  assert proc.returncode != 0 and "no_such_key" in text
  proc = subprocess.run([sys.executable, "-m", "flowav.main", "preprocess", f"--out={tmp_path}"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "--input" in proc.stderr


def test_sampling_uses_the_dataset_frame_encoder(built):
  import dataclasses  # pylint: disable=g-import-not-at-top

  from flowav.data import inputs  # pylint: disable=g-import-not-at-top
  out, _ = built
  info = records.DatasetInfo.load(out)
  encoder = inputs.dataset_frame_encoder(info)
  assert encoder.name == info.extra["video_encoder"]["name"] == "builtin"
  assert encoder.frame_size == info.extra["video_encoder"]["frame_size"]
  demo_like = dataclasses.replace(info, extra={**info.extra, "video_encoder": "a description"})
  assert inputs.dataset_frame_encoder(demo_like).name == "builtin"  # flowav-demo's format
  wrong = dataclasses.replace(info, dims={**info.dims, "video": 1280})
  with pytest.raises(ValueError, match="256-d features; the dataset has 1280-d"):
    inputs.dataset_frame_encoder(wrong)
