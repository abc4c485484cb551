"""Video files in and out: H.264 + AAC mp4 writing and frame-rate-exact reading, through PyAV.

`write_mp4` encodes with fixed settings (libx264 yuv420p, one thread) so the same frames give the
same bytes, and replaces the target atomically. `read_video` decodes every frame, applies the
rotation stored in the display matrix (quarter turns; mirror flips are not applied), and resamples
to an exact output rate by presentation timestamps, so variable-frame-rate files and any source rate
give frame k = the source frame on screen at time k / fps. Unreadable files raise `MediaError`
naming the path and the reason.
"""

from __future__ import annotations

import dataclasses
import fractions
import math
import os
import pathlib

import av
import numpy as np
from PIL import Image

_CRF = "18"  # visually near-lossless at 64x64; features come from the rendered frames anyway
_PRESET = "veryfast"
# One thread, and no macroblock tree: with MB-tree on, x264's lookahead gave different bytes for
# the same small frames from run to run (measured on 32x32 clips); without it, always the same.
_X264_OPTIONS = {"crf": _CRF, "preset": _PRESET, "threads": "1", "x264-params": "mbtree=0"}
_AAC_FRAME = 1024  # samples per AAC frame


class MediaError(ValueError):
  """A media file cannot be read (corrupt, truncated, empty, or without a video stream)."""


@dataclasses.dataclass
class VideoClip:
  """Decoded video at a fixed rate.

  Attributes:
    frames: [T, H, W, 3] uint8 RGB; frame k is what the source shows at time k / fps.
    fps: the output frame rate (as requested).
    source_fps: the file's average frame rate.
    duration_s: the source video duration (last frame's end).
    audio: [N] float32 mono in [-1, 1], time-aligned to the first video frame, or None.
    audio_sr: the audio sample rate (the file's own), or None.
  """
  frames: np.ndarray
  fps: float
  source_fps: float
  duration_s: float
  audio: np.ndarray | None
  audio_sr: int | None


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, wav: np.ndarray | None,
              sample_rate: int) -> None:
  """Writes frames (and optional mono audio) as an H.264 + AAC mp4, atomically.

  Odd frame sizes are padded by one edge row/column (yuv420p needs even sizes).

  Args:
    path: target file; written to a temporary name in the same folder, then renamed.
    frames: [T, H, W, 3] uint8 RGB, T >= 1.
    fps: frame rate (any positive number; stored as a rational).
    wav: [N] float mono samples in [-1, 1] (clipped), or None for a silent-track-free file.
    sample_rate: audio sample rate in Hz (ignored when wav is None).
  """
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
    raise ValueError(f"write_mp4: frames must be uint8 [T>=1, H, W, 3], got {frames.dtype} "
                     f"{frames.shape}")
  if not fps > 0:
    raise ValueError(f"write_mp4: fps must be positive, got {fps}")
  if wav is not None:
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
      raise ValueError(f"write_mp4: wav must be mono [N], got shape {wav.shape}")
    if sample_rate <= 0:
      raise ValueError(f"write_mp4: sample_rate must be positive, got {sample_rate}")
  pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
  if pad_h or pad_w:
    frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp")
  try:
    with av.open(str(tmp), "w", format="mp4") as container:
      rate = fractions.Fraction(fps).limit_denominator(1001)
      video = container.add_stream("libx264", rate=rate, options=_X264_OPTIONS)
      video.width, video.height = frames.shape[2], frames.shape[1]
      video.pix_fmt = "yuv420p"
      video.codec_context.thread_count = 1
      audio = None
      if wav is not None:
        # The fast coder costs half the default's CPU; the quality stays fine for previews.
        audio = container.add_stream("aac", rate=int(sample_rate), options={"aac_coder": "fast"})
        audio.layout = "mono"
      for i, image in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        frame.pts = i
        container.mux(video.encode(frame))
      container.mux(video.encode())
      if audio is not None:
        samples = np.clip(wav, -1.0, 1.0)
        for start in range(0, len(samples), _AAC_FRAME):
          chunk = samples[None, start:start + _AAC_FRAME]
          frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="flt",
                                             layout="mono")
          frame.sample_rate, frame.pts = int(sample_rate), start
          container.mux(audio.encode(frame))
        container.mux(audio.encode())
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def read_video(path: str | os.PathLike, *, fps: float, size: int | None = None) -> VideoClip:
  """Decodes a video file and resamples it to exactly `fps` frames per second.

  Output frame k (k = 0 .. ceil(duration_s * fps) - 1) is the source frame whose presentation
  interval contains k / fps, counting time from the first frame. With `size`, each frame is
  centre-cropped to a square and area-averaged (PIL box filter) to size x size.

  Raises:
    FileNotFoundError if `path` does not exist; MediaError (a ValueError) naming `path` if it is
    empty, corrupt or truncated, or has no video stream.
  """
  path = pathlib.Path(path)
  if not fps > 0:
    raise ValueError(f"read_video: fps must be positive, got {fps}")
  if size is not None and size < 1:
    raise ValueError(f"read_video: size must be >= 1, got {size}")
  if not path.exists():
    raise FileNotFoundError(f"read_video: {path} does not exist")
  if path.stat().st_size == 0:
    raise MediaError(f"{path}: empty file (0 bytes)")
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        raise MediaError(f"{path}: no video stream")
      decoded = _Decoded(container, size)
      for frame in container.decode(*decoded.streams):
        decoded.add(frame)
  except av.error.FFmpegError as e:
    raise MediaError(f"{path}: cannot decode ({e})") from e
  times, images, source_fps, duration_s = decoded.video(path)
  count = max(1, math.ceil(duration_s * fps - 1e-6))
  # Frame on screen at time t: the last source frame whose timestamp is <= t.
  picks = np.searchsorted(times, np.arange(count) / fps + 1e-9, side="right") - 1
  frames = np.stack([images[i] for i in np.clip(picks, 0, len(images) - 1)])
  audio = decoded.audio(start_s=decoded.first_video_time)
  return VideoClip(frames=frames, fps=float(fps), source_fps=source_fps, duration_s=duration_s,
                   audio=audio, audio_sr=decoded.audio_sr if audio is not None else None)


