"""Tests for flowav.audio.io: wav round trip, atomic writes, resampling, clear errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile

from flowav.audio.io import read_audio, resample, write_wav


def _tone(freq: float, sr: int, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
  return (amp * np.sin(2 * np.pi * freq * np.arange(int(sr * seconds)) / sr)).astype(np.float32)


def _peak_hz(wav: np.ndarray, sr: int) -> float:
  spectrum = np.abs(np.fft.rfft(wav * np.hanning(wav.size)))
  return float(np.argmax(spectrum) * sr / wav.size)


def test_write_then_read_round_trips_at_16_bit_precision(tmp_path):
  wav = _tone(440.0, 22050)
  path = tmp_path / "tone.wav"
  write_wav(path, wav, 22050)
  info = soundfile.info(str(path))
  assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
  back = read_audio(path, 22050)
  assert back.dtype == np.float32 and back.shape == wav.shape
  np.testing.assert_allclose(back, wav, atol=1.0 / 32768 + 1e-6)


def test_write_is_atomic_replace_and_clips(tmp_path):
  path = tmp_path / "out.wav"
  write_wav(path, np.zeros(100, np.float32), 16000)
  write_wav(path, np.full(200, 3.0, np.float32), 16000)  # overwrite in place
  assert os.listdir(tmp_path) == ["out.wav"]  # no temporary file left behind
  back = read_audio(path, 16000)
  assert back.shape == (200,) and np.all(back > 0.999)


def test_write_rejects_bad_input(tmp_path):
  with pytest.raises(ValueError, match="mono"):
    write_wav(tmp_path / "a.wav", np.zeros((10, 2), np.float32), 16000)
  with pytest.raises(ValueError, match="NaN"):
    write_wav(tmp_path / "b.wav", np.array([0.0, np.nan], np.float32), 16000)
  assert os.listdir(tmp_path) == []


def test_resampling_16k_to_22050_preserves_tone_frequency(tmp_path):
  path = tmp_path / "tone16k.wav"
  write_wav(path, _tone(1234.0, 16000), 16000)
  out = read_audio(path, 22050)
  assert out.shape == (22050,)
  assert abs(_peak_hz(out, 22050) - 1234.0) < 2.0
  assert np.abs(out[1000:-1000]).max() == pytest.approx(0.5, abs=0.01)


def test_resample_same_rate_is_identity():
  wav = _tone(300.0, 8000)
  np.testing.assert_array_equal(resample(wav, 8000, 8000), wav)
  with pytest.raises(ValueError, match="positive"):
    resample(wav, 0, 8000)


def test_stereo_is_averaged_to_mono(tmp_path):
  path = tmp_path / "stereo.wav"
  left, right = _tone(500.0, 16000, amp=0.2), np.zeros(16000, np.float32)
  soundfile.write(str(path), np.stack([left, right], axis=1), 16000, subtype="FLOAT")
  np.testing.assert_allclose(read_audio(path, 16000), left / 2, atol=1e-6)


def test_corrupt_empty_and_missing_files_raise_naming_the_path(tmp_path):
  corrupt = tmp_path / "corrupt.wav"
  corrupt.write_bytes(b"RIFF\x00\x10\x00\x00WAVEthis is not audio" * 8)
  with pytest.raises(ValueError, match="corrupt.wav"):
    read_audio(corrupt, 22050)
  zero_bytes = tmp_path / "zero.wav"
  zero_bytes.write_bytes(b"")
  with pytest.raises(ValueError, match="zero.wav"):
    read_audio(zero_bytes, 22050)
  no_samples = tmp_path / "no_samples.wav"
  write_wav(no_samples, np.zeros(0, np.float32), 22050)
  with pytest.raises(ValueError, match="no_samples.wav.*no samples"):
    read_audio(no_samples, 22050)
  with pytest.raises(FileNotFoundError, match="missing.wav"):
    read_audio(tmp_path / "missing.wav", 22050)
