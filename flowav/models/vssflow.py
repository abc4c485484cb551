"""VSSFlow (specs/vssflow.md): video through cross-attention, transcript through self-attention.

A 1-D DiT over audio latent frames (spec §2.2). Its input is the noisy latent concatenated
channel-wise with the phoneme channels (duration-expanded embeddings, §2.1) and the video temporal
scalar tau. The time is a prepended token, not AdaLN. Every block runs pre-LN self-attention with
partial RoPE, cross-attention to `[speaker token; video frames]` (GQA, RoPE on the queries only,
§2.4), and a SwiGLU. The duration predictor (§2.7, `duration_predictor.py`) is a separate submodule
trained by `auxiliary_loss`; it shares no parameters with the DiT.

Departures from the spec: (1) the option `xattn_rope_q_only=False` rotates the cross-attention keys
too, video token k at the position k+1 of its audio frame (the speaker token is not rotated);
(2) cross-attention ignores padded video frames (the speaker slot is always attended to), where the
spec's DiT uses no masks (§2.3); (3) CFG dropout is drawn per sample (allowed by §3).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav import nn
from flowav.data import schema
from flowav.models import config_checks
from flowav.models.duration_predictor import DurationPredictor, alignment_loss
from flowav.models.duration_predictor import durations_from_attention as _durations
from flowav.parallel.sharding import constrain

Cond = dict[str, jax.Array]
_SEQ_AXES = ("act_batch", "act_len", "act_embed")


@dataclasses.dataclass(frozen=True)
class VSSFlowConfig:
  """Sizes of VSSFlow (spec §6); `VARIANTS` holds the named sets. Rates are frames per second."""
  audio_channels: int  # C_a, latent channels
  audio_rate: float
  video_dim: int  # D_v, per-frame video feature width
  video_rate: float
  ctx_dim: int  # cross-attention context width
  speaker_dim: int
  phone_vocab: int  # rows of the phoneme table E_ph (id 0 = pad / no speech)
  phone_dim: int
  max_phones: int  # rows of the phone-position table P_ph
  max_frames: int  # rows of the frame-position table P_exp
  width: int
  num_heads: int
  head_dim: int
  num_kv_heads: int  # cross-attention KV heads (GQA)
  depth: int
  ff_hidden: int  # SwiGLU inner width
  rope_dim: int  # rotated dims per head
  fourier_freqs: int  # Gaussian-Fourier frequencies of the time token (features = 2x)
  # Duration predictor (spec §2.7): phone embedding, encoders, bridge, decoder.
  dp_vocab: int
  dp_embed_dim: int
  dp_enc_dim: int
  dp_enc_heads: int
  dp_enc_ff: int
  dp_enc_layers: int
  dp_bridge_dim: int
  dp_dec_dim: int
  dp_dec_heads: int
  dp_dec_ff: int
  dp_dec_layers: int
  dp_loss_beta: float = 5e-4
  temporal_channel: bool = True  # the video temporal scalar tau (spec §2.1)
  rope_theta: float = 10000.0
  fourier_seed: int = 0
  xattn_rope_q_only: bool = True  # spec §2.4; False rotates video keys at their frame positions
  remat_policy: str = "none"
  # Layers per loop iteration of the block stacks (nn.Stack's scan); parameters and checkpoints
  # are the same for any value. Fully unrolled, a 4-block DiT train step took 20% less time on CPU
  # in float32 and bfloat16 (benchmarks/train_speed.py) and the demo steps 7-14% less, but
  # mmaudio_s sampling took 20% more (0.49 vs 0.41 s per evaluation): only `demo` sets it.
  scan_unroll: int = 1
  dtype: str | None = None  # matmul input dtype, e.g. 'bfloat16'; None = float32

  def __post_init__(self):
    config_checks.check_sizes(self, may_be_zero=("depth", "dp_enc_layers"), not_sizes=("fourier_seed",))
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"VSSFlowConfig: num_heads={self.num_heads} is not a multiple of "
                       f"num_kv_heads={self.num_kv_heads}")
    if self.rope_dim % 2 or self.rope_dim > self.head_dim:
      raise ValueError(f"VSSFlowConfig: rope_dim={self.rope_dim} must be even and <= "
                       f"head_dim={self.head_dim}")
    if self.dtype is not None:
      jnp.dtype(self.dtype)  # Raises TypeError on an unknown name.

  @property
  def in_channels(self) -> int:
    """C_in = C_a + phone_dim + tau: the DiT's in- and out-channels (161 in the paper)."""
    return self.audio_channels + self.phone_dim + int(self.temporal_channel)

  @property
  def reads_phone_timing(self) -> bool:
    """Whether training conditions read 'phone_durations' (the phone track; timing dropout's target)."""
    return True


