"""AudioGen-Omni building blocks (specs/audiogen_omni.md §2): batch inputs and sync alignment,
stream projections, the lyrics encoder, the MM-DiT joint block, the audio-only single block and the
final layer.

Layouts follow MMAudio (`model/networks.py`, `transformer_layers.py`): AdaLN `LN(x)(1+scale)+shift`
with residual gates, per-stream weights, q/k/v with bias and per-head RMSNorm, output conv k3 and
conv SwiGLU on the temporal (audio, video) streams, Linear and SwiGLU on the text stream. Attention
and RoPE come from `flowav.nn` (JointAttention, Attention, apply_rope). Padded frames are zeroed
before every conv (`nn.Conv1d(mask)`), so valid outputs never read padded values (§7.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav import nn
from flowav.data import schema
from flowav.parallel.sharding import constrain

_SEQ_AXES = ("act_batch", "act_len", "act_embed")
XAVIER = nnx.initializers.xavier_uniform()
ZERO = nnx.initializers.zeros_init()


def sync_indices(num_src: int, num_dst: int, src_rate: float, dst_rate: float) -> np.ndarray:
  """Source frame of each target frame, torch `nearest-exact` in seconds (spec §2.3), int32
  `[num_dst]`."""
  return nn.nearest_source_frames(num_src, num_dst, src_rate, dst_rate, centre=True)


def batch_features(batch: Mapping[str, Any], key: str, mask_key: str, width: int, size: int,
              dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array]:
  """`batch[key]` `[B, L(, width)]` and its mask, or one all-masked zero token if `key` is absent."""
  if key not in batch:
    shape = (size, 1) if width == 0 else (size, 1, width)
    return jnp.zeros(shape, dtype), jnp.zeros((size, 1), bool)
  if mask_key not in batch:
    raise KeyError(f"AudioGenOmni: batch has {key!r} but not its mask {mask_key!r}")
  x, mask = jnp.asarray(batch[key], dtype), jnp.asarray(batch[mask_key], bool)
  rank = 2 if width == 0 else 3
  if x.ndim != rank or x.shape[0] != size or (width and x.shape[-1] != width):
    want = "[B, L]" if width == 0 else f"[B, L, {width}]"
    raise ValueError(f"AudioGenOmni: batch[{key!r}] has shape {x.shape}, expected {want} with "
                     f"B={size}")
  if mask.shape != x.shape[:2]:
    raise ValueError(f"AudioGenOmni: batch[{mask_key!r}] has shape {mask.shape}, expected "
                     f"{x.shape[:2]} (the shape of {key!r})")
  return x, mask


def ffn_hidden(width: int, multiple_of: int) -> int:
  """MMAudio's SwiGLU width: `int(2 * 4 * width / 3)` rounded up to `multiple_of` (2816 at 1024)."""
  hidden = int(2 * 4 * width / 3)
  return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def xavier_dense_(module: nnx.Module, rngs: nnx.Rngs) -> nnx.Module:
  """Re-initialises every `nn.Dense` inside `module` (kernel Xavier-uniform, bias 0), as MMAudio's
  `initialize_weights` does for each nn.Linear (spec §2.5). Returns `module`."""
  for _, sub in nnx.iter_graph(module):
    if isinstance(sub, nn.Dense):
      sub.kernel[...] = XAVIER(rngs.params(), sub.kernel.shape, jnp.float32)
      if sub.bias is not None:
        sub.bias[...] = jnp.zeros(sub.bias.shape, jnp.float32)
  return module


