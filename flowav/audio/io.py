"""Reading audio files as mono float32 at a target rate, and writing 16-bit PCM wav atomically."""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import scipy.signal
import soundfile


def resample(wav: np.ndarray, source_sr: int, target_sr: int) -> np.ndarray:
  """Polyphase resampling `[N] -> [ceil(N * target / source)]` by the reduced rate fraction."""
  if source_sr <= 0 or target_sr <= 0:
    raise ValueError(f"resample: rates must be positive, got {source_sr} -> {target_sr}")
  if source_sr == target_sr:
    return np.asarray(wav, np.float32)
  g = math.gcd(int(source_sr), int(target_sr))
  out = scipy.signal.resample_poly(np.asarray(wav, np.float64), target_sr // g, source_sr // g)
  return out.astype(np.float32)


def read_audio(path: str | os.PathLike, target_sr: int) -> np.ndarray:
  """Mono float32 waveform `[N]` in [-1, 1] at `target_sr` (channels averaged, then resampled).

  Raises FileNotFoundError for a missing file and ValueError naming `path` for a file soundfile
  cannot decode or one with no samples.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"read_audio: no such file: {path}")
  try:
    data, sr = soundfile.read(path, dtype="float32", always_2d=True)
  except soundfile.SoundFileError as e:  # LibsndfileError: corrupt, truncated, unknown format
    raise ValueError(f"read_audio: cannot decode audio file {path}: {e}") from e
  if data.shape[0] == 0:
    raise ValueError(f"read_audio: audio file {path} has no samples")
  return resample(data.mean(axis=1), sr, target_sr)


def write_wav(path: str | os.PathLike, wav: np.ndarray, sr: int) -> None:
  """Write mono `[N]` float audio as 16-bit PCM wav; clips to [-1, 1].

  Written to a temporary file in the destination folder, then `os.replace`d over `path`, so
  readers never see a half-written file.
  """
  path = os.fspath(path)
  wav = np.asarray(wav, np.float32)
  if wav.ndim != 1:
    raise ValueError(f"write_wav: wav must be mono [N], got shape {wav.shape} for {path}")
  if not np.all(np.isfinite(wav)):
    raise ValueError(f"write_wav: wav for {path} contains NaN or inf")
  if sr <= 0:
    raise ValueError(f"write_wav: sr={sr} must be positive")
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".wav")
  try:
    with os.fdopen(fd, "wb") as f:
      soundfile.write(f, np.clip(wav, -1.0, 1.0), int(sr), subtype="PCM_16", format="WAV")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