def _declared_seconds(stream: av.stream.Stream) -> float | None:
  """The stream's declared duration in seconds, if the container states one."""
  if stream.duration and stream.time_base:
    return float(stream.duration * stream.time_base)
  return None


class _Decoded:
  """Accumulates the frames of one pass over the first video and first audio stream."""

  def __init__(self, container: av.container.InputContainer, size: int | None):
    self.size = size
    self.video_stream = container.streams.video[0]
    self.audio_stream = container.streams.audio[0] if container.streams.audio else None
    self.streams = [self.video_stream] + ([self.audio_stream] if self.audio_stream else [])
    self.nominal_fps = float(self.video_stream.average_rate or self.video_stream.guessed_rate or 0)
    self.times: list[float] = []
    self.images: list[np.ndarray] = []
    self.last_len = 1.0 / self.nominal_fps if self.nominal_fps else 0.0
    self.audio_sr = int(self.audio_stream.rate) if self.audio_stream else None
    # Declared lengths are read now: the results are used after the container is closed, when a
    # stream's fields are no longer valid (time_base was seen to read None then).
    self.video_declared_s = _declared_seconds(self.video_stream)
    self.audio_declared_s = _declared_seconds(self.audio_stream) if self.audio_stream else None
    self.resampler = (av.AudioResampler(format="fltp", layout="mono", rate=self.audio_sr)
                      if self.audio_stream else None)
    self.chunks: list[np.ndarray] = []
    self.first_audio_time: float | None = None

  @property
  def first_video_time(self) -> float:
    return min(self.times) if self.times else 0.0

  def add(self, frame: av.VideoFrame | av.AudioFrame) -> None:
    if isinstance(frame, av.VideoFrame):
      self._add_video(frame)
    else:
      if self.first_audio_time is None and frame.time is not None:
        self.first_audio_time = float(frame.time)
      for out in self.resampler.resample(frame):
        self.chunks.append(out.to_ndarray()[0])

  def _add_video(self, frame: av.VideoFrame) -> None:
    t = frame.time
    if t is None:  # no timestamp: continue from the previous frame at the nominal rate
      t = self.times[-1] + self.last_len if self.times else 0.0
    image = frame.to_ndarray(format="rgb24")
    turns = round((frame.rotation or 0) / 90) % 4  # display matrix: counter-clockwise degrees
    if turns:
      image = np.ascontiguousarray(np.rot90(image, turns))
    if self.size is not None:
      image = _square_resize(image, self.size)
    if frame.duration and frame.time_base:
      self.last_len = float(frame.duration * frame.time_base)
    self.times.append(float(t))
    self.images.append(image)

  def video(self, path: pathlib.Path) -> tuple[np.ndarray, list[np.ndarray], float, float]:
    """Returns (timestamps [F] in s from the first frame, frames, source fps, duration in s)."""
    if not self.images:
      raise MediaError(f"{path}: no decodable video frames")
    order = np.argsort(np.asarray(self.times), kind="stable")
    t = np.asarray(self.times)[order]
    t = t - t[0]
    images = [self.images[i] for i in order]
    fps = self.nominal_fps
    if not fps:
      fps = (len(t) - 1) / t[-1] if len(t) > 1 and t[-1] > 0 else 25.0
    end = float(t[-1] + (self.last_len or 1.0 / fps))
    declared = self.video_declared_s
    if declared and end < declared - max(0.25, 0.05 * declared):
      raise MediaError(f"{path}: truncated: decoded {end:.2f} s of video, the stream declares "
                       f"{declared:.2f} s")
    return t, images, fps, end

  def audio(self, start_s: float) -> np.ndarray | None:
    """Mono float32 audio with sample 0 at time `start_s` (the first video frame), or None."""
    if self.resampler is None:
      return None
    self.chunks.extend(out.to_ndarray()[0] for out in self.resampler.resample(None))
    if not self.chunks:
      return None
    wav = np.concatenate(self.chunks).astype(np.float32)
    sr = self.audio_sr
    if self.audio_declared_s:  # the encoder pads the last AAC frame; the stream knows the true length
      wav = wav[:int(round(self.audio_declared_s * sr))]
    shift = int(round(((self.first_audio_time or 0.0) - start_s) * sr))
    if shift > 0:  # audio starts after the first video frame
      wav = np.concatenate([np.zeros(shift, np.float32), wav])
    elif shift < 0:
      wav = wav[-shift:]
    return wav


def _square_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Centre-crops [H, W, 3] to a square, then area-averages to [size, size, 3]."""
  h, w = image.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  crop = image[top:top + side, left:left + side]
  if side == size:
    return np.ascontiguousarray(crop)
  return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BOX))