def _norm(width: int) -> nn.LayerNorm:
  """The affine-free LayerNorm (eps 1e-6) that AdaLN modulates (spec §2.3)."""
  return nn.LayerNorm(width, eps=1e-6, use_scale=False, use_bias=False)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over the valid tokens: x `[B, L, D]`, mask `[B, L]` -> float32 `[B, D]` (0 if none)."""
  weights = mask.astype(jnp.float32)[..., None]
  total = jnp.sum(x.astype(jnp.float32) * weights, axis=1)
  return total / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


class StreamProj(nnx.Module):
  """Input projection (spec §2.2): `first -> SiLU -> SwiGLU`, `[B, L, in] -> [B, L, width]`.

  `kernel_size=None`: first = Dense(in -> width, bias, Xavier) and a plain SwiGLU (the text
  stream). Otherwise first = Conv1d(k=`first_kernel`, bias) (or a Dense when `first_kernel` is 1)
  and a conv SwiGLU of size `kernel_size` (audio k7; CLIP Linear + k3; sync k7 + k3).
  """

  def __init__(self, in_dim: int, width: int, hidden: int, *, kernel_size: int | None,
               first_kernel: int = 1, in_axis: str = "kv", dtype: Any = None, rngs: nnx.Rngs):
    if first_kernel == 1:
      self.first = nn.Dense(in_dim, width, axes=(in_axis, "embed"), use_bias=True,
                            kernel_init=XAVIER, dtype=dtype, rngs=rngs)
    else:
      self.first = nn.Conv1d(in_dim, width, first_kernel, axes=("conv_window", in_axis, "embed"),
                             dtype=dtype, rngs=rngs)
    self.conv = kernel_size is not None
    if self.conv:
      self.ffn = nn.ConvSwiGLU(width, hidden, kernel_size, dtype=dtype, rngs=rngs)
    else:
      self.ffn = xavier_dense_(nn.SwiGLU(width, hidden, use_bias=False, dtype=dtype, rngs=rngs),
                               rngs)

  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """x `[B, L, in]`, mask `[B, L]` (frames read as 0 by the convs when False)."""
    if isinstance(self.first, nn.Conv1d):
      h = self.first(x, mask)
    else:
      h = self.first(x)
    h = jax.nn.silu(h)
    return self.ffn(h, mask) if self.conv else self.ffn(h)


class LyricsEncoder(nnx.Module):
  """LT encoder (spec §2.1, F5-TTS `TextEmbedding`): ids laid out on the audio frame budget.

  ids `[B, L_p]` (+ mask) -> frames `[B, T_a, dim]` and their validity `[B, T_a]`: the valid ids
  are packed to the front (frame i holds token i, truncated at T_a), `Embed(vocab+1, dim)` plus the
  fixed sinusoid `[cos(p w_k), sin(p w_k)]`, `p = min(i, max_pos - 1)`; filler frames are zero
  before and after each ConvNeXt-V2 block (whose GRN norm runs over valid frames only), so the
  valid outputs do not depend on pad ids or on T_a. Params: `embed` `[vocab+1, dim]`,
  `blocks/layers/...` (nn.Stack of nn.ConvNeXtV2Block, hidden `mult * dim`, k7).

  `aligned=True` (not in the spec) lays each valid phone over its own frames instead, from
  per-phone frame counts `durations` `[B, L_p]` (frames past their sum are filler). A small model
  given packed phones never learned which phone sounds when: after 3190 demo steps its loss with
  another clip's transcript was within 0.3 % of its loss with the right one.
  """

  def __init__(self, vocab: int, dim: int, num_blocks: int, mult: int, *, max_pos: int = 4000,
               aligned: bool = False, rngs: nnx.Rngs):
    self.vocab, self.dim, self.max_pos, self.aligned = vocab, dim, max_pos, aligned
    self.embed = nn.Embed(vocab + 1, dim, axes=("vocab", "kv"), rngs=rngs)
    self.blocks = nn.Stack(lambda r: nn.ConvNeXtV2Block(dim, mult * dim, kernel_size=7, rngs=r),
                           num_blocks, rngs=rngs)

  def __call__(self, ids: jax.Array, mask: jax.Array, num_frames: int,
               durations: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    ids, mask = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, bool)
    if self.aligned:
      if durations is None:
        raise ValueError("LyricsEncoder(aligned=True) needs per-phone frame counts `durations`")
      frames = jnp.where(mask, jnp.asarray(durations, jnp.int32), 0)
      inside = schema.duration_matrix(frames, num_frames)  # [B, T_a, L_p] one-hot rows
      valid = jnp.sum(inside, axis=-1) > 0
      phone_of_frame = jnp.argmax(inside, axis=-1)  # [B, T_a]; 0 on filler frames, masked below
      return self._encode(jnp.take_along_axis(ids, phone_of_frame, axis=1), valid)
    order = jnp.argsort(~mask, axis=1, stable=True)  # valid tokens first, in order
    ids = jnp.take_along_axis(jnp.where(mask, ids, 0), order, axis=1)
    count = jnp.sum(mask, axis=1)
    if ids.shape[1] >= num_frames:
      ids = ids[:, :num_frames]
    else:
      ids = jnp.pad(ids, ((0, 0), (0, num_frames - ids.shape[1])))
    valid = jnp.arange(num_frames)[None] < count[:, None]
    return self._encode(ids, valid)

  def _encode(self, ids: jax.Array, valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Frame ids `[B, T_a]` and validity -> ConvNeXt features `[B, T_a, dim]`, validity."""
    frames = jnp.arange(ids.shape[1])
    pos = nn.timestep_sinusoidal(jnp.minimum(frames, self.max_pos - 1), self.dim, scale=1.0)
    x = self.embed(jnp.where(valid, ids, 0)) + pos[None]
    x = self.blocks(nn.mask_frames(x, valid), valid)
    return nn.mask_frames(x, valid), valid


