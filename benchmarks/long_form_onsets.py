r"""Does long-form sound (`flowav.long_form`) stay on the video past the model's window?

Each long video is `--clips_per_video` consecutive held-out impact clips of a VSSFlow flowav-demo
run, joined into one mp4 (so 3 x 2 s = 6 s for a 2 s window), with their contacts as the truth.
Every video is sampled in windows (`--overlap` seconds carried into each next window) and scored
by onset F1 against its contacts (each clip's part on its own, as in the demo eval), beside two
arms that should do worse:
  control      the same sampling from another long video (rotated), scored against these contacts
  no_overlap   windows that do not continue each other (overlap 0): seams can click or go silent
and the ceiling:
  clip_alone   each clip sampled in a window of its own and decoded alone (trimming the video)
Also counts detected onsets within `--seam_s` of a window's first new frame that match no contact
(seam clicks). Writes benchmarks/results/long_form_onsets.json (or --out).

  python benchmarks/long_form_onsets.py --workdir=runs/demo [--videos=8]
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

import jax
import machine  # this folder
import numpy as np
from absl import app, flags

from flowav import generate, long_form
from flowav.data import inputs, media, pipeline, records
from flowav.eval import demo, onsets

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained VSSFlow flowav-demo run.", required=True)
_VIDEOS = flags.DEFINE_integer("videos", 8, "Long videos to make and score.")
_CLIPS_PER_VIDEO = flags.DEFINE_integer("clips_per_video", 3, "Held-out clips joined per video.")
_OVERLAP = flags.DEFINE_float("overlap", 0.5, "Seconds each window continues of the previous one.")
_SEAM_S = flags.DEFINE_float("seam_s", 0.1, "Onsets this close to a seam count as seam onsets.")
_OUT = flags.DEFINE_string("out", None, "Result JSON (default benchmarks/results/...).")


def long_videos(raw_dir: pathlib.Path, out_dir: pathlib.Path, fps: float, sample_rate: int,
                num: int, per_video: int) -> list[tuple[str, list[tuple[float, float, np.ndarray]]]]:
  """(mp4 path, [(start s, end s, contact times [K] s from start)] of its clips) of `num` videos,
  each `per_video` held-out impact clips joined in order."""
  truths = sorted(raw_dir.glob("impacts-*.json"))
  if len(truths) < num * per_video:
    raise ValueError(f"{raw_dir} has {len(truths)} impact clips; need {num * per_video}")
  videos = []
  for v in range(num):
    frames, spans, offset = [], [], 0.0
    for truth_path in truths[v * per_video:(v + 1) * per_video]:
      clip = media.read_video(truth_path.with_suffix(".mp4"), fps=fps)
      contacts = np.asarray(json.loads(truth_path.read_text())["contact_times_s"], np.float64)
      frames.append(clip.frames)
      spans.append((offset, offset + clip.frames.shape[0] / fps, contacts))
      offset = spans[-1][1]
    path = out_dir / f"long-{v:02d}.mp4"
    media.write_mp4(path, np.concatenate(frames), fps, None, sample_rate)
    videos.append((str(path), spans))
  return videos


def clip_onsets(wav: np.ndarray, sr: int, spans: list[tuple[float, float, np.ndarray]]
                ) -> list[np.ndarray]:
  """Onsets (s, from each clip's start) detected in each clip's part of `wav` on its own, as the
  demo eval does per clip: the detector's threshold is relative to the loudest onset, so one
  loud clip would hide a quiet one's onsets in a joint detection."""
  return [np.asarray(onsets.detect_onsets(wav[int(round(a * sr)):int(round(b * sr))], sr))
          for a, b, _ in spans]


def seam_onsets(found_s: np.ndarray, contacts: np.ndarray, seams_s: list[float], seam_s: float,
                tol_s: float) -> int:
  """Detected onsets within `seam_s` of a seam and farther than `tol_s` from every contact."""
  found_s = np.asarray(found_s, np.float64)
  near_seam = np.zeros(found_s.shape, bool)
  for s in seams_s:
    near_seam |= np.abs(found_s - s) <= seam_s
  if contacts.size:
    near_seam &= np.min(np.abs(found_s[:, None] - contacts[None, :]), axis=1) > tol_s
  return int(near_seam.sum())


def main(_):
  run = generate.load_run(_WORKDIR.value)
  info = records.DatasetInfo.load(run.config.data.dir)
  lengths = pipeline.config_lengths(info, run.config.data)
  sr, fps = int(run.codec.sample_rate), float(info.rates["video"])
  tol_s = float(run.config.eval.onset_tolerance_frames) / fps
  raw_dir = pathlib.Path(run.config.data.dir) / "raw" / run.config.data.test_split
  key = jax.random.key(int(run.config.sample.seed))
  arms = {"model": [], "control": [], "no_overlap": [], "clip_alone": []}
  seam_counts = {"model": 0, "no_overlap": 0}
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    videos = long_videos(raw_dir, pathlib.Path(tmp), fps, sr, _VIDEOS.value,
                         _CLIPS_PER_VIDEO.value)
    features = [inputs.read_video_features(info, path) for path, _ in videos]
  for v, ((path, spans), (feats, seconds)) in enumerate(zip(videos, features)):
    other = features[(v + 1) % len(features)][0]
    n = min(feats.shape[0], other.shape[0])
    seconds = min(seconds, n / fps)
    spans = [(a, min(b, seconds), c[c < min(b, seconds) - a]) for a, b, c in spans if a < seconds]
    contacts = np.concatenate([a + c for a, _, c in spans])
    setups = {"model": (feats, _OVERLAP.value), "control": (other[:n], _OVERLAP.value),
              "no_overlap": (feats, 0.0)}
    row = {"video": pathlib.Path(path).name, "seconds": seconds, "contacts_s": contacts.tolist()}
    for arm, (video_features, overlap) in setups.items():
      lat, windows = long_form.sample_long(run, info, lengths, duration=seconds, key=key,
                                           video_features=video_features, overlap_s=overlap)
      wav = run.codec.decode(lat, vocoder=demo.EVAL_VOCODER)
      found = clip_onsets(wav, sr, spans)
      arms[arm] += [onsets.match_onsets(f, c, tol_s) for f, (_, _, c) in zip(found, spans)]
      found = np.concatenate([a + f for f, (a, _, _) in zip(found, spans)])
      # A seam: where a window's new frames begin.
      seams = [max(a, prev_b) / float(run.codec.frame_rate)
               for (a, _), (_, prev_b) in zip(windows[1:], windows[:-1])]
      if arm in seam_counts:
        seam_counts[arm] += seam_onsets(found, contacts, seams, _SEAM_S.value, tol_s)
      row[f"{arm}_onsets_s"] = found.tolist()
      row[f"{arm}_windows"] = len(windows)
    # The ceiling: each clip in a window of its own, decoded alone (a user trimming the video).
    alone = []
    for a, b, c in spans:
      lat, _ = long_form.sample_long(run, info, lengths, duration=b - a, key=key,
                                     video_features=feats[int(round(a * fps)):int(round(b * fps))])
      alone.append(onsets.detect_onsets(run.codec.decode(lat, vocoder=demo.EVAL_VOCODER), sr))
      arms["clip_alone"].append(onsets.match_onsets(alone[-1], c, tol_s))
    row["clip_alone_onsets_s"] = np.concatenate([a + f for f, (a, _, _) in zip(alone, spans)]
                                                ).tolist()
    rows.append(row)
    print(row["video"], {arm: onsets.aggregate(res[-len(spans):])["f1"]
                         for arm, res in arms.items()}, flush=True)
  result = {
    "machine": {"cpu": machine.cpu_model(), "cores": os.cpu_count(), "jax": jax.__version__},
    "workdir": _WORKDIR.value, "step": run.step, "weights": run.weights,
    "window_s": float(run.config.data.clip_seconds), "overlap_s": _OVERLAP.value,
    "tolerance_s": tol_s, "videos": len(rows), "clips_per_video": _CLIPS_PER_VIDEO.value,
    "scored_per": "clip",
    "arms": {arm: onsets.aggregate(res) for arm, res in arms.items()},
    "model_minus_control": onsets.paired_bootstrap_f1(arms["model"], arms["control"]),
    "model_minus_no_overlap": onsets.paired_bootstrap_f1(arms["model"], arms["no_overlap"]),
    "unmatched_onsets_near_seams": seam_counts, "seam_s": _SEAM_S.value, "per_video": rows,
  }
  out = pathlib.Path(_OUT.value or pathlib.Path(__file__).parent / "results" /
                     "long_form_onsets.json")
  out.write_text(json.dumps(result, indent=1) + "\n")
  print(json.dumps({k: result[k] for k in ("arms", "model_minus_control", "model_minus_no_overlap",
                                           "unmatched_onsets_near_seams")}, indent=1))


if __name__ == "__main__":
  app.run(main)