_DEMO_DP = dict(dp_vocab=64, dp_embed_dim=32, dp_enc_dim=64, dp_enc_heads=4, dp_enc_ff=128,
                dp_enc_layers=1, dp_bridge_dim=64, dp_dec_dim=32, dp_dec_heads=1, dp_dec_ff=64,
                dp_dec_layers=2)
VARIANTS: dict[str, dict[str, Any]] = {
  # Spec §6 tiny column (~0.17 M DiT parameters); rates give 13 video frames -> 32 latent frames.
  "tiny": dict(
    audio_channels=16, audio_rate=16.0, video_dim=24, video_rate=6.5, ctx_dim=32, speaker_dim=16,
    phone_vocab=80, phone_dim=8, max_phones=64, max_frames=64, width=64, num_heads=4,
    head_dim=16, num_kv_heads=2, depth=2, ff_hidden=256, rope_dim=8, fourier_freqs=16,
    dp_vocab=80, dp_embed_dim=16, dp_enc_dim=32, dp_enc_heads=2, dp_enc_ff=64, dp_enc_layers=1,
    dp_bridge_dim=32, dp_dec_dim=16, dp_dec_heads=1, dp_dec_ff=32, dp_dec_layers=1),
  # flowav-demo on a 2-core CPU: 80-band mel at 22050/256 fps, 25-fps 256-d video features.
  "demo": dict(
    audio_channels=80, audio_rate=22050 / 256, video_dim=256, video_rate=25.0, ctx_dim=128,
    speaker_dim=80, phone_vocab=64, phone_dim=16, max_phones=64, max_frames=256, width=128,
    num_heads=4, head_dim=32, num_kv_heads=2, depth=4, ff_hidden=384, rope_dim=16,
    fourier_freqs=32, scan_unroll=4, **_DEMO_DP),
  # Spec §6 paper column (v1): 443.28 M DiT parameters (§2.6).
  "paper": dict(
    audio_channels=128, audio_rate=25.0, video_dim=768, video_rate=10.0, ctx_dim=768,
    speaker_dim=256, phone_vocab=200, phone_dim=32, max_phones=2000, max_frames=2000, width=1536,
    num_heads=24, head_dim=64, num_kv_heads=12, depth=10, ff_hidden=6144, rope_dim=32,
    fourier_freqs=128, dp_vocab=1001, dp_embed_dim=64, dp_enc_dim=256, dp_enc_heads=4,
    dp_enc_ff=1024, dp_enc_layers=2, dp_bridge_dim=128, dp_dec_dim=64, dp_dec_heads=1,
    dp_dec_ff=1024, dp_dec_layers=4),
}


def nearest_indices(num_src: int, num_dst: int, src_rate: float, dst_rate: float) -> np.ndarray:
  """Source frame of each target frame, torch `mode='nearest'` (spec §2.1), int32 `[num_dst]`; for
  equal-length windows the spec's `floor(i * F / T)`."""
  return nn.nearest_source_frames(num_src, num_dst, src_rate, dst_rate, centre=False)


def _check_width(x: jax.Array, ndim: int, width: int, what: str) -> None:
  if x.ndim != ndim or x.shape[-1] != width:
    raise ValueError(f"VSSFlow: {what} has shape {x.shape}, expected rank {ndim} with last dim "
                     f"{width}")


