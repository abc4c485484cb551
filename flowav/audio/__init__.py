"""Audio codecs: waveform <-> latents `[T, C]` (log-mel + Griffin-Lim by default), and audio IO.

`griffin_lim` is not re-exported: the name would shadow the `flowav.audio.griffin_lim` module.
"""

from __future__ import annotations

from flowav.audio.codec import LatentStats, MelCodec, compute_stats, make_codec
from flowav.audio.griffin_lim import istft, mel_to_linear
from flowav.audio.io import read_audio, resample, write_wav
from flowav.audio.mel import MelConfig, log_mel, mel_filterbank, stft

__all__ = [
  "LatentStats", "MelCodec", "MelConfig", "compute_stats", "istft", "log_mel", "make_codec",
  "mel_filterbank", "mel_to_linear", "read_audio", "resample", "stft", "write_wav",
]
