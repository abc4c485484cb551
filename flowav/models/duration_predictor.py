"""VSSFlow's attention duration predictor: phones -> frames alignment (spec §2.7).

A phone encoder and a lip encoder (post-LN transformers) feed a decoder whose queries are the lip
frames and whose keys are the phones; the cross-attention weights A `[T, P]` of its last layer are
the soft alignment. Training matches A to the row-normalised ground-truth duration matrix with a
smooth-L1 loss (beta 5e-4); inference turns A into frames per phone with a monotonic Viterbi pass
(spec §2.7 "optionally enforce monotonicity with a DTW-style pass").

Departures from the code's predictor (spec §2.7), chosen for flowav's data:
- the lip features are the video features resampled to the audio latent grid (no AV-HuBERT), so A
  is directly `[T_a, P]`;
- the span head (Lin(64->64) -> Lin(64->2)), whose loss the code computes but never uses, is left
  out;
- the decoder's feed-forward has the encoder's three-layer ReLU shape.
"""

from __future__ import annotations

import math

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav.data import schema
from flowav.nn import Attention, Dense, Embed, LayerNorm, Stack, timestep_sinusoidal

_MASK_VALUE = -1e30


def sinusoidal_positions(length: int, dim: int) -> jax.Array:
  """Fixed transformer position encoding `[length, dim]` (the predictor's "PE", spec §2.7)."""
  return timestep_sinusoidal(jnp.arange(length, dtype=jnp.float32), dim, scale=1.0)


