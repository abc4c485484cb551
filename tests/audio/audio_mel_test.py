"""Tests for flowav.audio.mel: HiFi-GAN log-mel conventions, Slaney filterbank, STFT pair."""

from __future__ import annotations

import numpy as np
import pytest

from flowav.audio.griffin_lim import istft
from flowav.audio.mel import (
  MelConfig,
  hz_to_mel,
  log_mel,
  mel_filterbank,
  mel_to_hz,
  stft,
)

CFG = MelConfig()


@pytest.mark.parametrize("num_samples", [0, 100, 255, 256, 511, 512, 1000, 22050, 55125])
def test_frame_count_is_samples_floordiv_hop(num_samples):
  wav = np.random.default_rng(0).standard_normal(num_samples).astype(np.float32) * 0.1
  mel = log_mel(wav, CFG)
  assert mel.shape == (num_samples // 256, 80)
  assert mel.dtype == np.float32
  assert CFG.num_frames(num_samples) == num_samples // 256


def test_batched_log_mel_matches_per_example():
  wav = np.random.default_rng(1).standard_normal((3, 2048)).astype(np.float32)
  batched = log_mel(wav, CFG)
  assert batched.shape == (3, 8, 80)
  for b in range(3):
    np.testing.assert_allclose(batched[b], log_mel(wav[b], CFG), rtol=1e-6, atol=1e-6)


def test_silence_sits_at_the_log_floor():
  mel = log_mel(np.zeros(4096, np.float32), CFG)
  np.testing.assert_allclose(mel, np.log(1e-5), rtol=1e-6)


def test_sine_peaks_in_the_band_containing_its_frequency():
  sr = CFG.sample_rate
  wav = (0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(sr) / sr)).astype(np.float32)
  mel = log_mel(wav, CFG)
  band = int(np.argmax(mel[5:-5].mean(axis=0)))
  fb = mel_filterbank(CFG)
  bin_1k = int(round(1000.0 * CFG.n_fft / sr))
  assert band in np.flatnonzero(fb[:, bin_1k] > 0)
  centres = mel_to_hz(np.linspace(0.0, hz_to_mel(8000.0), 82))[1:-1]
  assert abs(centres[band] - 1000.0) < 0.5 * (centres[band + 1] - centres[band - 1])


def test_slaney_mel_scale_known_values():
  np.testing.assert_allclose(hz_to_mel([0.0, 200.0, 1000.0, 6400.0]), [0.0, 3.0, 15.0, 42.0],
                             atol=1e-9)
  hz = np.array([0.0, 50.0, 999.0, 1000.0, 4321.0, 11025.0])
  np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-12, atol=1e-9)


def test_filterbank_rows_are_nonnegative_triangles_of_unit_area():
  fb = mel_filterbank(CFG).astype(np.float64)
  assert fb.shape == (80, 513)
  assert np.all(fb >= 0) and np.all(fb.max(axis=1) > 0)
  area_hz = fb.sum(axis=1) * (CFG.sample_rate / CFG.n_fft)  # Riemann sum over bins
  # Slaney norm: each triangle integrates to 1 in Hz. The narrow low bands span only 3-4 bins
  # of 21.5 Hz, so their Riemann sums are off by up to 6%; a fine frequency grid recovers 1.
  np.testing.assert_allclose(area_hz, 1.0, atol=0.07)
  fine = MelConfig(n_fft=16384, win_length=16384)
  fine_area_hz = mel_filterbank(fine).astype(np.float64).sum(axis=1) * (
    fine.sample_rate / fine.n_fft)
  np.testing.assert_allclose(fine_area_hz, 1.0, atol=0.005)
  bin_hz = np.linspace(0, CFG.sample_rate / 2, 513)
  assert np.all(fb[:, bin_hz > 8000.0] == 0)


def test_frame_t_is_centred_on_samples_t_hop_to_t_plus_one_hop():
  # An impulse at sample s has most energy in the frame whose window centre is nearest s.
  for s in (3000, 3128, 3300, 5000):
    wav = np.zeros(8192, np.float32)
    wav[s] = 1.0
    energy = np.exp(log_mel(wav, CFG)).sum(axis=1)
    assert int(np.argmax(energy)) == s // 256


@pytest.mark.parametrize("cfg", [CFG, MelConfig(n_fft=1000, win_length=800, hop_length=200),
                                 MelConfig(n_fft=512, win_length=512, hop_length=128)])
def test_istft_inverts_stft(cfg):
  wav = np.random.default_rng(2).standard_normal(cfg.hop_length * 40)
  spec = stft(wav, cfg)
  assert spec.shape == (40, cfg.n_fft // 2 + 1)
  np.testing.assert_allclose(istft(spec, cfg), wav, atol=1e-10)


@pytest.mark.parametrize("kwargs", [dict(hop_length=0), dict(win_length=2048),
                                    dict(hop_length=255), dict(fmax=12000.0),
                                    dict(log_floor=0.0)])
def test_bad_config_raises(kwargs):
  with pytest.raises(ValueError, match="MelConfig"):
    MelConfig(**kwargs)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="wav"):
    log_mel(np.zeros((2, 2, 512), np.float32), CFG)
  with pytest.raises(ValueError, match="NaN"):
    log_mel(np.full(512, np.nan, np.float32), CFG)
