"""Log-mel spectrogram with the HiFi-GAN universal (V1) vocoder's analysis settings, in numpy.

Conventions follow HiFi-GAN's `meldataset.py:mel_spectrogram` so the latents can later be fed to
the official vocoder weights (DESIGN.md, "default codec"):
- reflect-pad the waveform by `p = (n_fft - hop) // 2` per side, then frame with `center=False`;
- periodic Hann window of `win_length`, centred inside `n_fft` when shorter;
- magnitude `sqrt(re^2 + im^2 + 1e-9)` (not power);
- Slaney mel filterbank (librosa's default: `htk=False`, `norm='slaney'`);
- `log(clip(mel, log_floor))`, natural log.

Frame count: the padded length is `N + n_fft - hop`, so there are `1 + (N - hop) // hop = N // hop`
frames for `N >= hop` (zero frames below that). Frame `t` starts at padded sample `t * hop`, i.e. at
`t * hop - p` in the original signal, so its centre sits at `(t + 1/2) * hop`: frame `t` "owns" the
samples `[t * hop, (t + 1) * hop)`, which is what makes decoded audio sample-aligned with latents.
"""

from __future__ import annotations

import dataclasses

import numpy as np

_MAG_EPS = 1e-9  # HiFi-GAN adds this under the square root so the gradient of |X| is finite at 0.


@dataclasses.dataclass(frozen=True)
class MelConfig:
  """Analysis settings; the defaults are HiFi-GAN universal V1 (`config_v1.json`)."""
  sample_rate: int = 22050
  n_fft: int = 1024
  win_length: int = 1024
  hop_length: int = 256
  n_mels: int = 80
  fmin: float = 0.0
  fmax: float = 8000.0
  log_floor: float = 1e-5

  def __post_init__(self):
    for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
      if int(getattr(self, name)) <= 0:
        raise ValueError(f"MelConfig.{name}={getattr(self, name)} must be a positive integer")
    if self.win_length > self.n_fft:
      raise ValueError(f"MelConfig.win_length={self.win_length} > n_fft={self.n_fft}")
    if (self.n_fft - self.hop_length) % 2:
      raise ValueError(f"MelConfig: n_fft - hop_length = {self.n_fft - self.hop_length} must be "
                       "even (the reflect padding is (n_fft - hop_length) / 2 per side)")
    if self.hop_length > self.n_fft:
      raise ValueError(f"MelConfig.hop_length={self.hop_length} > n_fft={self.n_fft}")
    if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
      raise ValueError(f"MelConfig: need 0 <= fmin={self.fmin} < fmax={self.fmax} <= "
                       f"sample_rate/2={self.sample_rate / 2}")
    if self.log_floor <= 0:
      raise ValueError(f"MelConfig.log_floor={self.log_floor} must be positive")

  @property
  def num_freqs(self) -> int:
    return self.n_fft // 2 + 1

  @property
  def pad(self) -> int:
    """Reflect padding per side, `(n_fft - hop) // 2`."""
    return (self.n_fft - self.hop_length) // 2

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop_length

  def num_frames(self, num_samples: int) -> int:
    return max(int(num_samples), 0) // self.hop_length


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
  """Slaney's auditory-toolbox mel scale: linear (3 mel per 200 Hz) below 1 kHz, log above."""
  hz = np.asarray(hz, dtype=np.float64)
  linear = hz / (200.0 / 3.0)
  log_step = np.log(6.4) / 27.0  # 27 mel per factor 6.4 above 1 kHz (1 kHz = 15 mel)
  log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step
  return np.where(hz >= 1000.0, log_part, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
  """Inverse of `hz_to_mel`."""
  mel = np.asarray(mel, dtype=np.float64)
  log_step = np.log(6.4) / 27.0
  return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * (200.0 / 3.0))


def mel_filterbank(cfg: MelConfig) -> np.ndarray:
  """Triangular Slaney filters `[n_mels, n_fft//2 + 1]` float32, each of unit area in Hz.

  Band `m` rises linearly from centre `m-1` to centre `m` and falls to centre `m+1` (centres
  equally spaced in mel between fmin and fmax); Slaney normalisation scales it by
  `2 / (f_{m+1} - f_{m-1})`, so its integral over frequency is 1.
  """
  edges_hz = mel_to_hz(np.linspace(hz_to_mel(cfg.fmin), hz_to_mel(cfg.fmax), cfg.n_mels + 2))
  bin_hz = np.linspace(0.0, cfg.sample_rate / 2, cfg.num_freqs)
  lo, centre, hi = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
  rising = (bin_hz[None, :] - lo) / (centre - lo)
  falling = (hi - bin_hz[None, :]) / (hi - centre)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  weights *= 2.0 / (hi - lo)
  return weights.astype(np.float32)


def analysis_window(cfg: MelConfig) -> np.ndarray:
  """Periodic Hann of `win_length`, zero-padded to `n_fft` and centred (torch.stft's rule)."""
  n = np.arange(cfg.win_length)
  hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / cfg.win_length)
  window = np.zeros(cfg.n_fft)
  left = (cfg.n_fft - cfg.win_length) // 2
  window[left:left + cfg.win_length] = hann
  return window


def stft(wav: np.ndarray, cfg: MelConfig) -> np.ndarray:
  """Complex STFT `[..., N] -> [..., T, F]` with `T = N // hop`, `F = n_fft//2 + 1` (module doc).

  Returns complex128; an empty `[..., 0, F]` for `N < hop`.
  """
  wav = np.asarray(wav, dtype=np.float64)
  if wav.ndim == 0:
    raise ValueError(f"stft: wav must have a time axis, got shape {wav.shape}")
  num_frames = cfg.num_frames(wav.shape[-1])
  if num_frames == 0:
    return np.zeros(wav.shape[:-1] + (0, cfg.num_freqs), np.complex128)
  pad = [(0, 0)] * (wav.ndim - 1) + [(cfg.pad, cfg.pad)]
  padded = np.pad(wav, pad, mode="reflect")
  frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft, axis=-1)
  frames = frames[..., :num_frames * cfg.hop_length:cfg.hop_length, :]
  return np.fft.rfft(frames * analysis_window(cfg), axis=-1)


def mel_from_magnitude(magnitude: np.ndarray, cfg: MelConfig) -> np.ndarray:
  """Log-mel `[..., T, n_mels]` float32 from a linear magnitude `[..., T, F]`."""
  mel = np.asarray(magnitude, np.float64) @ mel_filterbank(cfg).astype(np.float64).T
  return np.log(np.maximum(mel, cfg.log_floor)).astype(np.float32)


def log_mel(wav: np.ndarray, cfg: MelConfig) -> np.ndarray:
  """Log-mel spectrogram `[N] -> [T, n_mels]` (or batched `[B, N] -> [B, T, n_mels]`), float32."""
  wav = np.asarray(wav)
  if wav.ndim not in (1, 2):
    raise ValueError(f"log_mel: wav must be [N] or [B, N], got shape {wav.shape}")
  if not np.all(np.isfinite(wav)):
    raise ValueError("log_mel: wav contains NaN or inf")
  spec = stft(wav, cfg)
  magnitude = np.sqrt(spec.real ** 2 + spec.imag ** 2 + _MAG_EPS)
  return mel_from_magnitude(magnitude, cfg)
