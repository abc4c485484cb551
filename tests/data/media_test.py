from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from flowav.data import media


def _moving_bar(num_frames: int, size: int = 32) -> np.ndarray:
  """[T, H, W, 3] frames whose bright column index encodes the frame number (to check picks)."""
  frames = np.zeros((num_frames, size, size, 3), np.uint8)
  for i in range(num_frames):
    frames[i, :, (i * 2) % size] = 255
  return frames


def _bar_position(frame: np.ndarray) -> int:
  return int(np.argmax(frame[..., 1].astype(np.int32).sum(axis=0)))


def test_roundtrip_frames_fps_audio(tmp_path):
  sr, fps = 22050, 25.0
  frames = _moving_bar(50)
  t = np.arange(2 * sr) / sr
  wav = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  path = tmp_path / "clip.mp4"
  media.write_mp4(path, frames, fps, wav, sr)
  assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away
  clip = media.read_video(path, fps=fps)
  assert clip.frames.shape == (50, 32, 32, 3) and clip.frames.dtype == np.uint8
  assert clip.fps == 25.0 and clip.source_fps == pytest.approx(25.0)
  assert clip.duration_s == pytest.approx(2.0)
  assert [_bar_position(f) for f in clip.frames] == [_bar_position(f) for f in frames]
  assert clip.audio_sr == sr and clip.audio.dtype == np.float32
  assert abs(len(clip.audio) - len(wav)) <= 1024
  n = min(len(wav), len(clip.audio))
  assert np.corrcoef(clip.audio[:n], wav[:n])[0, 1] > 0.95  # same tone, aligned


def test_write_is_deterministic(tmp_path):
  frames = _moving_bar(10)
  wav = np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32)
  media.write_mp4(tmp_path / "a.mp4", frames, 25.0, wav, 16000)
  media.write_mp4(tmp_path / "b.mp4", frames, 25.0, wav, 16000)
  assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


@pytest.mark.parametrize("source_fps,num_frames", [(30.0, 60), (12.5, 25)])
def test_resamples_to_25_fps(tmp_path, source_fps, num_frames):
  frames = _moving_bar(num_frames)
  path = tmp_path / "src.mp4"
  media.write_mp4(path, frames, source_fps, None, 0)
  clip = media.read_video(path, fps=25.0)
  assert clip.source_fps == pytest.approx(source_fps)
  assert clip.frames.shape[0] == 50  # 2 s at 25 fps
  assert clip.audio is None and clip.audio_sr is None
  # Output frame k shows the source frame on screen at k / 25 s.
  expected = [_bar_position(frames[int(np.floor(k / 25.0 * source_fps + 1e-9))]) for k in range(50)]
  assert [_bar_position(f) for f in clip.frames] == expected


