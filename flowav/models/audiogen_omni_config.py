"""AudioGen-Omni's sizes and options (specs/audiogen_omni.md §6) and its named variants.

`flowav.models.audiogen_omni` re-exports everything here; the departures from the spec that these
options select are listed in that module's docstring.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from flowav.models import audiogen_omni_blocks as blocks
from flowav.models import config_checks

SYNC_SOURCES = ("sync_features", "video_features", "none")
CAPTION_SOURCES = ("text_embeddings", "text_ids")
LYRICS_KEYS = ("lyric_ids", "transcript_ids", "none")
GLOBAL_FUSIONS = ("concat", "sum")


@dataclasses.dataclass(frozen=True)
class AudioGenOmniConfig:
  """Sizes and options of AudioGen-Omni (spec §6); `VARIANTS` holds the named sets. Rates are
  frames per second; the lyric stream has `text_dim` channels (it joins the caption tokens)."""
  audio_channels: int  # C_a
  audio_rate: float  # r_a, latent frames per second (the RoPE time unit)
  video_dim: int  # CLIP feature width
  video_rate: float
  text_dim: int  # caption (T5 state / byte embedding) and lyric frame width
  width: int  # D
  num_heads: int  # H, head_dim = D / H
  joint_depth: int  # N_j >= 1 (the last one is pre-only)
  single_depth: int  # N_s
  sync_dim: int = 768  # Synchformer width (sync_source='sync_features')
  sync_rate: float = 24.0
  sync_segment: int = 8  # learned within-segment position table rows (0 = none)
  lyric_vocab: int = 6693  # ids 1..vocab, 0 = filler / pad
  lyric_blocks: int = 4  # N_cnx
  lyric_mult: int = 2  # ConvNeXt hidden = mult * text_dim
  lyric_max_pos: int = 4000
  caption_vocab: int = 256  # caption_source='text_ids': UTF-8 bytes + 1, 0 = pad
  ffn_multiple_of: int = 256  # SwiGLU hidden = roundup(int(8 D / 3), multiple_of)
  time_table: int = 512  # rows of the per-second start / total tables (clipped)
  time_freq_dim: int = 256  # sinusoidal features of 1000 t
  audio_kernel: int = 7  # audio input conv and its conv SwiGLU
  sync_kernel: int = 7  # sync input conv (its conv SwiGLU uses conv_kernel)
  conv_kernel: int = 3  # block output convs, conv SwiGLUs, video projection
  final_kernel: int = 7
  sync_source: str = "sync_features"  # SYNC_SOURCES
  caption_source: str = "text_embeddings"  # CAPTION_SOURCES
  lyrics_key: str = "lyric_ids"  # LYRICS_KEYS ('none': no lyrics stream, no LT encoder)
  # Not in the spec: lay each phone over its frames from the batch's 'phone_durations' (flite's or
  # the aligner's timing) instead of packing them at the front (blocks.LyricsEncoder), and add the
  # frames (LayerNorm + Linear) to the audio tokens at the input, as `sync_to_input` does for sync.
  lyrics_aligned: bool = False
  global_fusion: str = "concat"  # 'concat': MLP([e_t,p_v,p_t,e_s,e_d]); 'sum': e_t + MLP(sum)
  # Not in the spec, for features that are not normalised like CLIP's (flowav-demo's): standardise
  # the video features per channel with the training data's statistics (nn.FeatureNorm, set when a
  # run starts), and add the frame-aligned sync projection S to the audio tokens at the input as
  # well as through AdaLN. Without them the demo's sync path stays unused (no onset timing).
  video_norm: bool = False
  sync_to_input: bool = False
  rope_theta: float = 10000.0
  remat_policy: str = "none"
  # Layers per loop iteration of the block stacks (nn.Stack's scan); parameters and checkpoints
  # are the same for any value. Fully unrolled, a 4-block DiT train step took 20% less time on CPU
  # in float32 and bfloat16 (benchmarks/train_speed.py) and the demo steps 7-14% less, but
  # mmaudio_s sampling took 20% more (0.49 vs 0.41 s per evaluation): only `demo` sets it.
  scan_unroll: int = 1
  dtype: str | None = None  # matmul input dtype, e.g. 'bfloat16'; None = float32

  def __post_init__(self):
    config_checks.check_sizes(self, may_be_zero=("single_depth", "lyric_blocks", "sync_segment"))
    for name, valid in (("sync_source", SYNC_SOURCES), ("caption_source", CAPTION_SOURCES),
                        ("lyrics_key", LYRICS_KEYS), ("global_fusion", GLOBAL_FUSIONS)):
      if getattr(self, name) not in valid:
        raise ValueError(f"AudioGenOmniConfig: {name}={getattr(self, name)!r} must be one of "
                         f"{valid}")
    head_dim, rest = divmod(self.width, self.num_heads)
    if rest or head_dim % 2:
      raise ValueError(f"AudioGenOmniConfig: width={self.width} must be num_heads="
                       f"{self.num_heads} times an even head_dim (RoPE rotates pairs)")
    for name in ("audio_kernel", "sync_kernel", "conv_kernel", "final_kernel"):
      if getattr(self, name) % 2 == 0:
        raise ValueError(f"AudioGenOmniConfig: {name}={getattr(self, name)} must be odd")
    if self.lyrics_aligned and self.lyrics_key != "transcript_ids":
      raise ValueError(f"AudioGenOmniConfig: lyrics_aligned=True needs lyrics_key="
                       f"'transcript_ids' (phones with durations), got {self.lyrics_key!r}")
    if self.sync_to_input and self.sync_source == "none":
      raise ValueError("AudioGenOmniConfig: sync_to_input=True needs a sync branch (sync_source "
                       "is 'none')")
    if self.dtype is not None:
      jnp.dtype(self.dtype)  # Raises TypeError on an unknown name.

  @property
  def ffn_hidden(self) -> int:
    return blocks.ffn_hidden(self.width, self.ffn_multiple_of)

  @property
  def reads_phone_timing(self) -> bool:
    """Whether the conditions read 'phone_durations' (only when the phones are laid over frames)."""
    return self.lyrics_aligned

  @property
  def sync_in(self) -> tuple[int, float]:
    """(width, rate) of the features the sync branch reads."""
    if self.sync_source == "video_features":
      return self.video_dim, self.video_rate
    return self.sync_dim, self.sync_rate


_DEMO_RATE = 22050 / 256
VARIANTS: dict[str, dict[str, Any]] = {
  # Spec §6 tiny column (~1.4 M parameters): 1 s = 32 frames at 31.25 Hz, 8 video, 24 sync frames.
  "tiny": dict(
    audio_channels=8, audio_rate=31.25, video_dim=32, video_rate=8.0, sync_dim=16,
    text_dim=32, width=64, num_heads=4, joint_depth=2, single_depth=2, lyric_vocab=64,
    lyric_blocks=1, ffn_multiple_of=16, time_table=16),
  # Spec §2 paper config: 1.496 B parameters (44.1 kHz Mel-VAE latents, MetaCLIP, Synchformer, T5).
  "paper": dict(
    audio_channels=40, audio_rate=44100 / 1024, video_dim=1280, video_rate=8.0, text_dim=768,
    width=1024, num_heads=16, joint_depth=8, single_depth=16),
  # MMAudio-S-16k sizes (157 M in MMAudio) for speed comparisons: no lyrics stream.
  "mmaudio_s": dict(
    audio_channels=20, audio_rate=31.25, video_dim=1024, video_rate=8.0, text_dim=1024,
    width=448, num_heads=7, joint_depth=4, single_depth=8, lyrics_key="none"),
  # flowav-demo on a 2-core CPU: 80-band mel at 22050/256 Hz, the built-in 256-d 25-fps video
  # features (also the sync branch), captions as UTF-8 bytes, phone transcripts as the lyric stream.
  "demo": dict(
    audio_channels=80, audio_rate=_DEMO_RATE, video_dim=256, video_rate=25.0, text_dim=64,
    width=128, num_heads=4, joint_depth=2, single_depth=2, sync_source="video_features",
    caption_source="text_ids", lyrics_key="transcript_ids", lyric_vocab=40, lyric_blocks=2,
    ffn_multiple_of=64, time_table=64, time_freq_dim=128, audio_kernel=3, video_norm=True,
    sync_to_input=True, lyrics_aligned=True, scan_unroll=2),
}
