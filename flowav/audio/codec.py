"""Audio codecs (waveform <-> latents `[T, C]`) and per-channel latent statistics.

The default codec is the HiFi-GAN log-mel (`flowav.audio.mel`). It decodes with the official
HiFi-GAN V1 universal vocoder (`flowav.encoders.hifigan`) when its weights are installed, else by
fast Griffin-Lim, which needs no weights (DESIGN.md, "default codec"). The vocoder is a decode-time
choice, not part of the codec: a codec is described by a JSON-able dict stored with datasets and
checkpoints; `make_codec` rebuilds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from flowav.audio.griffin_lim import griffin_lim, mel_to_linear
from flowav.audio.mel import MelConfig, log_mel

_PEAK = 0.95  # decoded audio is scaled down to this peak only when it would clip
_VOCODERS = ("auto", "griffin_lim", "hifigan")


class MelCodec:
  """Log-mel latents `[T, n_mels]` at `sample_rate / hop_length` frames per second."""

  name = "mel"

  def __init__(self, config: MelConfig | None = None):
    self.config = config or MelConfig()
    self.sample_rate = self.config.sample_rate
    self.frame_rate = self.config.frame_rate
    self.latent_dim = self.config.n_mels

  def num_frames(self, num_samples: int) -> int:
    """Latent frames for `num_samples` samples: `num_samples // hop_length`."""
    return self.config.num_frames(num_samples)

  def encode(self, wav: np.ndarray) -> np.ndarray:
    """Waveform `[N]` float32 at `sample_rate` -> latents `[N // hop, n_mels]` float32."""
    wav = np.asarray(wav)
    if wav.ndim != 1:
      raise ValueError(f"MelCodec.encode: wav must be [N], got shape {wav.shape}")
    return log_mel(wav, self.config)

  def resolve_vocoder(self, choice: str = "auto") -> str:
    """Resolves `choice` ("auto" | "griffin_lim" | "hifigan") to the vocoder `decode` runs.

    "auto" is HiFi-GAN when this codec has its analysis settings (the default `MelConfig`) and
    its weights can be found (`flowav.encoders.hifigan.is_available`), else Griffin-Lim.
    """
    if choice not in _VOCODERS:
      raise ValueError(f"MelCodec: unknown vocoder {choice!r} (known: {list(_VOCODERS)})")
    if choice != "auto":
      return choice
    if self.config != MelConfig():
      return "griffin_lim"
    from flowav.encoders import hifigan  # noqa: PLC0415 -- jax/flax only when decoding with it
    return "hifigan" if hifigan.is_available() else "griffin_lim"

  def decode(self, latents: np.ndarray, *, vocoder: str = "auto", num_iters: int = 32,
             seed: int = 0) -> np.ndarray:
    """Latents `[T, n_mels]` -> waveform `[T * hop]` float32 (peak <= 0.95).

    `vocoder`: "hifigan" (HiFi-GAN V1 universal, needs its weights and the default config),
    "griffin_lim" (`num_iters` fast Griffin-Lim iterations from random phase drawn with `seed`),
    or "auto" (see `resolve_vocoder`).
    """
    latents = np.asarray(latents, np.float32)
    if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
      raise ValueError(f"MelCodec.decode: latents must be [T, {self.latent_dim}], "
                       f"got {latents.shape}")
    if not np.all(np.isfinite(latents)):
      raise ValueError("MelCodec.decode: latents contain NaN or inf")
    if self.resolve_vocoder(vocoder) == "hifigan":
      if self.config != MelConfig():
        raise ValueError(f"MelCodec.decode: HiFi-GAN needs the default MelConfig (its training "
                         f"analysis), this codec has {self.config}")
      from flowav.encoders import hifigan  # noqa: PLC0415
      wav = hifigan.vocode(latents)
    else:
      magnitude = mel_to_linear(latents, self.config)
      wav = griffin_lim(magnitude, self.config, num_iters=num_iters, seed=seed)
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    if peak > _PEAK:
      wav = wav * np.float32(_PEAK / peak)
    return wav

  def to_dict(self) -> dict[str, Any]:
    return {"name": self.name, **dataclasses.asdict(self.config)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> MelCodec:
    fields = {f.name for f in dataclasses.fields(MelConfig)}
    unknown = sorted(set(d) - fields - {"name"})
    if unknown:
      raise ValueError(f"MelCodec.from_dict: unknown keys {unknown} (known: {sorted(fields)})")
    return cls(MelConfig(**{k: v for k, v in d.items() if k != "name"}))


_CODECS = {MelCodec.name: MelCodec}


def make_codec(d: dict[str, Any]) -> MelCodec:
  """Rebuild a codec from its `to_dict()` description; `d['name']` picks the class."""
  if "name" not in d:
    raise KeyError(f"make_codec: codec description has no 'name' key: {d}")
  if d["name"] not in _CODECS:
    raise ValueError(f"make_codec: unknown codec name {d['name']!r} (known: {sorted(_CODECS)})")
  return _CODECS[d["name"]].from_dict(d)


@dataclasses.dataclass
class LatentStats:
  """Per-channel latent mean and std `[C]`; the model sees `(x - mean) / std`."""
  mean: np.ndarray
  std: np.ndarray

  def __post_init__(self):
    self.mean = np.asarray(self.mean, np.float32)
    self.std = np.asarray(self.std, np.float32)
    if self.mean.ndim != 1 or self.mean.shape != self.std.shape:
      raise ValueError(f"LatentStats: mean {self.mean.shape} and std {self.std.shape} must both "
                       "be [C]")
    if not np.all(self.std > 0):
      raise ValueError("LatentStats: std must be positive")

  def normalize(self, x):
    """`[..., C] -> [..., C]`; works on numpy and jax arrays."""
    return (x - self.mean) / self.std

  def denormalize(self, x):
    """Inverse of `normalize`."""
    return x * self.std + self.mean

  def to_dict(self) -> dict[str, list[float]]:
    return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> LatentStats:
    for key in ("mean", "std"):
      if key not in d:
        raise KeyError(f"LatentStats.from_dict: missing key {key!r}")
    return cls(mean=np.asarray(d["mean"]), std=np.asarray(d["std"]))


def compute_stats(latents: Iterable[np.ndarray], masks: Iterable[np.ndarray] | None = None,
                  *, min_std: float = 1e-3) -> LatentStats:
  """Per-channel mean/std over all valid frames of `latents` (each `[T_i, C]`).

  `masks` (each `[T_i]`, nonzero = valid) selects frames. Clip moments are merged in float64 with
  Chan et al.'s pairwise update (mean and sum of squared deviations), which stays accurate
  whatever the order or number of clips; std is the population std, floored at `min_std`.
  """
  count, mean, m2 = 0, None, None
  mask_iter = iter(masks) if masks is not None else None
  for i, x in enumerate(latents):
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
      raise ValueError(f"compute_stats: latents[{i}] must be [T, C], got {x.shape}")
    if mask_iter is not None:
      try:
        m = np.asarray(next(mask_iter))
      except StopIteration:
        raise ValueError(f"compute_stats: masks ran out at latents[{i}]") from None
      if m.shape != x.shape[:1]:
        raise ValueError(f"compute_stats: masks[{i}] shape {m.shape} != [{x.shape[0]}]")
      x = x[m != 0]
    if mean is not None and x.shape[1] != mean.shape[0]:
      raise ValueError(f"compute_stats: latents[{i}] has {x.shape[1]} channels, expected "
                       f"{mean.shape[0]}")
    n = x.shape[0]
    if n == 0:
      continue
    clip_mean = x.mean(axis=0)
    clip_m2 = np.square(x - clip_mean).sum(axis=0)
    if mean is None:
      count, mean, m2 = n, clip_mean, clip_m2
      continue
    delta = clip_mean - mean
    total = count + n
    mean = mean + delta * (n / total)
    m2 = m2 + clip_m2 + np.square(delta) * (count * n / total)
    count = total
  if mean is None:
    raise ValueError("compute_stats: no valid frames in latents")
  std = np.maximum(np.sqrt(m2 / count), min_std)
  return LatentStats(mean=mean, std=std)