def test_variable_frame_rate_is_resampled_by_timestamps(tmp_path):
  path = tmp_path / "vfr.mp4"
  times_ms = [0, 100, 130, 500, 900]  # irregular presentation times
  with av.open(str(path), "w", format="mp4") as container:
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    stream.codec_context.time_base = fractions.Fraction(1, 1000)
    for i, t in enumerate(times_ms):
      image = np.zeros((32, 32, 3), np.uint8)
      image[:, i * 6] = 255  # the bar's column identifies the source frame
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      frame.pts, frame.time_base = t, fractions.Fraction(1, 1000)
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  clip = media.read_video(path, fps=25.0)
  shown = [_bar_position(f) // 6 for f in clip.frames]
  expected = [int(np.searchsorted(times_ms, k * 40, side="right")) - 1 for k in range(len(shown))]
  assert shown == expected
  assert len(shown) == 24  # the last frame (at 0.9 s, 40 ms long) ends at 0.94 s


def test_audio_is_aligned_to_the_first_video_frame(tmp_path):
  sr = 22050
  path = tmp_path / "late_audio.mp4"
  wav = np.zeros(sr, np.float32)
  wav[:200] = 0.8 * np.sin(np.arange(200) * 0.3)  # a burst at the start of the audio track
  with av.open(str(path), "w", format="mp4") as container:
    video = container.add_stream("libx264", rate=25)
    video.width, video.height, video.pix_fmt = 32, 32, "yuv420p"
    audio = container.add_stream("aac", rate=sr)
    audio.layout = "mono"
    for i in range(50):
      frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
      frame.pts = i
      container.mux(video.encode(frame))
    container.mux(video.encode())
    for start in range(0, sr, 1024):  # the audio track starts 0.5 s after the video
      frame = av.AudioFrame.from_ndarray(wav[None, start:start + 1024].copy(), format="flt",
                                         layout="mono")
      frame.sample_rate, frame.pts = sr, start + sr // 2
      container.mux(audio.encode(frame))
    container.mux(audio.encode())
  clip = media.read_video(path, fps=25.0)
  onset = int(np.argmax(np.abs(clip.audio) > 0.1))
  assert abs(onset - sr // 2) <= int(0.003 * sr)


def test_size_resizes_and_crops(tmp_path):
  frames = np.zeros((5, 32, 48, 3), np.uint8)
  frames[:, :, 8:40] = 200  # the centre square is bright, the side bands are dark
  path = tmp_path / "wide.mp4"
  media.write_mp4(path, frames, 25.0, None, 0)
  clip = media.read_video(path, fps=25.0, size=16)
  assert clip.frames.shape == (5, 16, 16, 3)
  assert clip.frames.mean() == pytest.approx(200, abs=6)


def test_odd_sizes_are_padded(tmp_path):
  frames = np.full((3, 15, 17, 3), 100, np.uint8)
  media.write_mp4(tmp_path / "odd.mp4", frames, 25.0, None, 0)
  clip = media.read_video(tmp_path / "odd.mp4", fps=25.0)
  assert clip.frames.shape == (3, 16, 18, 3)


def test_rotation_metadata_is_applied(tmp_path):
  path = tmp_path / "rot.mp4"
  image = np.zeros((32, 64, 3), np.uint8)
  image[:8, :8] = 255  # a white square in the top-left corner
  with av.open(str(path), "w") as container:
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 64, 32, "yuv420p"
    stream.set_display_rotation(90)  # show rotated 90 degrees counter-clockwise
    for i in range(3):
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      frame.pts = i
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  clip = media.read_video(path, fps=25.0)
  assert clip.frames.shape == (3, 64, 32, 3)
  bright = clip.frames[0, ..., 0] > 128
  rows, cols = np.nonzero(bright)
  assert rows.min() >= 48 and cols.max() < 16  # top-left moved to bottom-left


def test_zero_byte_file_raises(tmp_path):
  path = tmp_path / "empty.mp4"
  path.write_bytes(b"")
  with pytest.raises(media.MediaError, match="empty.mp4"):
    media.read_video(path, fps=25.0)


def test_corrupt_file_raises(tmp_path):
  path = tmp_path / "noise.mp4"
  path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
  with pytest.raises(media.MediaError, match="noise.mp4"):
    media.read_video(path, fps=25.0)


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_file_raises(tmp_path, faststart):
  path = tmp_path / "full.mp4"
  frames = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
  options = {"movflags": "faststart"} if faststart else {}  # index before or after the data
  with av.open(str(path), "w", format="mp4", options=options) as container:
    stream = container.add_stream("libx264", rate=25)
    stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
    for i, image in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      frame.pts = i
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  cut = tmp_path / "cut.mp4"
  cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  with pytest.raises(media.MediaError, match="cut.mp4"):
    media.read_video(cut, fps=25.0)


def test_audio_only_file_raises(tmp_path):
  path = tmp_path / "audio.m4a"
  with av.open(str(path), "w", format="mp4") as container:
    stream = container.add_stream("aac", rate=16000)
    stream.layout = "mono"
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt",
                                       layout="mono")
    frame.sample_rate, frame.pts = 16000, 0
    container.mux(stream.encode(frame))
    container.mux(stream.encode())
  with pytest.raises(media.MediaError, match="audio.m4a.*no video stream"):
    media.read_video(path, fps=25.0)


def test_missing_file_and_bad_arguments(tmp_path):
  with pytest.raises(FileNotFoundError, match="nothere.mp4"):
    media.read_video(tmp_path / "nothere.mp4", fps=25.0)
  with pytest.raises(ValueError, match="frames"):
    media.write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8), np.uint8), 25.0, None, 0)
  with pytest.raises(ValueError, match="fps"):
    media.write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.uint8), 0.0, None, 0)
  assert not (tmp_path / "x.mp4").exists()