class StreamLayer(nnx.Module):
  """One stream's non-attention weights in a block: AdaLN modulation and, unless pre-only, the
  attention output conv (temporal streams; the text stream's output Linear lives in the attention)
  and the FFN (conv SwiGLU k3, or SwiGLU for text). Pre-only: a 2-chunk modulation (shift, scale).
  """

  def __init__(self, width: int, hidden: int, *, temporal: bool, pre_only: bool = False,
               conv_kernel: int = 3, global_cond: bool = False, dtype: Any = None,
               rngs: nnx.Rngs):
    self.pre_only, self.temporal = pre_only, temporal
    self.norm1, self.norm2 = _norm(width), _norm(width)
    self.adaln = nn.AdaLNModulation(width, width, 2 if pre_only else 6, dtype=dtype,
                                    per_example=global_cond, rngs=rngs)
    out = ffn = None
    if not pre_only and temporal:
      out = nn.Conv1d(width, width, conv_kernel, axes=("conv_window", "heads", "embed"),
                      dtype=dtype, rngs=rngs)
      ffn = nn.ConvSwiGLU(width, hidden, conv_kernel, dtype=dtype, rngs=rngs)
    elif not pre_only:
      ffn = xavier_dense_(nn.SwiGLU(width, hidden, use_bias=False, dtype=dtype, rngs=rngs), rngs)
    self.out, self.ffn = nnx.data(out), nnx.data(ffn)

  def pre(self, x: jax.Array, c: jax.Array | nn.FrameRows
          ) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """The attention input `LN(x)(1+scale1)+shift1` and all modulations of c `[B, D]`, `[B, L, D]`
    or `nn.FrameRows`."""
    mods = self.adaln(c)
    return nn.modulate(self.norm1(x), mods[0], mods[1]).astype(x.dtype), mods

  def post(self, x: jax.Array, attn: jax.Array, mods: tuple[jax.Array, ...],
           mask: jax.Array) -> jax.Array:
    """`x += gate1 O(attn)`, then `x += gate2 FFN(LN(x)(1+scale2)+shift2)`."""
    _, _, gate1, shift2, scale2, gate2 = mods
    if self.out is not None:
      attn = self.out(attn, mask)
    x = x + nn.gate(attn, gate1).astype(x.dtype)
    h = nn.modulate(self.norm2(x), shift2, scale2).astype(x.dtype)
    h = self.ffn(h, mask) if self.temporal else self.ffn(h)
    return constrain(x + nn.gate(h, gate2).astype(x.dtype), _SEQ_AXES)


