"""A tiny folder of user media for the preprocess tests: good clips of every kind and one bad file
of every skip reason, with captions (.txt), a JSONL manifest (transcripts) and a CSV manifest
(lyrics). Everything is 64x64 and 0.1-2.6 s long, so it is processed in seconds.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess

import av
import numpy as np
import soundfile

from flowav.data import media

SR = 22050
# relative path -> (kind, expected task or None, expected windows with configs/preprocess.py:tiny)
GOOD = {
  "v30.mp4": ("video", "sound", 2),  # 1.5 s at 30 fps, caption from v30.txt -> windows 1 + 0.5 s
  "sub/v24.mp4": ("video", "sound", 1),  # 1.0 s at 24 fps
  "rot.mov": ("video", "sound", 1),  # 64x32 frames shown rotated by 90 degrees (display matrix)
  "long.mkv": ("video", "sound", 3),  # 2.6 s in Matroska -> windows 1 + 1 + 0.6 s
  "vp8.webm": ("video", "sound", 1),  # VP8 + Opus at 48 kHz, 0.8 s
  "tone16k.wav": ("audio", "sound", 1),  # 16 kHz
  "stereo.flac": ("audio", "sound", 1),  # 44.1 kHz stereo, 0.9 s
  "tone.mp3": ("audio", "sound", 2),  # 1.3 s
  "speech.mp4": ("video", "speech", 1),  # flite speech + transcript (JSONL): never split
  "song.wav": ("audio", "song", 1),  # lyrics (CSV)
}
BAD = {
  "bad/corrupt.mp4": "corrupt",
  "bad/cut.mp4": "corrupt",  # cut in half: the decoder meets invalid data
  "bad/truncated.wav": "truncated",
  "bad/empty.wav": "empty",
  "bad/zero_samples.wav": "empty",
  "bad/silent.mp4": "no_audio",
  "bad/codec.mkv": "unsupported_codec",
  "bad/caption_utf8.wav": "bad_text",
  "bad/transcript_utf8.flac": "bad_text",
  "bad/short.wav": "too_short",
}
CAPTIONS = {"v30.mp4": "a beep, thirty frames per second", "tone16k.wav": "a pure tone"}
TRANSCRIPT = "hello world"
LYRICS = "la la la"


def tone(seconds: float, sr: int = SR, freq: float = 440.0, channels: int = 1) -> np.ndarray:
  t = np.arange(int(round(seconds * sr))) / sr
  wav = (0.3 * np.sin(2 * np.pi * freq * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(
    np.float32)
  return wav if channels == 1 else np.stack([wav] * channels, axis=1)


def frames(seconds: float, fps: float, h: int = 64, w: int = 64) -> np.ndarray:
  """A bright square sweeping once along the top edge, left to right: [T, h, w, 3] uint8."""
  n = int(round(seconds * fps))
  out = np.full((n, h, w, 3), 30, np.uint8)
  for i in range(n):
    x = i * (w - 8) // max(n - 1, 1)
    out[i, 4:12, x:x + 8] = (250, 200, 40)
  return out


def write_video(path: pathlib.Path, images: np.ndarray, fps: float, wav: np.ndarray | None,
                *, fmt: str = "mp4", rotation: int = 0, faststart: bool = False) -> None:
  """H.264 + AAC (VP8 + Opus for webm) in any container PyAV muxes, optionally rotated."""
  options = {"movflags": "faststart"} if faststart else {}
  webm = fmt == "webm"
  sr = 48000 if webm else SR  # Opus runs at 48 kHz
  if wav is not None and webm:
    from flowav.audio import io as audio_io  # pylint: disable=g-import-not-at-top
    wav = audio_io.resample(wav, SR, sr)
  with av.open(str(path), "w", format=fmt, options=options) as c:
    video = c.add_stream("libvpx" if webm else "libx264", rate=int(fps),
                         options={"threads": "1"})
    video.width, video.height, video.pix_fmt = images.shape[2], images.shape[1], "yuv420p"
    if rotation:
      video.set_display_rotation(rotation)
    audio = None
    if wav is not None:
      audio = c.add_stream("libopus" if webm else "aac", rate=sr)
      audio.layout = "mono"
    for i, image in enumerate(images):
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      frame.pts = i
      c.mux(video.encode(frame))
    c.mux(video.encode())
    if audio is not None:
      step = 960 if webm else 1024  # samples per Opus / AAC frame
      for start in range(0, len(wav), step):
        frame = av.AudioFrame.from_ndarray(wav[None, start:start + step].copy(), format="flt",
                                           layout="mono")
        frame.sample_rate, frame.pts = sr, start
        c.mux(audio.encode(frame))
      c.mux(audio.encode())


def _unsupported_codec_mkv(path: pathlib.Path) -> None:
  """An mkv whose video codec id no decoder knows (the Matroska CodecID string is overwritten)."""
  with av.open(str(path), "w", format="matroska") as c:
    video = c.add_stream("mpeg4", rate=25)
    video.width = video.height = 64
    video.pix_fmt = "yuv420p"
    audio = c.add_stream("pcm_s16le", rate=SR)
    audio.layout = "mono"
    for i, image in enumerate(frames(0.6, 25)):
      frame = av.VideoFrame.from_ndarray(image, format="rgb24")
      frame.pts = i
      c.mux(video.encode(frame))
    c.mux(video.encode())
    frame = av.AudioFrame.from_ndarray((tone(0.6)[None] * 20000).astype(np.int16), format="s16",
                                       layout="mono")
    frame.sample_rate, frame.pts = SR, 0
    c.mux(audio.encode(frame))
    c.mux(audio.encode())
  data = path.read_bytes()
  assert b"V_MPEG4/ISO/ASP" in data
  path.write_bytes(data.replace(b"V_MPEG4/ISO/ASP", b"V_QQQQQ/ISO/ASP"))


def flite_speech(text: str) -> np.ndarray:
  """flite's speech of `text` at SR (flite writes 16 kHz)."""
  from flowav.audio import io as audio_io  # pylint: disable=g-import-not-at-top
  if shutil.which("flite") is None:
    raise RuntimeError("the preprocess tests need flite (apt-get install -y flite)")
  import tempfile  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "s.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(out)], check=True,
                   capture_output=True, timeout=60)
    return audio_io.read_audio(out, SR)


