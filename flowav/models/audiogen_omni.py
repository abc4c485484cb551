"""AudioGen-Omni (specs/audiogen_omni.md): MM-DiT over audio / video / text(+lyrics) streams.

`N_j` joint blocks (per-stream weights, one joint softmax, the last block pre-only for video and
text), then `N_s` audio-only single blocks and a conv output layer (§2.4, §2.5). RoPE rotates only
the temporal tokens (audio, video, lyric frames) at positions in audio-frame units from each
stream's rate, `p = i / r_stream * r_a`; caption tokens are not rotated (PAAPI, §2.6). Lyrics (or
a transcript) are laid out on the audio frame budget by a ConvNeXt-V2 encoder and appended to the
caption tokens in the text stream (§2.1, §2.2). Conditioning (§2.3): `c_g = MLP([e_t, p_v, p_t,
e_s, e_d])` with learned nulls for missing video / caption, and the per-frame `c_a[j] = c_g + S[j]`
from the sync features upsampled to the audio frames (nearest-exact in seconds).

Any subset of conditions may be present (§1): a missing or CFG-dropped modality has an all-false
mask, so its tokens are never attended to and its pooled / sync vectors become the learned nulls.
`conditions(batch)` computes every input projection once; `__call__` then only adds the
t-dependent parts, so an ODE solve reuses the projections at every step.

Departures from the spec: (1) the timestep MLP keeps the torch-default init (MMAudio: N(0, 0.02));
(2) the last block's video/text queries are not computed (their outputs are discarded, as in
MMAudio; parameters and results are the same); (3) `sync_source='video_features'` (flowav-demo,
no sync encoder) feeds the video features to the sync branch at the video rate, without the
per-segment position table; 'none' drops the sync branch (`c_a = c_g`); (4) `caption_source=
'text_ids'` embeds UTF-8 byte ids with a learned table instead of reading T5 states; (5) the
`demo` variant standardises its video features with the training split's statistics
(`video_norm`) and also adds the frame-aligned sync projection to the audio tokens
(`sync_to_input`): without them a demo run left the sync path unused (its loss did not change when
the video was shifted by 0.4 s), so it learned no onset timing; (6) `lyrics_aligned` (the `demo`
variant) lays each phone over its own frames from the batch's phone timing instead of packing the
phones at the front, and adds those frames to the audio tokens at the input. With packed phones a
demo run ignored what the transcript said: after 3190 steps its loss with another clip's
transcript was within 0.3 % of its loss with the clip's own; and aligning alone, without the input
path, did not change that in 760 more steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav import nn
from flowav.models import audiogen_omni_blocks as blocks
from flowav.models.audiogen_omni_config import (  # noqa: F401 -- re-exported: this module's API
  CAPTION_SOURCES,
  GLOBAL_FUSIONS,
  LYRICS_KEYS,
  SYNC_SOURCES,
  VARIANTS,
  AudioGenOmniConfig,
)

Cond = dict[str, jax.Array]
sync_indices = blocks.sync_indices  # re-exported: part of this module's API
_features = blocks.batch_features


class AudioGenOmni(nnx.Module):
  """The AudioGen-Omni velocity model (specs/audiogen_omni.md §2).

  Condition pytree (`conditions`): 'audio_mask' `[B, T_a]`; 'video' `[B, T_v, D]` projected CLIP
  tokens, 'video_mask'; 'video_pool' `[B, D]` (p_v before nulls); 'sync' `[B, T_a, D]` projected
  sync on the audio frames, 'sync_mask' `[B, T_a]`; 'caption' `[B, L_t, D]`, 'caption_mask',
  'caption_pool' (p_t before nulls); 'lyrics' `[B, T_a, D]`, 'lyric_mask' (absent without a
  lyrics stream), 'lyric_input' `[B, T_a, D]` (`lyrics_aligned` only); 'start', 'total' `[B, D]`
  (e_s, e_d); 'sync_rows' `[B, T_s, D]`, 'sync_row_mask' (only when T_s < T_a): the sync
  projection at its own rate, which `global_condition` keeps `c_a` at.
  """

  # What a user may give at sampling time (`python -m flowav.main sample --video ...`).
  USER_CONDITIONS = ("video", "transcript", "caption", "lyrics")

  REQUIRED_KEYS = ("audio_mask", "start_s", "duration_s")

  def __init__(self, cfg: AudioGenOmniConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    dtype = None if cfg.dtype is None else jnp.dtype(cfg.dtype)
    d, hidden = cfg.width, cfg.ffn_hidden
    self.audio_proj = blocks.StreamProj(cfg.audio_channels, d, hidden, kernel_size=cfg.audio_kernel,
                                        first_kernel=cfg.audio_kernel, in_axis="channels",
                                        dtype=dtype, rngs=rngs)
    self.video_norm = nnx.data(nn.FeatureNorm(cfg.video_dim) if cfg.video_norm else None)
    self.video_proj = blocks.StreamProj(cfg.video_dim, d, hidden, kernel_size=cfg.conv_kernel,
                                        dtype=dtype, rngs=rngs)
    self.text_proj = blocks.StreamProj(cfg.text_dim, d, hidden, kernel_size=None, dtype=dtype,
                                       rngs=rngs)
    has_sync = cfg.sync_source != "none"
    sync_dim = cfg.sync_in[0]
    self.sync_proj = nnx.data(blocks.StreamProj(
      sync_dim, d, hidden, kernel_size=cfg.conv_kernel, first_kernel=cfg.sync_kernel, dtype=dtype,
      rngs=rngs) if has_sync else None)
    self.sync_pos = nnx.data(
      nnx.Param(jnp.zeros((cfg.sync_segment, sync_dim)), out_sharding=(None, "kv"))
      if cfg.sync_source == "sync_features" and cfg.sync_segment else None)
    self.null_sync = nnx.data(nnx.Param(jnp.zeros((d,)), out_sharding=("embed",))
                              if has_sync else None)
    self.caption_embed = nnx.data(nn.Embed(cfg.caption_vocab + 1, cfg.text_dim, axes=("vocab", "kv"),
                                   rngs=rngs) if cfg.caption_source == "text_ids" else None)
    self.lyrics = nnx.data(None if cfg.lyrics_key == "none" else blocks.LyricsEncoder(
      cfg.lyric_vocab, cfg.text_dim, cfg.lyric_blocks, cfg.lyric_mult,
      max_pos=cfg.lyric_max_pos, aligned=cfg.lyrics_aligned, rngs=rngs))
    # Phone frames straight into the audio tokens: attention alone did not find them (LyricsEncoder).
    self.lyrics_norm = nnx.data(nn.LayerNorm(cfg.text_dim) if cfg.lyrics_aligned else None)
    self.lyrics_input = nnx.data(nn.Dense(
      cfg.text_dim, d, axes=("kv", "embed"), use_bias=True, kernel_init=blocks.XAVIER, dtype=dtype,
      rngs=rngs) if cfg.lyrics_aligned else None)
    # Global conditioning (§2.3); nulls start at 0 like MMAudio's empty features.
    self.time_embed = nn.TimestepEmbedder(cfg.time_freq_dim, d, dtype=dtype, rngs=rngs)
    self.video_pool = nn.Dense(d, d, axes=("mlp", "embed"), use_bias=True,
                               kernel_init=blocks.XAVIER, dtype=dtype, rngs=rngs)
    self.caption_pool = nn.Dense(d, d, axes=("mlp", "embed"), use_bias=True,
                                 kernel_init=blocks.XAVIER, dtype=dtype, rngs=rngs)
    self.null_video = nnx.Param(jnp.zeros((d,)), out_sharding=("embed",))
    self.null_caption = nnx.Param(jnp.zeros((d,)), out_sharding=("embed",))
    self.start_embed = nn.Embed(cfg.time_table, d, axes=(None, "embed"), rngs=rngs)
    self.total_embed = nn.Embed(cfg.time_table, d, axes=(None, "embed"), rngs=rngs)
    fused = 5 * d if cfg.global_fusion == "concat" else d
    self.global_mlp = blocks.xavier_dense_(
      nn.Mlp(fused, d, out_dim=d, activation="silu", dtype=dtype, rngs=rngs), rngs)
    kw = dict(conv_kernel=cfg.conv_kernel, rope_theta=cfg.rope_theta, dtype=dtype)
    self.joint_blocks = nn.Stack(
      lambda r: blocks.JointBlock(d, cfg.num_heads, hidden, rngs=r, **kw), cfg.joint_depth - 1,
      rngs=rngs, remat_policy=cfg.remat_policy,
      unroll=cfg.scan_unroll)
    self.last_joint = blocks.JointBlock(d, cfg.num_heads, hidden, pre_only=True, rngs=rngs, **kw)
    self.single_blocks = nn.Stack(
      lambda r: blocks.SingleBlock(d, cfg.num_heads, hidden, rngs=r, **kw), cfg.single_depth,
      rngs=rngs, remat_policy=cfg.remat_policy,
      unroll=cfg.scan_unroll)
    self.final = blocks.FinalLayer(d, cfg.audio_channels, cfg.final_kernel, dtype=dtype,
                                   rngs=rngs)

  # --- conditions -------------------------------------------------------------------------------

  def conditions(self, batch: Mapping[str, Any]) -> Cond:
    """Projects every condition of a padded schema batch once (see the class docstring).

    Missing keys are absent modalities (all-false masks). Raises KeyError / ValueError naming the
    key on a missing required key or a wrong shape.
    """
    cfg = self.cfg
    missing = [k for k in self.REQUIRED_KEYS if k not in batch]
    if missing:
      raise KeyError(f"AudioGenOmni: batch is missing keys {missing}; required: "
                     f"{self.REQUIRED_KEYS}")
    audio_mask = jnp.asarray(batch["audio_mask"], bool)
    if audio_mask.ndim != 2:
      raise ValueError(f"AudioGenOmni: batch['audio_mask'] has shape {audio_mask.shape}, "
                       f"expected [B, T_a]")
    size, num_frames = audio_mask.shape
    video, video_mask = _features(batch, "video_features", "video_mask", cfg.video_dim, size)
    if self.video_norm is not None:
      video = self.video_norm(video, video_mask)
    video_tokens = self.video_proj(video, video_mask)
    cond = {"audio_mask": audio_mask, "video": video_tokens, "video_mask": video_mask,
            "video_pool": self.video_pool(blocks.masked_mean(video_tokens, video_mask))}
    if self.sync_proj is not None:
      if cfg.sync_source == "video_features":
        sync, sync_mask = video, video_mask
      else:
        sync, sync_mask = _features(batch, "sync_features", "sync_mask", cfg.sync_dim, size)
        if self.sync_pos is not None:  # the same 8 rows for every Synchformer segment
          rows = jnp.arange(sync.shape[1]) % cfg.sync_segment
          sync = sync + self.sync_pos[...][rows]
      src = blocks.sync_indices(sync.shape[1], num_frames, cfg.sync_in[1], cfg.audio_rate)
      sync_rows = self.sync_proj(sync, sync_mask)
      cond["sync"], cond["sync_mask"] = sync_rows[:, src], sync_mask[:, src]
      if sync_rows.shape[1] < num_frames:  # c_a kept at the sync rate (global_condition)
        cond["sync_rows"], cond["sync_row_mask"] = sync_rows, sync_mask
    if cfg.caption_source == "text_ids":
      ids, caption_mask = _features(batch, "text_ids", "text_mask", 0, size, jnp.int32)
      caption = self.caption_embed(jnp.where(caption_mask, ids, 0))
    else:
      caption, caption_mask = _features(batch, "text_embeddings", "text_mask", cfg.text_dim, size)
    cond["caption"] = self.text_proj(caption)
    cond["caption_mask"] = caption_mask
    cond["caption_pool"] = self.caption_pool(blocks.masked_mean(cond["caption"], caption_mask))
    if self.lyrics is not None:
      key, mask_key = cfg.lyrics_key, cfg.lyrics_key.replace("_ids", "_mask")
      if key in batch:
        ids, lyric_mask = _features(batch, key, mask_key, 0, size, jnp.int32)
        durations = None
        if cfg.lyrics_aligned:
          if "phone_durations" not in batch:
            raise KeyError("AudioGenOmni(lyrics_aligned=True): batch has 'transcript_ids' but no "
                           "'phone_durations'")
          durations = batch["phone_durations"]
        lyrics, lyric_mask = self.lyrics(ids, lyric_mask, num_frames, durations)
      else:  # absent: no encoder run, zero frames, all masked
        lyrics = jnp.zeros((size, num_frames, cfg.text_dim), jnp.float32)
        lyric_mask = jnp.zeros((size, num_frames), bool)
      cond["lyrics"], cond["lyric_mask"] = self.text_proj(lyrics), lyric_mask
      if self.lyrics_input is not None:
        cond["lyric_input"] = self.lyrics_input(self.lyrics_norm(lyrics))
    table = cfg.time_table - 1  # per-second tables, clipped (§2.3)
    for name, key, embed in (("start", "start_s", self.start_embed),
                             ("total", "duration_s", self.total_embed)):
      seconds = jnp.broadcast_to(jnp.asarray(batch[key], jnp.float32), (size,))
      cond[name] = embed(jnp.clip(jnp.floor(seconds), 0, table).astype(jnp.int32))
    return cond

  def feature_norms(self) -> dict[str, nn.FeatureNorm]:
    """Batch key -> the FeatureNorm a new run fits to its training data (empty without
    `video_norm`)."""
    return {} if self.video_norm is None else {"video_features": self.video_norm}

  def drop_conditions(self, cond: Cond, key: jax.Array, *, p_video: float = 0.1,
                      p_caption: float = 0.1, p_lyrics: float = 0.1) -> Cond:
    """CFG dropout (spec §3), independent per sample and modality: video (CLIP and sync
    together), caption, lyrics. A dropped modality is masked exactly like a missing one."""
    for name, p in (("p_video", p_video), ("p_caption", p_caption), ("p_lyrics", p_lyrics)):
      if isinstance(p, (int, float)) and not 0.0 <= p <= 1.0:  # rates may also be traced
        raise ValueError(f"AudioGenOmni.drop_conditions: {name}={p} must lie in [0, 1]")
    size = cond["audio_mask"].shape[0]
    keys = jax.random.split(key, 3)
    drops = [jax.random.bernoulli(k, p, (size,)) for k, p in zip(keys, (p_video, p_caption,
                                                                        p_lyrics), strict=True)]
    return _mask_rows(cond, *drops)

  def null_conditions(self, cond: Cond) -> Cond:
    """The unconditional branch (spec §4): video, sync, caption and lyrics masked; start and
    duration kept."""
    rows = jnp.ones((cond["audio_mask"].shape[0],), bool)
    return _mask_rows(cond, rows, rows, rows)

  def auxiliary_loss(self, batch: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """No side objective."""
    del batch
    return jnp.zeros((), jnp.float32), {}

  # --- the network ------------------------------------------------------------------------------

  def global_condition(self, t: jax.Array, cond: Cond) -> tuple[jax.Array, nn.FrameRows]:
    """`c_g` `[B, D]` and the per-frame `c_a = c_g + S` (spec §2.3) as `nn.FrameRows` over
    `[B, T_a, D]`, float32: one row per sync frame when sync is slower than the audio frames, one
    row without a sync branch, else one per audio frame. Every AdaLN then projects those rows only
    (at `mmaudio_s` shapes 192 instead of 250; in the `demo` variant 25 video frames a second
    instead of 86 mel frames)."""
    size, num_frames = cond["audio_mask"].shape
    e_t = self.time_embed(jnp.broadcast_to(jnp.asarray(t, jnp.float32), (size,)))
    has_video = jnp.any(cond["video_mask"], axis=1, keepdims=True)
    has_caption = jnp.any(cond["caption_mask"], axis=1, keepdims=True)
    p_v = jnp.where(has_video, cond["video_pool"], self.null_video[...])
    p_t = jnp.where(has_caption, cond["caption_pool"], self.null_caption[...])
    parts = [x.astype(jnp.float32) for x in (e_t, p_v, p_t, cond["start"], cond["total"])]
    if self.cfg.global_fusion == "concat":
      c_g = self.global_mlp(jnp.concatenate(parts, axis=-1))
    else:  # MMAudio: e_t + MLP(pooled features)
      c_g = parts[0] + self.global_mlp(sum(parts[1:]))
    c_g = c_g.astype(jnp.float32)
    if self.sync_proj is None:
      return c_g, nn.FrameRows(c_g[:, None], jnp.zeros((num_frames,), jnp.int32))
    if "sync_rows" in cond:
      sync, mask = cond["sync_rows"], cond["sync_row_mask"]
      index = blocks.sync_indices(sync.shape[1], num_frames, self.cfg.sync_in[1],
                                  self.cfg.audio_rate)
    else:
      sync, mask, index = cond["sync"], cond["sync_mask"], np.arange(num_frames)
    sync = jnp.where(mask[..., None], sync.astype(jnp.float32), self.null_sync[...])
    return c_g, nn.FrameRows(c_g[:, None] + sync, jnp.asarray(index, jnp.int32))

  def streams(self, cond: Cond) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...],
                                         tuple[jax.Array | None, ...], tuple[jax.Array | None, ...]]:
    """Video and text tokens with the key masks, RoPE positions and RoPE masks of all three
    streams (audio, video, text), PAAPI (§2.6): positions in audio frames, caption not rotated."""
    cfg = self.cfg
    num_frames, num_video = cond["audio_mask"].shape[1], cond["video"].shape[1]
    num_caption = cond["caption"].shape[1]
    text, text_mask = cond["caption"], cond["caption_mask"]
    text_pos = text_rope = None
    if self.lyrics is not None:
      text = jnp.concatenate([text, cond["lyrics"]], axis=1)
      text_mask = jnp.concatenate([text_mask, cond["lyric_mask"]], axis=1)
      # numpy: static positions, whose RoPE tables are built once (nn.rope)
      text_pos = np.concatenate([np.zeros((num_caption,), np.float32),
                                 np.arange(num_frames, dtype=np.float32)])
      text_rope = np.arange(num_caption + num_frames) >= num_caption  # lyric frame j at p = j
    audio_pos = nn.time_positions(num_frames, cfg.audio_rate, cfg.audio_rate)
    video_pos = nn.time_positions(num_video, cfg.video_rate, cfg.audio_rate)
    return ((cond["video"], text), (cond["audio_mask"], cond["video_mask"], text_mask),
            (audio_pos, video_pos, text_pos), (None, None, text_rope))

  def __call__(self, x_t: jax.Array, t: jax.Array, cond: Cond) -> jax.Array:
    """Velocity `[B, T_a, C_a]` for x_t `[B, T_a, C_a]` and t `[B]` (or a scalar)."""
    cfg = self.cfg
    if x_t.ndim != 3 or x_t.shape[-1] != cfg.audio_channels:
      raise ValueError(f"AudioGenOmni: x_t has shape {x_t.shape}, expected [B, T_a, "
                       f"{cfg.audio_channels}]")
    if x_t.shape[:2] != cond["audio_mask"].shape:
      raise ValueError(f"AudioGenOmni: x_t {x_t.shape} does not match the condition's audio_mask "
                       f"{cond['audio_mask'].shape}")
    dtype = jnp.float32 if cfg.dtype is None else jnp.dtype(cfg.dtype)
    c_g, c_a = self.global_condition(t, cond)
    c_g, c_a = c_g.astype(dtype), c_a.astype(dtype)
    (video, text), masks, positions, rope_masks = self.streams(cond)
    audio_mask = cond["audio_mask"]
    audio = self.audio_proj(x_t.astype(dtype), audio_mask).astype(dtype)
    if cfg.sync_to_input and self.sync_proj is not None:  # masked / dropped frames add nothing
      audio = audio + jnp.where(cond["sync_mask"][..., None], cond["sync"], 0).astype(dtype)
    if self.lyrics_input is not None:
      audio = audio + jnp.where(cond["lyric_mask"][..., None], cond["lyric_input"], 0).astype(dtype)
    carry = (audio, video.astype(dtype), text.astype(dtype))
    carry = self.joint_blocks(carry, c_a, c_g, masks, positions, rope_masks)
    audio = self.last_joint(carry, c_a, c_g, masks, positions, rope_masks)[0]
    audio = self.single_blocks(audio, c_a, audio_mask, positions[0])
    return self.final(audio, c_a, audio_mask)


def _mask_rows(cond: Cond, video_rows: jax.Array, caption_rows: jax.Array,
               lyric_rows: jax.Array) -> Cond:
  """Masks video (and sync), caption and lyrics of the rows flagged `[B]` bool."""
  out = dict(cond)
  for name, rows in (("video_mask", video_rows), ("sync_mask", video_rows),
                     ("sync_row_mask", video_rows),
                     ("caption_mask", caption_rows), ("lyric_mask", lyric_rows)):
    if name in out:
      out[name] = out[name] & ~rows[:, None]
  return out
