"""Model inputs for sampling: held-out clips of a dataset, or a user's video (+ transcript).

Both produce padded batches in the pipeline's layout (fixed lengths, masks, normalised latents),
so the sampler sees exactly what training saw.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess
from typing import Any

import numpy as np

from flowav.audio.codec import LatentStats
from flowav.data import pipeline, records, schema


@dataclasses.dataclass
class Clip:
  """One conditioning example plus where its ground truth lives."""
  example: dict[str, Any]  # schema example (unpadded)
  prepared: dict[str, np.ndarray]  # padded to the window, latents normalised
  raw_dir: pathlib.Path | None  # dataset raw/<split>/ dir with <clip_id>.json/.mp4, if any


def _prepare(ex: dict[str, Any], lengths: pipeline.Lengths, rates: dict[str, float],
             stats: LatentStats) -> dict[str, np.ndarray]:
  out = pipeline.crop_and_pad(ex, lengths, rates)
  out["audio_latents"] = stats.normalize(out["audio_latents"]) * out["audio_mask"][:, None]
  return out


def heldout_clips(data_dir: str, split: str, lengths: pipeline.Lengths, *,
                  task: str | None = None, limit: int | None = None) -> list[Clip]:
  """Clips of `split` in record order, optionally of one task only."""
  info = records.DatasetInfo.load(data_dir)
  stats = LatentStats.from_dict(info.latent_stats)
  clips = []
  for path in info.shard_paths(data_dir, split):
    for i, data in enumerate(records.read_shard(path)):
      ex = records.decode_example(data, source=f"{path} record {i}")
      schema.validate_example(ex, source=f"{path} record {i}")
      if task is not None and int(ex["task_id"]) != schema.TASKS[task]:
        continue
      clips.append(Clip(ex, _prepare(ex, lengths, info.rates, stats),
                        pathlib.Path(data_dir) / "raw" / split))
      if limit is not None and len(clips) >= limit:
        return clips
  return clips


def stack(prepared: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """Stacks prepared examples into a batch (the keys of the first one)."""
  return {k: np.stack([p[k] for p in prepared]) for k in prepared[0]}


def phonemize(text: str, vocab: list[str]) -> tuple[np.ndarray, np.ndarray]:
  """ARPAbet phone ids `[L]` of `text` and flite's end time of each phone `[L]` in seconds, via
  flite (a separate program; BSD-like licence).

  Ids follow the dataset's vocabulary (`DatasetInfo.vocab['phones']`: position = id, 0 = pad),
  with flite's extra phones mapped as the demo builder maps them.
  """
  from flowav.data.demo import speech  # pylint: disable=g-import-not-at-top
  if shutil.which("flite") is None:
    raise RuntimeError("--transcript needs the `flite` program: apt-get install -y flite")
  text = " ".join(text.split())
  if not text:
    raise ValueError("--transcript is empty")
  res = subprocess.run(["flite", "-t", text, "-o", "none", "-psdur"], capture_output=True,
                       text=True, check=True, timeout=60)
  phones, ends = speech.parse_phone_durations(res.stdout, f"--transcript {text!r}")
  index = {p: i for i, p in enumerate(vocab) if i > 0}
  unknown = sorted({p for p in phones if p not in index})
  if unknown:
    raise ValueError(f"--transcript {text!r}: phones {unknown} are not in the model's vocabulary")
  return np.asarray([index[p] for p in phones], np.int32), ends


def dataset_frame_encoder(info: records.DatasetInfo):
  """The frame encoder that made a dataset's video features (`preprocess` records it in
  `extra.video_encoder`; flowav-demo uses the builtin one), so a user's video at sampling time gets
  the same features the model was trained on."""
  from flowav.encoders import frame_encoders  # pylint: disable=g-import-not-at-top
  desc = info.extra.get("video_encoder")
  if not isinstance(desc, dict):  # flowav-demo stores a text description of its builtin encoder
    desc = {"name": "builtin"}
  size = int(desc.get("frame_size") or info.extra.get("config", {}).get("frame_size", 64))
  weights = desc.get("weights")
  encoder = frame_encoders.make(desc["name"], weights=None if weights in (None, "default") else weights,
                                frame_size=size)
  if encoder.dim != int(info.dims["video"]):
    raise ValueError(f"video encoder {desc['name']!r} gives {encoder.dim}-d features; the dataset "
                     f"has {info.dims['video']}-d (dataset_info.json extra.video_encoder)")
  return encoder


def video_clip(video_path: str, info: records.DatasetInfo, lengths: pipeline.Lengths,
               clip_seconds: float, transcript: str | None = None) -> Clip:
  """A user's video (any frame rate) encoded like the training data, with an optional transcript.

  Raises ValueError if the video is longer than the model's window `clip_seconds`.
  """
  return condition_clip(info, lengths, clip_seconds, video=video_path, transcript=transcript)


def read_video_features(info: records.DatasetInfo, video: str) -> tuple[np.ndarray, float]:
  """A video file (any frame rate) -> (features [T_v, D] at the dataset's video rate from its
  frame encoder, duration in seconds)."""
  from flowav.data import media  # pylint: disable=g-import-not-at-top
  encoder = dataset_frame_encoder(info)
  clip = media.read_video(video, fps=float(info.rates["video"]), size=encoder.frame_size)
  return encoder.encode_frames(clip.frames), float(clip.duration_s)


def condition_clip(info: records.DatasetInfo, lengths: pipeline.Lengths, clip_seconds: float, *,
                   video: str | None = None, transcript: str | None = None,
                   caption: str | None = None, lyrics: str | None = None,
                   duration: float | None = None,
                   video_features: tuple[np.ndarray, float] | None = None) -> Clip:
  """Any subset of conditions given by a user, encoded like the training data.

  `video`: a file (any frame rate; features from the dataset's frame encoder); `transcript` /
  `lyrics`: text, turned into phone ids by flite (`transcript_ids`; lyrics also as UTF-8 byte
  `lyric_ids`); `caption`: text (byte tokens in the pipeline); `duration`: seconds of audio to make,
  by default the video's length. Raises ValueError for no duration, or one longer than the model's
  window `clip_seconds` (`flowav.long_form` makes longer sound). `video_features`: `video`'s
  (features, seconds) from `read_video_features`, when the caller has them already.
  """
  features = None
  if video:
    features, video_s = video_features or read_video_features(info, video)
    if video_s > clip_seconds + 1.0 / float(info.rates["video"]):
      raise ValueError(f"{video} lasts {video_s:.2f} s; this model's window is "
                       f"{clip_seconds:.2f} s (config.data.clip_seconds). Trim the video, or "
                       "leave out --transcript / --lyrics to make sound in windows (long form).")
    duration = video_s if duration is None else duration
  return features_clip(info, lengths, clip_seconds, video_features=features,
                       clip_id=pathlib.Path(video).stem if video else "sample",
                       transcript=transcript, caption=caption, lyrics=lyrics, duration=duration)


def features_clip(info: records.DatasetInfo, lengths: pipeline.Lengths, clip_seconds: float, *,
                  video_features: np.ndarray | None = None, clip_id: str = "sample",
                  transcript: str | None = None, caption: str | None = None,
                  lyrics: str | None = None, duration: float | None = None) -> Clip:
  """`condition_clip` from video features `[T_v, D]` already encoded (`read_video_features`)."""
  ex: dict[str, Any] = {"clip_id": clip_id, "start_s": np.float32(0.0)}
  if video_features is not None:
    ex.update(video_features=video_features,
              video_mask=np.ones((video_features.shape[0],), bool))
  if duration is None:
    raise ValueError("--duration (seconds of audio) is needed when there is no --video")
  if not 0 < duration <= clip_seconds + 1e-6:
    raise ValueError(f"--duration={duration} must be in (0, {clip_seconds:.2f}] s (this model's "
                     "window, config.data.clip_seconds)")
  num_audio = int(np.floor(duration * float(info.rates["audio"]) + 1e-6))
  task = "song" if lyrics else "speech" if transcript else "sound"
  ex.update(duration_s=np.float32(duration), task_id=np.int32(schema.TASKS[task]),
            audio_latents=np.zeros((num_audio, lengths.audio_dim), np.float32),
            audio_mask=np.ones((num_audio,), bool))
  if caption:
    ex["caption"] = caption
  spoken = transcript or lyrics
  if spoken:
    from flowav.data.demo import speech  # pylint: disable=g-import-not-at-top
    ids, ends_s = phonemize(spoken, info.vocab["phones"])
    if ids.shape[0] > min(lengths.phones, num_audio):
      raise ValueError(f"the text has {ids.shape[0]} phones; the model takes at most "
                       f"{lengths.phones} (config.data.max_phones) and one per audio frame "
                       f"({num_audio} in {duration:.2f} s)")
    # flite's own timing, squeezed into `duration` when its speech is longer; the last pause runs
    # to the end. VSSFlow's duration predictor replaces it from the video; AudioGen-Omni uses it
    # with `lyrics_aligned` and otherwise aligns the phones by attention.
    squeeze = min(1.0, duration / float(ends_s[-1]))
    ex.update(transcript=spoken, transcript_ids=ids, transcript_mask=np.ones_like(ids, bool),
              phone_durations=speech.phone_frame_durations(
                ends_s * squeeze, float(info.rates["audio"]), num_audio))
  if lyrics:
    ids = schema.byte_tokens(lyrics)
    ex.update(lyric_ids=ids, lyric_mask=np.ones_like(ids, bool))
  stats = LatentStats.from_dict(info.latent_stats)
  prepared = _prepare(ex, lengths, info.rates, stats)
  if spoken:  # crop_and_pad drops zero-length phones; keep every phone of the text
    prepared["transcript_ids"] = pipeline._fit(ex["transcript_ids"], lengths.phones)
    prepared["transcript_mask"] = pipeline._fit(ex["transcript_mask"], lengths.phones)
    prepared["phone_durations"] = pipeline._fit(ex["phone_durations"], lengths.phones)
  return Clip(ex, prepared, None)
