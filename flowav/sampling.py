"""`sample` mode: generate for held-out clips or a user's video; write wav, mp4 and PNG each."""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from flowav import generate, long_form, outputs
from flowav.data import inputs, media, pipeline, records, schema


def _lengths(run: generate.Run) -> tuple[records.DatasetInfo, pipeline.Lengths]:
  info = records.DatasetInfo.load(run.config.data.dir)
  return info, pipeline.config_lengths(info, run.config.data)


def _generate(run: generate.Run, clips: list[inputs.Clip], seed: int) -> list[np.ndarray]:
  """Latents for clips of one task, in batches; speech gets predicted durations first."""
  out = []
  bs = int(run.config.sample.batch_size)
  for i in range(0, len(clips), bs):
    batch = inputs.stack([c.prepared for c in clips[i:i + bs]])
    if batch["transcript_mask"].any():
      batch["phone_durations"] = run.predict_durations(batch)
    out.extend(run.sample(batch, jax.random.key(seed + i)))
  return out


def sample_heldout(workdir: str | os.PathLike, out: str | os.PathLike, *,
                   num_clips: int | None = None, sample_overrides: Sequence[str] = ()
                   ) -> list[dict[str, Any]]:
  """Samples the first `num_clips` test clips of each task; returns the manifest rows.
  `sample_overrides` ('sample.KEY=VALUE', `generate.override_sample`) change the sampler."""
  run = generate.load_run(workdir, sample_overrides=sample_overrides)
  info, lengths = _lengths(run)
  n = int(run.config.sample.num_clips) if num_clips is None else num_clips
  out = pathlib.Path(out)
  rows = []
  for task in ("sound", "speech"):
    clips = inputs.heldout_clips(run.config.data.dir, run.config.data.test_split, lengths,
                                 task=task, limit=n if task == "sound" else max(1, n // 2))
    if not clips:
      continue
    for clip, lat in zip(clips, _generate(run, clips, int(run.config.sample.seed))):
      valid = int(clip.prepared["audio_mask"].sum())
      lat = lat[:valid]
      wav = run.codec.decode(lat)
      cid = clip.example["clip_id"]
      raw = clip.raw_dir / f"{cid}.mp4" if clip.raw_dir else None
      frames = (media.read_video(str(raw), fps=float(info.rates["video"])).frames
                if raw is not None and raw.exists() else None)
      truth_path = clip.raw_dir / f"{cid}.json" if clip.raw_dir else None
      marks = {}
      if truth_path is not None and truth_path.exists():
        truth = json.loads(truth_path.read_text())
        if "contact_times_s" in truth:
          marks["contacts"] = truth["contact_times_s"]
      paths = outputs.write_sample(
        out, cid, wav, int(run.codec.sample_rate), frames=frames, fps=float(info.rates["video"]),
        mel=lat, frame_rate=float(run.codec.frame_rate),
        reference_mel=np.asarray(clip.example["audio_latents"]), marks=marks)
      rows.append({"clip_id": cid, "task": task, **paths})
  manifest = {"workdir": str(workdir), "step": run.step, "weights": run.weights,
              "sample_overrides": list(sample_overrides), "samples": rows}
  (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
  return rows


def sample_video(workdir: str | os.PathLike, video: str, out: str | os.PathLike, *,
                 transcript: str | None = None) -> dict[str, Any]:
  """Generates audio (sound, or speech of `transcript`) for a user's video file."""
  return sample_conditions(workdir, out, video=video, transcript=transcript)


def sample_conditions(workdir: str | os.PathLike, out: str | os.PathLike, *,
                      video: str | None = None, transcript: str | None = None,
                      caption: str | None = None, lyrics: str | None = None,
                      duration: float | None = None, name: str | None = None,
                      sample_overrides: Sequence[str] = (),
                      window_overlap_s: float | None = None) -> dict[str, Any]:
  """Generates audio from any subset of conditions (`inputs.condition_clip`); writes
  `{name}.wav` (+ `.mp4` muxed with the video, when there is one, and a spectrogram `.png`).

  Sound (no transcript or lyrics) longer than the model's window is made in overlapping windows
  (`long_form`, each continuing `window_overlap_s` seconds of the previous one, by default a
  quarter of the window); the result's "windows" counts them.
  """
  run = generate.load_run(workdir, sample_overrides=sample_overrides)
  given = {k for k, v in (("video", video), ("transcript", transcript), ("caption", caption),
                          ("lyrics", lyrics)) if v}
  unused = sorted(given - set(getattr(run.model, "USER_CONDITIONS", ())))
  if unused:
    raise ValueError(f"{run.config.model.name} does not take {unused}; it takes "
                     f"{list(getattr(run.model, 'USER_CONDITIONS', ()))}")
  if (transcript or lyrics) and not video and hasattr(run.model, "predict_durations"):
    raise ValueError(f"{run.config.model.name} times a transcript from the face video: give "
                     "--video with --transcript")
  info, lengths = _lengths(run)
  window_s = float(run.config.data.clip_seconds)
  features, video_s = inputs.read_video_features(info, video) if video else (None, None)
  total_s = video_s if duration is None else duration
  seed = int(run.config.sample.seed)
  # A video may run one frame past the window (rounding); condition_clip crops it to the window.
  slack = 1.0 / float(info.rates["video"]) if video else 1e-6
  if total_s is not None and total_s > window_s + slack and not (transcript or lyrics):
    lat, spans = long_form.sample_long(run, info, lengths, duration=total_s,
                                       key=jax.random.key(seed), video_features=features,
                                       caption=caption, overlap_s=window_overlap_s)
    windows, task = len(spans), "sound"
  else:
    clip = inputs.condition_clip(info, lengths, window_s, video=video, transcript=transcript,
                                 caption=caption, lyrics=lyrics, duration=duration,
                                 video_features=(features, video_s) if video else None)
    lat = _generate(run, [clip], seed)[0]
    lat = lat[:int(clip.prepared["audio_mask"].sum())]
    windows, task = 1, schema.TASK_NAMES[int(clip.example["task_id"])]
  wav = run.codec.decode(lat)
  frames = media.read_video(video, fps=float(info.rates["video"])).frames if video else None
  stem = name or (pathlib.Path(video).stem if video else "sample")
  return {"task": task, "windows": windows, **outputs.write_sample(
    out, stem, wav, int(run.codec.sample_rate), frames=frames,
    fps=float(info.rates["video"]), mel=lat, frame_rate=float(run.codec.frame_rate))}
