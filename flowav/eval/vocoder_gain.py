"""How much HiFi-GAN gains over Griffin-Lim when re-synthesising real audio through the mel codec.

Each clip goes wav -> `MelCodec.encode` -> `decode(vocoder=...)` and the result is compared with the
original clip (or, for `mel_l1`, with the latents it was decoded from):
- `mel_l1`: mean |log-mel(decoded) - latents| in the codec's own analysis (natural log). This is
  the quantity Griffin-Lim's iterations fit, so it favours it by construction;
- `mrstft`, `mrstft_sc`, `mrstft_logmag`: the multi-resolution STFT distance of Parallel WaveGAN
  (Yamamoto et al., ICASSP 2020, Eq. 4-6: spectral convergence + mean |log magnitude difference|,
  FFT sizes 1024/2048/512, hops 120/240/50, windows 600/1200/240, power floored at 1e-7),
  averaged over the three resolutions. Its resolutions differ from the codec's, so they expose
  phase that is inconsistent across frames, which a magnitude fit at one resolution hides;
- `lsd_low`, `lsd_high`: log-spectral distance in dB (frame-wise RMS over bins of
  `10 log10 max(P, 1e-8)` differences, then the mean over frames) on the codec STFT, over bins up
  to `fmax` and above it. The mel stops at `fmax` (8 kHz), so content above it is invented by the
  vocoder (HiFi-GAN) or left empty (Griffin-Lim);
- `pesq_wb`: wide-band PESQ (ITU-T P.862.2, at 16 kHz, so below 8 kHz only; higher is better),
  only when the optional `pesq` package is installed.
`gain/<metric>` is HiFi-GAN's advantage: Griffin-Lim's distance minus HiFi-GAN's (for PESQ,
HiFi-GAN's score minus Griffin-Lim's), so positive means HiFi-GAN is closer to the original.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import numpy as np

from flowav.audio.codec import MelCodec
from flowav.audio.io import read_audio, resample
from flowav.audio.mel import MelConfig, stft

# Parallel WaveGAN's resolutions: (n_fft, hop, window).
MRSTFT_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
_POWER_FLOOR = 1e-7  # PWG clamps the power spectrum here before the square root
_LSD_FLOOR = 1e-8
_HIGHER_IS_BETTER = ("pesq_wb",)
VOCODERS = ("griffin_lim", "hifigan")


def _magnitude(wav: np.ndarray, n_fft: int, hop: int, win: int, sample_rate: int) -> np.ndarray:
  cfg = MelConfig(sample_rate=sample_rate, n_fft=n_fft, win_length=win, hop_length=hop,
                  fmax=sample_rate / 2)
  spec = stft(wav, cfg)
  return np.sqrt(np.maximum(spec.real ** 2 + spec.imag ** 2, _POWER_FLOOR))


def mrstft_distance(reference: np.ndarray, estimate: np.ndarray, sample_rate: int = 22050
                    ) -> dict[str, float]:
  """PWG multi-resolution STFT distance of `estimate` `[N]` to `reference` `[N]`.

  Returns `{"mrstft_sc", "mrstft_logmag", "mrstft"}` (their sum), each averaged over resolutions.
  """
  sc, logmag = [], []
  for n_fft, hop, win in MRSTFT_RESOLUTIONS:
    x = _magnitude(reference, n_fft, hop, win, sample_rate)
    y = _magnitude(estimate, n_fft, hop, win, sample_rate)
    sc.append(np.linalg.norm(y - x) / np.linalg.norm(x))
    logmag.append(np.mean(np.abs(np.log(y) - np.log(x))))
  return {"mrstft_sc": float(np.mean(sc)), "mrstft_logmag": float(np.mean(logmag)),
          "mrstft": float(np.mean(sc) + np.mean(logmag))}


def log_spectral_distance(reference: np.ndarray, estimate: np.ndarray, cfg: MelConfig
                          ) -> dict[str, float]:
  """LSD in dB on the codec STFT, `{"lsd_low": bins <= fmax, "lsd_high": bins > fmax}`."""
  x = 10.0 * np.log10(np.maximum(np.abs(stft(reference, cfg)) ** 2, _LSD_FLOOR))
  y = 10.0 * np.log10(np.maximum(np.abs(stft(estimate, cfg)) ** 2, _LSD_FLOOR))
  low = np.linspace(0.0, cfg.sample_rate / 2, cfg.num_freqs) <= cfg.fmax
  out = {}
  for name, bins in (("lsd_low", low), ("lsd_high", ~low)):
    if bins.any():
      out[name] = float(np.mean(np.sqrt(np.mean(np.square(x[:, bins] - y[:, bins]), axis=-1))))
  return out


def _pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float | None:
  if importlib.util.find_spec("pesq") is None:
    return None
  from pesq import pesq  # noqa: PLC0415 -- optional metric

  ref16, est16 = resample(reference, sample_rate, 16000), resample(estimate, sample_rate, 16000)
  n = min(ref16.size, est16.size)
  try:
    return float(pesq(16000, ref16[:n], est16[:n], "wb"))
  except Exception:  # noqa: BLE001 -- pesq raises its own types, e.g. on audio without speech
    return None  # PESQ is undefined here (no utterance detected); the clip has no PESQ score


def resynthesis_distances(wav: np.ndarray, codec: MelCodec, vocoder: str) -> dict[str, float]:
  """Every metric of the module doc for one clip `[N]` at `codec.sample_rate` and one vocoder."""
  latents = codec.encode(wav)
  reference = np.asarray(wav, np.float32)[:latents.shape[0] * codec.config.hop_length]
  decoded = codec.decode(latents, vocoder=vocoder)
  out = {"mel_l1": float(np.mean(np.abs(codec.encode(decoded) - latents)))}
  out.update(mrstft_distance(reference, decoded, codec.sample_rate))
  out.update(log_spectral_distance(reference, decoded, codec.config))
  score = _pesq_wb(reference, decoded, codec.sample_rate)
  if score is not None:
    out["pesq_wb"] = score
  return out


def vocoder_gain(clips: Sequence[np.ndarray | str | os.PathLike], codec: MelCodec | None = None,
                 *, vocoders: Sequence[str] = VOCODERS) -> dict[str, float]:
  """Mean re-synthesis metrics per vocoder over `clips`, and HiFi-GAN's gain over Griffin-Lim.

  Args:
    clips: waveforms `[N]` at `codec.sample_rate`, or audio file paths (read and resampled).
    codec: the mel codec (default `MelCodec()`, HiFi-GAN's own analysis).
    vocoders: the `MelCodec.decode` vocoders to compare.
  Returns:
    `{"<vocoder>/<metric>": mean over clips, "gain/<metric>": ..., "num_clips": n}` (module doc);
    the gains only when both vocoders are compared.
  """
  codec = codec or MelCodec()
  if not clips:
    raise ValueError("vocoder_gain: no clips")
  per_vocoder: dict[str, list[dict[str, float]]] = {v: [] for v in vocoders}
  for clip in clips:
    if isinstance(clip, (str, os.PathLike)):
      wav = read_audio(clip, codec.sample_rate)
    else:
      wav = np.asarray(clip, np.float32)
    if wav.ndim != 1 or codec.num_frames(wav.size) == 0:
      raise ValueError(f"vocoder_gain: a clip must be a mono waveform of at least one frame, got "
                       f"shape {wav.shape}" + (f" from {clip}" if not isinstance(clip, np.ndarray)
                                               else ""))
    for v in vocoders:
      per_vocoder[v].append(resynthesis_distances(wav, codec, v))
  out: dict[str, float] = {"num_clips": float(len(clips))}
  for v, rows in per_vocoder.items():
    for metric in sorted(set().union(*rows)):  # PESQ may be missing on clips without speech
      out[f"{v}/{metric}"] = float(np.mean([r[metric] for r in rows if metric in r]))
  if {"griffin_lim", "hifigan"} <= set(vocoders):
    for metric in sorted(set().union(*per_vocoder["hifigan"])):
      if f"griffin_lim/{metric}" not in out:
        continue
      diff = out[f"griffin_lim/{metric}"] - out[f"hifigan/{metric}"]
      out[f"gain/{metric}"] = -diff if metric in _HIGHER_IS_BETTER else diff
  return out