def make_folder(root: pathlib.Path) -> pathlib.Path:
  """Writes the test media under `root` (created); returns it."""
  root.mkdir(parents=True, exist_ok=True)
  (root / "sub").mkdir(exist_ok=True)
  (root / "bad").mkdir(exist_ok=True)
  media.write_mp4(root / "v30.mp4", frames(1.5, 30), 30.0, tone(1.5), SR)
  media.write_mp4(root / "sub/v24.mp4", frames(1.0, 24), 24.0, tone(1.0, freq=660), SR)
  write_video(root / "rot.mov", frames(1.0, 25, h=32, w=64), 25, tone(1.0), fmt="mov",
              rotation=90)
  write_video(root / "long.mkv", frames(2.6, 25), 25, tone(2.6, freq=330), fmt="matroska")
  write_video(root / "vp8.webm", frames(0.8, 25), 25, tone(0.8, freq=550), fmt="webm")
  soundfile.write(root / "tone16k.wav", tone(1.0, sr=16000), 16000)
  soundfile.write(root / "stereo.flac", tone(0.9, sr=44100, channels=2), 44100)
  soundfile.write(root / "tone.mp3", tone(1.3), SR)
  speech = np.concatenate([np.zeros(SR // 5, np.float32), flite_speech(TRANSCRIPT)])
  media.write_mp4(root / "speech.mp4", frames(len(speech) / SR, 25), 25.0, speech, SR)
  soundfile.write(root / "song.wav", tone(1.0, freq=523), SR)
  for rel, text in CAPTIONS.items():
    (root / rel).with_suffix(".txt").write_text(text + "\n")
  # Bad files.
  rng = np.random.default_rng(0)
  (root / "bad/corrupt.mp4").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
  write_video(root / "bad/full.tmp4", frames(1.6, 25), 25, tone(1.6), faststart=True)
  data = (root / "bad/full.tmp4").read_bytes()
  (root / "bad/cut.mp4").write_bytes(data[:len(data) // 2])
  (root / "bad/full.tmp4").unlink()
  soundfile.write(root / "bad/full.wav", tone(1.0), SR)
  data = (root / "bad/full.wav").read_bytes()
  (root / "bad/truncated.wav").write_bytes(data[:len(data) // 2])
  (root / "bad/full.wav").unlink()
  (root / "bad/empty.wav").write_bytes(b"")
  soundfile.write(root / "bad/zero_samples.wav", np.zeros(0, np.float32), SR)
  media.write_mp4(root / "bad/silent.mp4", frames(0.8, 25), 25.0, None, 0)
  _unsupported_codec_mkv(root / "bad/codec.mkv")
  soundfile.write(root / "bad/caption_utf8.wav", tone(0.8), SR)
  (root / "bad/caption_utf8.txt").write_bytes(b"caf\xe9 noise\n")  # Latin-1, not UTF-8
  soundfile.write(root / "bad/transcript_utf8.flac", tone(0.8), SR)
  soundfile.write(root / "bad/short.wav", tone(0.1), SR)
  # Manifests: transcripts (JSONL, one row with invalid UTF-8, one naming no file) and lyrics (CSV).
  lines = [json.dumps({"path": "speech.mp4", "transcript": TRANSCRIPT}).encode(),
           b'{"path": "bad/transcript_utf8.flac", "transcript": "h\xffllo"}',
           json.dumps({"id": "missing_clip", "caption": "nothing"}).encode()]
  (root / "manifest.jsonl").write_bytes(b"\n".join(lines) + b"\n")
  (root / "lyrics.csv").write_text(f"id,lyrics\nsong,{LYRICS}\n")
  return root


def add_clip(root: pathlib.Path, rel: str = "added.wav") -> str:
  """One more good audio clip (to check that adding files moves nothing)."""
  soundfile.write(root / rel, tone(0.7, freq=880), SR)
  return rel
