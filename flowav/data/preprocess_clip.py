"""preprocess, step 2: one media file -> schema examples (one per window), or a reason to skip it.

Per source: decode (PyAV for video, the frame at each k / video_fps, rotation applied, square
centre crop at the encoder's frame size; soundfile or PyAV for audio, mono, resampled to the codec
rate with the foundation's polyphase `flowav.audio.io.resample`; a video lasts as long as the
shorter of its picture and sound), cut into windows (config
`clip_seconds`, `long_clips`), and per window: codec latents of its samples, frame-encoder
features of its frames (audio-only files: `[0, D_v]` features and an empty mask), caption and
lyrics as UTF-8 byte tokens, the transcript as ARPAbet phone ids (flite, a separate program) with
phone durations (`config.phone_durations`, see `estimate_phone_durations`).

Bad media raise `Skip(reason, detail)`; REASONS lists the reasons.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import subprocess
from typing import Any

import av
import numpy as np
import soundfile

from flowav.audio import codec as codec_lib
from flowav.audio import io as audio_io
from flowav.data import media, schema
from flowav.data.preprocess_scan import Source
from flowav.encoders import frame_encoders

REASONS = {
  "empty": "zero-byte file, or no samples / frames",
  "corrupt": "the container or a stream cannot be decoded",
  "truncated": "the file ends before its declared length",
  "no_audio": "a video without an audio track",
  "unsupported_codec": "no decoder for a stream's codec",
  "bad_text": "caption, transcript or lyrics are not valid UTF-8",
  "bad_transcript": "flite cannot phonemize the transcript, or it has more phones than frames",
  "too_short": "shorter than config.min_seconds",
  "text_clip_too_long": "a clip with transcript or lyrics longer than config.max_text_seconds",
  "error": "an unexpected error (a bug or an unusual file): see the detail",
}
# Byte-level text tokens: id = UTF-8 byte value + 1, 0 = padding. Lossless and deterministic.
TEXT_TOKENIZER = {"name": "utf8_bytes", "ids": "UTF-8 byte value + 1; 0 = pad", "vocab_size": 257}
PHONE_DURATION_METHODS = {
  "estimate": "approximate: flite's synthetic phone timing stretched linearly over the clip's "
              "voiced span (log-mel level above 30% of the 10th..95th percentile range); "
              "leading/trailing pauses fill the rest. Not a forced alignment.",
  "none": "all zero (no alignment); the training pipeline drops zero-length phones",
}
_TRUNCATED_WAV = re.compile(r"^data\s*:\s*(\d+)\s*\(should be", re.M)


class Skip(Exception):
  """A source that is reported and skipped: `reason` is a REASONS key, `detail` says why."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f"{reason}: {detail}")
    self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a record depends on (besides the source): picklable for spawned workers."""
  clip_seconds: float
  long_clips: str
  min_seconds: float
  max_text_seconds: float
  video_encoder: str
  video_encoder_weights: str
  video_fps: float
  frame_size: int
  phone_durations: str

  def __post_init__(self):
    if self.long_clips not in ("split", "crop"):
      raise ValueError(f"config.long_clips={self.long_clips!r} must be 'split' or 'crop'")
    if self.phone_durations not in PHONE_DURATION_METHODS:
      raise ValueError(f"config.phone_durations={self.phone_durations!r} must be one of "
                       f"{sorted(PHONE_DURATION_METHODS)}")
    if not (self.clip_seconds > 0 and self.video_fps > 0 and self.min_seconds > 0):
      raise ValueError(f"config.clip_seconds={self.clip_seconds}, video_fps={self.video_fps} and "
                       f"min_seconds={self.min_seconds} must be positive")
    if self.max_text_seconds < self.min_seconds:
      raise ValueError(f"config.max_text_seconds={self.max_text_seconds} < min_seconds")

  @classmethod
  def from_config(cls, config: Any) -> Settings:
    """From the preprocess config (configs/preprocess.py)."""
    return cls(clip_seconds=float(config.clip_seconds), long_clips=str(config.long_clips),
               min_seconds=float(config.min_seconds),
               max_text_seconds=float(config.max_text_seconds),
               video_encoder=str(config.video_encoder),
               video_encoder_weights=str(config.video_encoder_weights),
               video_fps=float(config.video_fps), frame_size=int(config.frame_size),
               phone_durations=str(config.phone_durations))


def flite_phones(text: str) -> tuple[np.ndarray, np.ndarray]:
  """Phone ids `[L]` (flowav-demo's vocabulary, 0 = pad) and flite's synthetic end times `[L]`
  in seconds, framed by pauses. flite runs as a separate program (as inputs.phonemize does)."""
  from flowav.data.demo import speech  # pylint: disable=g-import-not-at-top
  if shutil.which("flite") is None:
    raise RuntimeError("transcripts need the `flite` program: apt-get install -y flite")
  try:
    res = subprocess.run(["flite", "-t", text, "-o", "none", "-psdur"], capture_output=True,
                         text=True, check=True, timeout=120)
    phones, ends = speech.parse_phone_durations(res.stdout, "transcript")
  except (subprocess.SubprocessError, ValueError) as e:
    raise Skip("bad_transcript", f"flite: {e}") from e
  return np.asarray([speech.PHONE_IDS[p] for p in phones], np.int32), ends


def estimate_phone_durations(ends_s: np.ndarray, latents: np.ndarray,
                             frame_rate: float) -> np.ndarray:
  """Frames per phone on the latent grid (summing to T_a), from flite's synthetic timing.

  The voiced span is where the mean log-mel level exceeds 30% of the way from its 10th to its
  95th percentile (the whole clip if that range is under 1 nat); the phones between the first
  and last pause are stretched linearly over it, the pauses take the rest.

  Args:
    ends_s: [L] flite end times, first and last phone pauses.
    latents: [T_a, C] log-mel latents of the clip.
  Returns:
    [L] int32 durations >= 1 summing to T_a.
  Raises:
    Skip('bad_transcript') if there are more phones than frames.
  """
  from flowav.data.demo import speech  # pylint: disable=g-import-not-at-top
  count, frames = len(ends_s), latents.shape[0]
  if count > frames:
    raise Skip("bad_transcript", f"{count} phones do not fit in {frames} latent frames")
  level = latents.mean(axis=1)
  lo, hi = np.percentile(level, 10), np.percentile(level, 95)
  start, end = 0, frames
  if hi - lo >= 1.0:
    voiced = np.nonzero(level > lo + 0.3 * (hi - lo))[0]
    start, end = int(voiced[0]), int(voiced[-1]) + 1
  a0, a1 = float(ends_s[0]), float(ends_s[-2]) if count > 1 else float(ends_s[0])
  b0, b1 = start / frame_rate, end / frame_rate
  scale = (b1 - b0) / (a1 - a0) if a1 > a0 else 0.0
  mapped = b0 + (np.asarray(ends_s[:-1], np.float64) - a0) * scale
  return speech.phone_frame_durations(np.append(mapped, frames / frame_rate), frame_rate, frames)


def _probe(path: str) -> tuple[bool, bool]:
  """(has a video stream, has an audio stream); Skip for unopenable files or missing decoders."""
  try:
    with av.open(path) as container:
      video, audio = container.streams.video, container.streams.audio
      for stream in (video[:1] + audio[:1]):
        if stream.codec_context is None:
          raise Skip("unsupported_codec", f"no decoder for the {stream.type} stream's codec")
      return bool(video), bool(audio)
  except av.error.FFmpegError as e:
    raise Skip("corrupt", f"cannot open ({e})") from e


def _decode_audio_av(path: str, sample_rate: int) -> np.ndarray:
  """Mono float32 at `sample_rate` from the first audio stream, through PyAV."""
  chunks = []
  try:
    with av.open(path) as container:
      stream = container.streams.audio[0]
      declared = float(stream.duration * stream.time_base) if stream.duration else None
      resampler = av.AudioResampler(format="fltp", layout="mono", rate=sample_rate)
      for frame in container.decode(stream):
        chunks.extend(out.to_ndarray()[0] for out in resampler.resample(frame))
      chunks.extend(out.to_ndarray()[0] for out in resampler.resample(None))
  except av.error.FFmpegError as e:
    raise Skip("corrupt", f"cannot decode audio ({e})") from e
  wav = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
  if declared and len(wav) < 0.95 * declared * sample_rate - sample_rate * 0.05:
    raise Skip("truncated", f"decoded {len(wav) / sample_rate:.2f} s of audio, the stream "
                            f"declares {declared:.2f} s")
  return wav


def _read_audio_file(path: str, sample_rate: int) -> np.ndarray:
  """soundfile for what libsndfile reads (wav, flac, mp3, ogg), else PyAV."""
  try:
    info = soundfile.info(path)
  except soundfile.SoundFileError:
    _, has_audio = _probe(path)
    if not has_audio:
      raise Skip("no_audio", "no audio stream") from None
    return _decode_audio_av(path, sample_rate)
  m = _TRUNCATED_WAV.search(info.extra_info or "")
  if m and int(m.group(1)) not in (0, 0xFFFFFFFF, 0x7FFFFFFF):  # streaming writers' placeholders
    raise Skip("truncated", "the data chunk is shorter than the header declares")
  try:
    data, sr = soundfile.read(path, dtype="float32", always_2d=True)
  except soundfile.SoundFileError as e:
    raise Skip("corrupt", f"cannot decode ({e})") from e
  if info.frames > 0 and data.shape[0] < 0.95 * info.frames:
    raise Skip("truncated", f"decoded {data.shape[0]} of {info.frames} declared samples")
  return audio_io.resample(data.mean(axis=1), sr, sample_rate)


@dataclasses.dataclass
class Media:
  wav: np.ndarray  # [N] float32 at the codec rate
  frames: np.ndarray | None  # [T_v, S, S, 3] uint8 at video_fps, or None for audio-only
  duration_s: float


def load_media(src: Source, settings: Settings, frame_size: int, sample_rate: int) -> Media:
  """Decodes one source (see the module docstring); raises Skip for bad media."""
  if os.path.getsize(src.path) == 0:
    raise Skip("empty", "zero-byte file")
  frames = None
  if src.kind == "audio":
    wav = _read_audio_file(src.path, sample_rate)
  else:
    has_video, has_audio = _probe(src.path)
    if not has_audio:
      raise Skip("no_audio", "no audio track")
    if not has_video:  # an audio-only container with a video extension: take its audio
      wav = _decode_audio_av(src.path, sample_rate)
    else:
      try:
        clip = media.read_video(src.path, fps=settings.video_fps, size=frame_size)
      except media.MediaError as e:
        detail = str(e).removeprefix(f"{src.path}: ")  # MediaError names the path first
        raise Skip("truncated" if detail.startswith("truncated") else "corrupt", detail) from e
      if clip.audio is None or not len(clip.audio):
        raise Skip("no_audio", "the audio track has no samples")
      wav = audio_io.resample(clip.audio, clip.audio_sr, sample_rate)
      frames = clip.frames
  if not len(wav):
    raise Skip("empty", "no audio samples")
  duration = len(wav) / sample_rate
  if frames is not None:
    duration = min(duration, len(frames) / settings.video_fps)
  return Media(wav=wav, frames=frames, duration_s=duration)


def windows(duration_s: float, settings: Settings, has_text: bool) -> list[tuple[float, float]]:
  """(start_s, length_s) of each record of a source lasting `duration_s`."""
  if duration_s < settings.min_seconds:
    raise Skip("too_short", f"{duration_s:.3f} s < config.min_seconds={settings.min_seconds}")
  w = settings.clip_seconds
  if has_text:
    if duration_s > settings.max_text_seconds:
      raise Skip("text_clip_too_long", f"{duration_s:.2f} s > config.max_text_seconds="
                                       f"{settings.max_text_seconds}")
    return [(0.0, duration_s)]
  if duration_s <= w + 1e-6:
    return [(0.0, duration_s)]
  if settings.long_clips == "crop":
    return [(0.0, w)]
  out = []
  for k in range(math.ceil(duration_s / w - 1e-9)):
    length = min(w, duration_s - k * w)
    if length >= settings.min_seconds - 1e-9:
      out.append((k * w, length))
  return out


class ClipProcessor:
  """Turns sources into examples; holds the codec and frame encoder (built once per process)."""

  def __init__(self, settings: Settings, encoder: frame_encoders.FrameEncoder | None = None):
    self.settings = settings
    self.codec = codec_lib.MelCodec()
    self.encoder = encoder or frame_encoders.make(settings.video_encoder,
                                                  weights=settings.video_encoder_weights or None,
                                                  frame_size=settings.frame_size)

  def examples(self, src: Source) -> tuple[list[dict[str, Any]], float]:
    """(schema examples, one per window, in window order; the source's duration in seconds)."""
    s = self.settings
    if src.text_error:
      raise Skip("bad_text", src.text_error)
    sr, rate = self.codec.sample_rate, self.codec.frame_rate
    m = load_media(src, s, self.encoder.frame_size, sr)
    has_text = bool(src.transcript or src.lyrics)
    task = "song" if src.lyrics else "speech" if src.transcript else "sound"
    phones = flite_phones(src.transcript) if src.transcript else None
    out = []
    for k, (start, length) in enumerate(windows(m.duration_s, s, has_text)):
      a0 = int(round(start * sr))
      seg = m.wav[a0:min(int(round((start + length) * sr)), len(m.wav))]
      latents = self.codec.encode(seg)
      if not len(latents):
        continue
      ex: dict[str, Any] = {
        "clip_id": src.record_id(k), "task_id": np.int32(schema.TASKS[task]),
        "start_s": np.float32(start), "duration_s": np.float32(m.duration_s),
        "audio_latents": latents, "audio_mask": np.ones(len(latents), bool),
      }
      if m.frames is not None:
        v0 = int(round(start * s.video_fps))
        frames = m.frames[v0:v0 + math.ceil(length * s.video_fps - 1e-6)]
        feats = self.encoder.encode_frames(frames)
      else:
        feats = np.zeros((0, self.encoder.dim), np.float32)
      ex["video_features"] = np.asarray(feats, np.float32)
      ex["video_mask"] = np.ones(len(feats), bool) if m.frames is not None else np.zeros(0, bool)
      if src.caption:
        ids = schema.byte_tokens(src.caption)
        ex.update(caption=src.caption, text_ids=ids, text_mask=np.ones(len(ids), bool))
      if phones is not None:
        ids, ends = phones
        dur = (estimate_phone_durations(ends, latents, rate) if s.phone_durations == "estimate"
               else np.zeros(len(ids), np.int32))
        ex.update(transcript=src.transcript, transcript_ids=ids,
                  transcript_mask=np.ones(len(ids), bool), phone_durations=dur)
      if src.lyrics:
        ids = schema.byte_tokens(src.lyrics)
        ex.update(lyric_ids=ids, lyric_mask=np.ones(len(ids), bool))
      schema.validate_example(ex, source=src.rel)
      out.append(ex)
    if not out:
      raise Skip("too_short", "no window has a full latent frame")
    return out, m.duration_s