class JointBlock(nnx.Module):
  """MM-DiT block over (audio, video, text) streams with per-stream weights (spec §2.4).

  The audio stream is modulated by the per-frame `c_a`, video and text by `c_g`. All q/k/v meet in
  one `nn.JointAttention` softmax under the key masks; RoPE (interleaved) rotates the tokens whose
  rope mask is on, at their positions on the audio-frame time axis (PAAPI, §2.6). `pre_only`: the
  last joint block, whose video and text streams only give keys and values; it returns them as
  they came in. Params: `attn/streams/{0,1,2}/...`, `audio`, `video`, `text` (StreamLayer).
  """

  def __init__(self, width: int, num_heads: int, hidden: int, *, pre_only: bool = False,
               conv_kernel: int = 3, rope_theta: float = 10000.0, dtype: Any = None,
               rngs: nnx.Rngs):
    self.pre_only = pre_only
    head_dim = width // num_heads
    self.rope = nn.RopeConfig(head_dim, rope_theta, "interleaved")
    # Output projections: conv in StreamLayer for audio/video, Linear (in the attention) for text.
    self.attn = xavier_dense_(nn.JointAttention(
      [width] * 3, num_heads, head_dim, qk_norm="rms", use_bias=True,
      use_out_proj=[False, False, not pre_only], dtype=dtype, rngs=rngs), rngs)
    kw = dict(conv_kernel=conv_kernel, dtype=dtype, rngs=rngs)
    self.audio = StreamLayer(width, hidden, temporal=True, **kw)
    # Video and text are modulated by the one-vector c_g: float32 mat-vecs (nn.AdaLNModulation).
    self.video = StreamLayer(width, hidden, temporal=True, pre_only=pre_only, global_cond=True, **kw)
    self.text = StreamLayer(width, hidden, temporal=False, pre_only=pre_only, global_cond=True,
                            **kw)

  def __call__(self, streams: tuple[jax.Array, jax.Array, jax.Array],
               c_a: jax.Array | nn.FrameRows, c_g: jax.Array, masks: Sequence[jax.Array],
               positions: Sequence[jax.Array | None],
               rope_masks: Sequence[jax.Array | None]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """streams `[B, T_a, D]`, `[B, T_v, D]`, `[B, L_x, D]`; c_a `[B, T_a, D]` or its
    `nn.FrameRows`; c_g `[B, D]`; masks `[B, L_i]`; positions / rope_masks `[L_i]` or None -> the
    three streams, same shapes."""
    layers = (self.audio, self.video, self.text)
    conds = (c_a, c_g, c_g)
    pre = [layer.pre(x, c) for layer, x, c in zip(layers, streams, conds, strict=True)]
    outs = self.attn([h for h, _ in pre], masks=masks, rope=self.rope, positions=positions,
                     rope_masks=rope_masks, query_streams=(True, not self.pre_only,
                                                            not self.pre_only))
    new = []
    for layer, x, (_, mods), out, mask in zip(layers, streams, pre, outs, masks, strict=True):
      new.append(x if layer.pre_only else layer.post(x, out, mods, mask))
    return tuple(new)


class SingleBlock(nnx.Module):
  """Audio-only block (spec §2.5, MMAudio `MMDitSingleBlock`): self-attention over the audio with
  RoPE and the padded audio keys masked, output conv k3, conv SwiGLU k3, modulated by `c_a`.
  Params: `attn` (nn.Attention without output Linear), `layer` (StreamLayer)."""

  def __init__(self, width: int, num_heads: int, hidden: int, *, conv_kernel: int = 3,
               rope_theta: float = 10000.0, dtype: Any = None, rngs: nnx.Rngs):
    head_dim = width // num_heads
    self.rope = nn.RopeConfig(head_dim, rope_theta, "interleaved")
    self.attn = xavier_dense_(nn.Attention(width, num_heads, head_dim, use_bias=True,
                                           qk_norm="rms", use_out_proj=False, dtype=dtype,
                                           rngs=rngs), rngs)
    self.layer = StreamLayer(width, hidden, temporal=True, conv_kernel=conv_kernel, dtype=dtype,
                             rngs=rngs)

  def __call__(self, x: jax.Array, c_a: jax.Array | nn.FrameRows, mask: jax.Array,
               positions: jax.Array) -> jax.Array:
    """x `[B, T_a, D]`, c_a `[B, T_a, D]` (or `nn.FrameRows`), mask `[B, T_a]`, positions `[T_a]`
    -> `[B, T_a, D]`."""
    h, mods = self.layer.pre(x, c_a)
    attn = self.attn(h, key_mask=mask, rope=self.rope, q_positions=positions,
                     k_positions=positions)
    return self.layer.post(x, attn, mods, mask)


class FinalLayer(nnx.Module):
  """`Conv1d(D -> C_a, k)(LN(x)(1+scale)+shift)` with (shift, scale) from the per-frame `c_a`
  (spec §2.5; MMAudio feeds c_g here, its issue #55). Modulation and conv are zero-initialised,
  so a fresh model outputs exactly 0."""

  def __init__(self, width: int, out_channels: int, kernel_size: int, *, dtype: Any = None,
               rngs: nnx.Rngs):
    self.norm = _norm(width)
    self.adaln = nn.AdaLNModulation(width, width, 2, dtype=dtype, rngs=rngs)
    self.conv = nn.Conv1d(width, out_channels, kernel_size,
                          axes=("conv_window", "embed", "channels"), kernel_init=ZERO,
                          dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, c_a: jax.Array | nn.FrameRows, mask: jax.Array) -> jax.Array:
    shift, scale = self.adaln(c_a)
    return self.conv(nn.modulate(self.norm(x), shift, scale).astype(x.dtype), mask)