def attention_with_weights(attn: Attention, x: jax.Array, memory: jax.Array,
                           key_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Cross-attention through `attn`'s projections that also returns its weights.

  x `[B, Lq, D]`, memory `[B, Lk, D_kv]`, key_mask `[B, Lk]` bool -> (`[B, Lq, D_out]`, weights
  `[B, H, Lq, Lk]`). Masked keys get weight exactly 0; a row with no valid key is all 0.
  """
  q = attn.queries(x)
  k, v = attn.keys_values(memory)
  if k.shape[2] != q.shape[2]:
    raise ValueError(f"attention_with_weights: needs as many KV heads as query heads, got "
                     f"{k.shape[2]} and {q.shape[2]}")
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
  mask = key_mask.astype(bool)[:, None, None, :]
  weights = jnp.where(mask, jax.nn.softmax(jnp.where(mask, logits, _MASK_VALUE), axis=-1), 0.0)
  return attn.project_out(jnp.einsum("bhqk,bkhd->bqhd", weights, v)), weights


class FeedForward(nnx.Module):
  """Lin(d -> ff) -> ReLU -> Lin(ff -> ff) -> ReLU -> Lin(ff -> d), with biases (spec §2.7)."""

  def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs):
    self.fc1 = Dense(dim, hidden, axes=("embed", "mlp"), use_bias=True, rngs=rngs)
    self.fc2 = Dense(hidden, hidden, axes=("mlp", None), use_bias=True, rngs=rngs)
    self.fc3 = Dense(hidden, dim, axes=(None, "embed"), use_bias=True, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.fc3(jax.nn.relu(self.fc2(jax.nn.relu(self.fc1(x)))))


def _check_heads(dim: int, heads: int, what: str) -> int:
  if dim <= 0 or heads <= 0 or dim % heads:
    raise ValueError(f"DurationPredictor: {what} width {dim} must be a positive multiple of its "
                     f"{heads} heads")
  return dim // heads


class EncoderLayer(nnx.Module):
  """Post-LN transformer encoder layer: x = LN(x + SelfAttn(x)); x = LN(x + FF(x))."""

  def __init__(self, dim: int, heads: int, ff_hidden: int, *, rngs: nnx.Rngs):
    head_dim = _check_heads(dim, heads, "encoder")
    self.attn = Attention(dim, heads, head_dim, use_bias=True, rngs=rngs)
    self.norm1 = LayerNorm(dim, rngs=rngs)
    self.ff = FeedForward(dim, ff_hidden, rngs=rngs)
    self.norm2 = LayerNorm(dim, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
    x = self.norm1(x + self.attn(x, key_mask=mask))
    return self.norm2(x + self.ff(x))


class DecoderLayer(nnx.Module):
  """Post-LN decoder layer; the carry `(x, weights)` passes its cross-attention weights on."""

  def __init__(self, dim: int, heads: int, ff_hidden: int, *, rngs: nnx.Rngs):
    head_dim = _check_heads(dim, heads, "decoder")
    self.self_attn = Attention(dim, heads, head_dim, use_bias=True, rngs=rngs)
    self.norm1 = LayerNorm(dim, rngs=rngs)
    self.cross_attn = Attention(dim, heads, head_dim, use_bias=True, rngs=rngs)
    self.norm2 = LayerNorm(dim, rngs=rngs)
    self.ff = FeedForward(dim, ff_hidden, rngs=rngs)
    self.norm3 = LayerNorm(dim, rngs=rngs)

  def __call__(self, carry: tuple[jax.Array, jax.Array], memory: jax.Array, query_mask: jax.Array,
               memory_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, _ = carry
    x = self.norm1(x + self.self_attn(x, key_mask=query_mask))
    attended, weights = attention_with_weights(self.cross_attn, x, memory, memory_mask)
    x = self.norm2(x + attended)
    return self.norm3(x + self.ff(x)), weights


class DurationPredictor(nnx.Module):
  """Phone/lip encoders and an alignment decoder (spec §2.7); see the module docstring.

  Sizes (paper): vocab 1001, embed_dim 64, enc_dim 256 with enc_heads 4, enc_ff 1024, enc_layers 2
  (per encoder), bridge_dim 128, dec_dim 64 with dec_heads 1, dec_ff 1024, dec_layers 4.
  """

  def __init__(self, *, vocab: int, lip_dim: int, embed_dim: int, enc_dim: int, enc_heads: int,
               enc_ff: int, enc_layers: int, bridge_dim: int, dec_dim: int, dec_heads: int,
               dec_ff: int, dec_layers: int, rngs: nnx.Rngs):
    if dec_layers < 1:
      raise ValueError(f"DurationPredictor: dec_layers={dec_layers} must be >= 1 (the alignment "
                       "is the last decoder layer's attention)")
    _check_heads(enc_dim, enc_heads, "encoder")
    _check_heads(dec_dim, dec_heads, "decoder")
    self.enc_dim, self.dec_dim, self.dec_heads = enc_dim, dec_dim, dec_heads
    self.phone_embed = Embed(vocab, embed_dim, axes=("vocab", None), rngs=rngs)
    self.phone_in = Dense(embed_dim, enc_dim, axes=(None, "embed"), use_bias=True, rngs=rngs)
    # The stacks are shallow (<= 4 layers); unrolled, their gradient compiled ~2x faster than a
    # scan on the 2-core CPU.
    self.phone_encoder = Stack(lambda r: EncoderLayer(enc_dim, enc_heads, enc_ff, rngs=r),
                               enc_layers, rngs=rngs, unroll=max(enc_layers, 1))
    self.phone_out = Dense(enc_dim, bridge_dim, axes=("embed", None), use_bias=True, rngs=rngs)
    self.lip_in = Dense(lip_dim, enc_dim, axes=("kv", "embed"), use_bias=True, rngs=rngs)
    self.lip_encoder = Stack(lambda r: EncoderLayer(enc_dim, enc_heads, enc_ff, rngs=r),
                             enc_layers, rngs=rngs, unroll=max(enc_layers, 1))
    self.lip_out = Dense(enc_dim, bridge_dim, axes=("embed", None), use_bias=True, rngs=rngs)
    self.query_in = Dense(bridge_dim, dec_dim, axes=(None, "embed"), use_bias=True, rngs=rngs)
    self.memory_in = Dense(bridge_dim, dec_dim, axes=(None, "embed"), use_bias=True, rngs=rngs)
    self.decoder = Stack(lambda r: DecoderLayer(dec_dim, dec_heads, dec_ff, rngs=r), dec_layers,
                         rngs=rngs, unroll=dec_layers)

  def __call__(self, phone_ids: jax.Array, phone_mask: jax.Array, lip: jax.Array,
               lip_mask: jax.Array) -> jax.Array:
    """Soft alignment A `[B, T, P]` (mean over decoder heads of the last cross-attention).

    phone_ids `[B, P]` int (0 = pad), phone_mask `[B, P]` bool, lip `[B, T, lip_dim]`, lip_mask
    `[B, T]` bool. Each row sums to 1 over the valid phones (0 where a row has no valid phone).
    """
    batch, num_frames = lip.shape[:2]
    num_phones = phone_ids.shape[1]
    phones = self.phone_in(self.phone_embed(phone_ids))
    phones = self.phone_encoder(phones + sinusoidal_positions(num_phones, self.enc_dim), phone_mask)
    lips = self.lip_encoder(self.lip_in(lip) + sinusoidal_positions(num_frames, self.enc_dim),
                            lip_mask)
    queries = self.query_in(self.lip_out(lips)) + sinusoidal_positions(num_frames, self.dec_dim)
    memory = self.memory_in(self.phone_out(phones)) + sinusoidal_positions(num_phones, self.dec_dim)
    start = (queries, jnp.zeros((batch, self.dec_heads, num_frames, num_phones), queries.dtype))
    _, weights = self.decoder(start, memory, lip_mask, phone_mask)
    return jnp.mean(weights, axis=1)


def alignment_loss(weights: jax.Array, durations: jax.Array, row_mask: jax.Array, *,
                   beta: float = 5e-4) -> jax.Array:
  """Smooth-L1 between A and the row-normalised ground-truth duration matrix (spec §2.7).

  weights `[B, T, P]`; durations `[B, P]` int frames per phone (0 on padding); row_mask `[B, T]`
  bool, the frames that count. Rows that no phone covers are left out too (a softmax row cannot
  be all zero). Returns the mean over counted rows x P columns (0 when no row counts).
  """
  target = schema.duration_matrix(jnp.asarray(durations), weights.shape[1])
  row_sum = jnp.sum(target, axis=-1, keepdims=True)
  target = target / jnp.maximum(row_sum, 1.0)
  rows = row_mask.astype(bool) & (row_sum[..., 0] > 0)
  diff = weights - target
  abs_diff = jnp.abs(diff)
  per_entry = jnp.where(abs_diff < beta, 0.5 * diff * diff / beta, abs_diff - 0.5 * beta)
  total = jnp.sum(jnp.where(rows[..., None], per_entry, 0.0))
  return total / jnp.maximum(jnp.sum(rows) * weights.shape[-1], 1)


def monotonic_alignment(log_probs: np.ndarray) -> np.ndarray:
  """Most likely monotonic phone index per frame under `log_probs` `[T, P]` (Viterbi).

  With T >= P: the path starts at phone 0, ends at phone P-1 and advances by 0 or 1 per frame, so
  every phone gets >= 1 frame. With T < P: every frame gets its own phone, strictly increasing.
  Returns int32 `[T]`.
  """
  log_probs = np.asarray(log_probs, np.float64)
  if log_probs.ndim != 2:
    raise ValueError(f"monotonic_alignment: log_probs must be [T, P], got {log_probs.shape}")
  num_frames, num_phones = log_probs.shape
  if num_frames == 0:
    return np.zeros((0,), np.int32)
  if num_phones == 0:
    raise ValueError("monotonic_alignment: needs at least one phone")
  phones = np.arange(num_phones)
  back = np.zeros((num_frames, num_phones), np.int64)  # previous frame's phone
  if num_frames >= num_phones:
    score = np.where(phones == 0, log_probs[0], -np.inf)
    for t in range(1, num_frames):
      advance = np.concatenate([[-np.inf], score[:-1]])
      back[t] = np.where(advance > score, phones - 1, phones)
      score = np.maximum(advance, score) + log_probs[t]
    last = num_phones - 1
  else:
    score = log_probs[0].copy()
    for t in range(1, num_frames):
      best = np.maximum.accumulate(score)  # best over phones <= p
      arg = np.maximum.accumulate(np.where(score >= best, phones, 0))
      back[t, 1:] = arg[:-1]
      score = np.concatenate([[-np.inf], best[:-1]]) + log_probs[t]
    last = int(np.argmax(score))
  path = np.zeros((num_frames,), np.int32)
  path[-1] = last
  for t in range(num_frames - 1, 0, -1):
    path[t - 1] = back[t, path[t]]
  return path


def durations_from_attention(weights: np.ndarray, num_frames: np.ndarray,
                             num_phones: np.ndarray) -> np.ndarray:
  """Frames per phone from soft alignments, one monotonic path per row.

  weights `[B, T, P]`; num_frames `[B]` valid (leading) frames; num_phones `[B]` valid (leading)
  phones. Returns int32 `[B, P]`, summing to num_frames where a row has phones (else all 0).
  """
  weights = np.asarray(weights, np.float64)
  out = np.zeros((weights.shape[0], weights.shape[2]), np.int32)
  for b, (n_t, n_p) in enumerate(zip(np.asarray(num_frames), np.asarray(num_phones))):
    if n_t == 0 or n_p == 0:
      continue
    path = monotonic_alignment(np.log(np.maximum(weights[b, :n_t, :n_p], 1e-12)))
    out[b, :n_p] = schema.durations_from_frame_phones(path, int(n_p))
  return out