class ContextMlp(nnx.Module):
  """Lin(in -> out) -> SiLU -> Lin(out -> out), no biases (spec §2.1 `cond_proj`, `ref_proj`)."""

  def __init__(self, in_dim: int, out_dim: int, *, dtype: Any = None, rngs: nnx.Rngs):
    self.fc1 = nn.Dense(in_dim, out_dim, axes=("kv", "mlp"), dtype=dtype, rngs=rngs)
    self.fc2 = nn.Dense(out_dim, out_dim, axes=("mlp", "kv"), dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc2(jax.nn.silu(self.fc1(x)))


class TemporalScalar(nnx.Module):
  """tau = Lin(ctx -> 1) . SiLU . Lin(ctx -> ctx) . SiLU . Lin(D_v -> ctx), no biases (§2.1)."""

  def __init__(self, video_dim: int, hidden: int, *, dtype: Any = None, rngs: nnx.Rngs):
    self.mlp = ContextMlp(video_dim, hidden, dtype=dtype, rngs=rngs)
    self.out = nn.Dense(hidden, 1, axes=("kv", None), dtype=dtype, rngs=rngs)

  def __call__(self, video: jax.Array) -> jax.Array:
    return self.out(jax.nn.silu(self.mlp(video)))


class DiTBlock(nnx.Module):
  """Pre-LN block (spec §2.2): self-attn (RoPE on q, k), cross-attn (GQA), SwiGLU; no AdaLN."""

  def __init__(self, cfg: VSSFlowConfig, *, dtype: Any = None, rngs: nnx.Rngs):
    w, h, dh = cfg.width, cfg.num_heads, cfg.head_dim
    self.rope = nn.RopeConfig(cfg.rope_dim, cfg.rope_theta, "half")
    self.norm1 = nn.LayerNorm(w, rngs=rngs)
    self.self_attn = nn.Attention(w, h, dh, dtype=dtype, rngs=rngs)
    self.norm2 = nn.LayerNorm(w, rngs=rngs)
    self.cross_attn = nn.Attention(w, h, dh, kv_dim=cfg.ctx_dim, num_kv_heads=cfg.num_kv_heads,
                                   dtype=dtype, rngs=rngs)
    self.norm3 = nn.LayerNorm(w, rngs=rngs)
    self.ff = nn.SwiGLU(w, cfg.ff_hidden, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, ctx: jax.Array, ctx_mask: jax.Array, positions: jax.Array,
               ctx_positions: jax.Array | None, ctx_rope_mask: jax.Array | None) -> jax.Array:
    """x `[B, 1+T, W]`, ctx `[B, 1+T, ctx_dim]`, ctx_mask `[B, 1+T]`, positions `[1+T]`."""
    x = x + self.self_attn(self.norm1(x), rope=self.rope, q_positions=positions,
                           k_positions=positions)
    x = x + self.cross_attn(self.norm2(x), ctx, key_mask=ctx_mask, rope=self.rope,
                            q_positions=positions, k_positions=ctx_positions,
                            k_rope_mask=ctx_rope_mask)
    return constrain(x + self.ff(self.norm3(x)), _SEQ_AXES)


class VSSFlow(nnx.Module):
  """The VSSFlow velocity model and its duration predictor (specs/vssflow.md §2).

  The condition pytree (`conditions`): 'video' `[B, T, D_v]` (resampled to the latent frames,
  zero where invalid), 'video_mask' `[B, T]`, 'speaker' `[B, D_spk]`, 'phone_ids' `[B, P]`,
  'durations' `[B, T, P]` (one-hot rows; V2S rows put every frame on column 0).
  """

  # What a user may give at sampling time (`python -m flowav.main sample --video ...`).
  USER_CONDITIONS = ("video", "transcript")

  REQUIRED_KEYS = ("audio_latents", "audio_mask", "video_features", "video_mask",
                   "transcript_ids", "transcript_mask", "phone_durations", "speaker_embedding",
                   "speaker_mask")

  def __init__(self, cfg: VSSFlowConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = None if cfg.dtype is None else jnp.dtype(cfg.dtype)
    c_in = cfg.in_channels
    self.phone_embed = nn.Embed(cfg.phone_vocab, cfg.phone_dim, axes=("vocab", "channels"),
                                rngs=rngs)
    self.phone_pos = nn.Embed(cfg.max_phones, cfg.phone_dim, axes=(None, "channels"), rngs=rngs)
    self.frame_pos = nn.Embed(cfg.max_frames, cfg.phone_dim, axes=(None, "channels"), rngs=rngs)
    self.video_proj = ContextMlp(cfg.video_dim, cfg.ctx_dim, dtype=dtype, rngs=rngs)
    self.speaker_proj = ContextMlp(cfg.speaker_dim, cfg.ctx_dim, dtype=dtype, rngs=rngs)
    self.temporal_proj = (TemporalScalar(cfg.video_dim, cfg.ctx_dim, dtype=dtype, rngs=rngs)
                          if cfg.temporal_channel else None)
    self.in_conv = nn.Dense(c_in, c_in, axes=(None, "channels"), dtype=dtype, rngs=rngs)
    self.in_proj = nn.Dense(c_in, cfg.width, axes=("channels", "embed"), dtype=dtype, rngs=rngs)
    self.time_embed = nn.TimestepEmbedder(2 * cfg.fourier_freqs, cfg.width, kind="fourier",
                                          fourier_seed=cfg.fourier_seed, dtype=dtype, rngs=rngs)
    self.blocks = nn.Stack(lambda r: DiTBlock(cfg, dtype=dtype, rngs=r), cfg.depth, rngs=rngs,
                           remat_policy=cfg.remat_policy,
                           unroll=cfg.scan_unroll)
    self.out_proj = nn.Dense(cfg.width, c_in, axes=("embed", "channels"), dtype=dtype, rngs=rngs)
    self.out_conv = nn.Dense(c_in, c_in, axes=(None, "channels"), dtype=dtype, rngs=rngs)
    self.duration_predictor = DurationPredictor(
      vocab=cfg.dp_vocab, lip_dim=cfg.video_dim, embed_dim=cfg.dp_embed_dim,
      enc_dim=cfg.dp_enc_dim, enc_heads=cfg.dp_enc_heads, enc_ff=cfg.dp_enc_ff,
      enc_layers=cfg.dp_enc_layers, bridge_dim=cfg.dp_bridge_dim, dec_dim=cfg.dp_dec_dim,
      dec_heads=cfg.dp_dec_heads, dec_ff=cfg.dp_dec_ff, dec_layers=cfg.dp_dec_layers, rngs=rngs)

  # --- conditions -------------------------------------------------------------------------------

  def _video_on_audio_grid(self, batch: Mapping[str, Any]) -> tuple[jax.Array, jax.Array]:
    """Video features and mask at the latent frames: `[B, T, D_v]` (0 where invalid), `[B, T]`."""
    missing = [k for k in self.REQUIRED_KEYS if k not in batch]
    if missing:
      raise KeyError(f"VSSFlow: batch is missing keys {missing}; required: {self.REQUIRED_KEYS}")
    video = jnp.asarray(batch["video_features"], jnp.float32)
    _check_width(video, 3, self.cfg.video_dim, "batch['video_features']")
    num_frames = jnp.shape(batch["audio_mask"])[1]
    src = nearest_indices(video.shape[1], num_frames, self.cfg.video_rate, self.cfg.audio_rate)
    mask = jnp.asarray(batch["video_mask"], bool)[:, src]
    return video[:, src] * mask[..., None], mask

  def conditions(self, batch: Mapping[str, Any]) -> Cond:
    """The condition pytree of a padded schema batch (see the class docstring)."""
    video, video_mask = self._video_on_audio_grid(batch)
    num_frames = video.shape[1]
    speaker = jnp.asarray(batch["speaker_embedding"], jnp.float32)
    _check_width(speaker, 2, self.cfg.speaker_dim, "batch['speaker_embedding']")
    phone_mask = jnp.asarray(batch["transcript_mask"], bool)
    ids = jnp.where(phone_mask, jnp.asarray(batch["transcript_ids"], jnp.int32), 0)
    frames = jnp.where(phone_mask, jnp.asarray(batch["phone_durations"], jnp.int32), 0)
    durations = schema.duration_matrix(frames, num_frames)
    has_text = jnp.any(phone_mask, axis=-1)[:, None, None]
    durations = jnp.where(has_text, durations, _null_durations(durations))  # V2S rows, spec §1
    speaker_mask = jnp.asarray(batch["speaker_mask"], bool).reshape(-1, 1)
    return {"video": video, "video_mask": video_mask, "speaker": speaker * speaker_mask,
            "phone_ids": ids, "durations": durations}

  def drop_conditions(self, cond: Cond, key: jax.Array, *, p_speaker: float = 0.1,
                      p_all: float = 0.1) -> Cond:
    """CFG dropout (spec §3), drawn per sample: the speaker alone with `p_speaker`, and
    independently every condition together with `p_all` (as `null_conditions`)."""
    for name, p in (("p_speaker", p_speaker), ("p_all", p_all)):
      if isinstance(p, (int, float)) and not 0.0 <= p <= 1.0:  # rates may also be traced
        raise ValueError(f"VSSFlow.drop_conditions: {name}={p} must lie in [0, 1]")
    batch = cond["speaker"].shape[0]
    k_speaker, k_all = jax.random.split(key)
    drop_all = jax.random.bernoulli(k_all, p_all, (batch,))
    drop_speaker = jax.random.bernoulli(k_speaker, p_speaker, (batch,)) | drop_all
    return _null_rows(cond, drop_speaker, drop_all)

  def null_conditions(self, cond: Cond) -> Cond:
    """The unconditional branch (spec §4): ctx 0 (speaker too), ids 0, D[:, :, 0] = 1, tau 0."""
    rows = jnp.ones((cond["speaker"].shape[0],), bool)
    return _null_rows(cond, rows, rows)

  # --- the DiT ----------------------------------------------------------------------------------

  def phone_channels(self, phone_ids: jax.Array, durations: jax.Array) -> jax.Array:
    """`ph_t = sum_p D[t, p] (E_ph[id_p] + s P_ph[p]) + s P_exp[t]`, s = ctx_dim^-1/2 (spec §2.1).

    phone_ids `[B, P]`, durations `[B, T, P]` -> `[B, T, phone_dim]`.
    """
    num_frames, num_phones = durations.shape[1], durations.shape[2]
    if num_phones > self.cfg.max_phones or num_frames > self.cfg.max_frames:
      raise ValueError(f"VSSFlow: {num_phones} phones x {num_frames} frames exceed the position "
                       f"tables (max_phones={self.cfg.max_phones}, "
                       f"max_frames={self.cfg.max_frames})")
    scale = self.cfg.ctx_dim ** -0.5
    per_phone = self.phone_embed(phone_ids) + scale * self.phone_pos(jnp.arange(num_phones))
    expanded = jnp.einsum("btp,bpc->btc", durations.astype(per_phone.dtype), per_phone)
    return expanded + scale * self.frame_pos(jnp.arange(num_frames))

  def temporal_scalar(self, cond: Cond) -> jax.Array:
    """tau `[B, T, 1]` from the resampled video (spec §2.1); needs `temporal_channel`."""
    if self.temporal_proj is None:
      raise ValueError("VSSFlow.temporal_scalar: the model has temporal_channel=False")
    return self.temporal_proj(cond["video"])

  def input_channels(self, x_t: jax.Array, cond: Cond) -> jax.Array:
    """`h_in = [x_t, ph, tau]` `[B, T, C_in]`: the channels after C_a do not depend on x_t."""
    _check_width(x_t, 3, self.cfg.audio_channels, "x_t")
    parts = [x_t, self.phone_channels(cond["phone_ids"], cond["durations"]).astype(x_t.dtype)]
    if self.temporal_proj is not None:
      parts.append(self.temporal_scalar(cond).astype(x_t.dtype))
    return jnp.concatenate(parts, axis=-1)

  def context(self, cond: Cond) -> tuple[jax.Array, jax.Array]:
    """Cross-attention tokens `[speaker; video]` `[B, 1+T, ctx_dim]`, key mask `[B, 1+T]`."""
    speaker = self.speaker_proj(cond["speaker"])[:, None]
    ctx = jnp.concatenate([speaker, self.video_proj(cond["video"])], axis=1)
    always = jnp.ones((ctx.shape[0], 1), bool)
    return ctx, jnp.concatenate([always, cond["video_mask"].astype(bool)], axis=1)

  def backbone(self, h_in: jax.Array, t: jax.Array, ctx: jax.Array,
               ctx_mask: jax.Array) -> jax.Array:
    """The DiT trunk (spec §2.2): h_in `[B, T, C_in]`, t `[B]` -> `[B, T, C_in]`."""
    batch, num_frames = h_in.shape[:2]
    h = self.in_proj(h_in + self.in_conv(h_in))
    time_token = self.time_embed(jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,)))
    seq = constrain(jnp.concatenate([time_token[:, None].astype(h.dtype), h], axis=1), _SEQ_AXES)
    # token 0 is time (spec §2.4); numpy: static positions, RoPE tables built once (nn.rope)
    positions = np.arange(num_frames + 1, dtype=np.float32)
    ctx_positions = ctx_rope_mask = None
    if not self.cfg.xattn_rope_q_only:
      ctx_positions = positions  # video token k sits at the position k + 1 of its frame
      ctx_rope_mask = np.arange(num_frames + 1) > 0  # the speaker token is not rotated
    seq = self.blocks(seq, ctx, ctx_mask, positions, ctx_positions, ctx_rope_mask)
    out = self.out_proj(seq)[:, 1:]
    return out + self.out_conv(out)

  def forward_full(self, x_t: jax.Array, t: jax.Array, cond: Cond) -> jax.Array:
    """All C_in output channels `[B, T, C_in]` for x_t `[B, T, C_a]`, t `[B]` (or a scalar)."""
    return self.backbone(self.input_channels(x_t, cond), t, *self.context(cond))

  def __call__(self, x_t: jax.Array, t: jax.Array, cond: Cond) -> jax.Array:
    """Velocity `[B, T, C_a]`: the audio channels of `forward_full` (the loss uses only these)."""
    return self.forward_full(x_t, t, cond)[..., :self.cfg.audio_channels]

  # --- duration predictor -----------------------------------------------------------------------

  def _predictor_inputs(self, batch: Mapping[str, Any]) -> tuple[jax.Array, ...]:
    """Phone ids `[B, P]`, phone mask, lip features `[B, T_a, D_v]`, frame mask (audio & video)."""
    lip, lip_mask = self._video_on_audio_grid(batch)
    phone_mask = jnp.asarray(batch["transcript_mask"], bool)
    ids = jnp.where(phone_mask, jnp.asarray(batch["transcript_ids"], jnp.int32), 0)
    return ids, phone_mask, lip, lip_mask & jnp.asarray(batch["audio_mask"], bool)

  def duration_attention(self, batch: Mapping[str, Any]) -> jax.Array:
    """The predictor's soft alignment A `[B, T_a, L_p]` over the valid phones (spec §2.7)."""
    return self.duration_predictor(*self._predictor_inputs(batch))

  def auxiliary_loss(self, batch: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Duration-predictor loss (spec §2.7) on frames with audio and video of rows with a
    transcript; 0 when there are none. Touches only `duration_predictor` parameters."""
    ids, phone_mask, lip, frame_mask = self._predictor_inputs(batch)
    weights = self.duration_predictor(ids, phone_mask, lip, frame_mask)
    frames = jnp.where(phone_mask, jnp.asarray(batch["phone_durations"], jnp.int32), 0)
    loss = alignment_loss(weights, frames, frame_mask, beta=self.cfg.dp_loss_beta)
    return loss, {"duration_loss": loss}

  def predict_durations(self, batch: Mapping[str, Any]) -> np.ndarray:
    """Frames per valid phone `[B, L_p]` int32 from the predictor (monotonic Viterbi path).

    Valid frames are the leading `audio_mask.sum()` ones; each row's durations sum to that count
    (every valid phone gets >= 1 frame when there are enough frames); rows without a transcript
    and padded phones get 0.
    """
    weights = np.asarray(self.duration_attention(batch))
    num_frames = np.asarray(batch["audio_mask"], bool).sum(-1)
    num_phones = np.asarray(batch["transcript_mask"], bool).sum(-1)
    return _durations(weights, num_frames, num_phones)


def _null_durations(durations: jax.Array) -> jax.Array:
  """Every frame on phone column 0 (spec §1 V2S rows, §3 / §4 null condition)."""
  return jnp.zeros_like(durations).at[..., 0].set(1.0)


def _null_rows(cond: Cond, speaker_rows: jax.Array, all_rows: jax.Array) -> Cond:
  """Zeroes the speaker of `speaker_rows` and nulls every condition of `all_rows` (`[B]` bool).

  tau = 0 follows from zero video because the temporal MLP has no biases (spec §2.1).
  """
  out = dict(cond)
  out["speaker"] = jnp.where(speaker_rows[:, None], 0.0, cond["speaker"])
  out["video"] = jnp.where(all_rows[:, None, None], 0.0, cond["video"])
  out["phone_ids"] = jnp.where(all_rows[:, None], 0, cond["phone_ids"])
  out["durations"] = jnp.where(all_rows[:, None, None], _null_durations(cond["durations"]),
                               cond["durations"])
  return out
