"""Multi-head attention: the grouped (GQA) kernel, self/cross attention, and MM-DiT joint attention.

Grouped KV heads follow torch `repeat_interleave`: query head h reads KV head `h // (H // Hk)`
(vssflow §2.2: each KV head serves query heads 2h and 2h+1). Joint attention concatenates the
q/k/v of several streams along the sequence, attends once under one key mask and splits the result
back (audiogen_omni §2.4, §2.7; flowley §2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav.nn.linear import Dense
from flowav.nn.norm import LayerNorm, RMSNorm
from flowav.nn.rope import RopeConfig, apply_rope
from flowav.parallel.sharding import constrain

# Finite, so masked logits never turn into inf - inf = NaN (also in the backward pass).
_MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)
_HEADS_AXES = ("act_batch", "act_len", "act_heads", None)
_KV_HEADS_AXES = ("act_batch", "act_kv_len", "act_heads", None)


def _check(q: jax.Array, k: jax.Array, v: jax.Array | None) -> tuple[int, int, int, int, int]:
  if q.ndim != 4 or k.ndim != 4:
    raise ValueError(f"dot_product_attention: q, k must be 4-D, got {q.shape}, {k.shape}")
  batch, lq, heads, head_dim = q.shape
  lk, kv_heads = k.shape[1], k.shape[2]
  if k.shape[0] != batch or k.shape[3] != head_dim:
    raise ValueError(f"dot_product_attention: incompatible q {q.shape} and k {k.shape}")
  if heads % kv_heads:
    raise ValueError(f"dot_product_attention: {heads} query heads not divisible by {kv_heads}")
  if v is not None and (v.ndim != 4 or v.shape[:3] != k.shape[:3]):
    raise ValueError(f"dot_product_attention: v {v.shape} does not match k {k.shape}")
  return batch, lq, heads, lk, kv_heads


def _grouped_layout(q: jax.Array, k: jax.Array, key_mask: jax.Array | None,
                    bias: jax.Array | None, scale: float | None):
  """Grouped-query attention as plain 4-D batched matmuls, the layout XLA:CPU runs fastest.

  The G = H / Hk query heads that share a KV head are folded into the query axis:
  q -> `[B, Hk, G*Lq, Dh]` (already scaled), k -> `[B, Hk, Lk, Dh]`, bias -> `[b, h, G*Lq, Lk]`,
  mask -> `[B, 1, 1, Lk]` float (1 = attend). Query head h is (kv head h // G, group h % G).
  """
  batch, lq, heads, lk, kv_heads = _check(q, k, None)
  groups = heads // kv_heads
  scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
  qg = q.reshape(batch, lq, kv_heads, groups, q.shape[-1]).transpose(0, 2, 3, 1, 4)
  qg = qg.reshape(batch, kv_heads, groups * lq, q.shape[-1]) * jnp.asarray(scale, q.dtype)
  kg = k.transpose(0, 2, 1, 3)
  if bias is None:
    bias_g = jnp.zeros((1, 1, 1, 1), jnp.float32)
  else:
    bias = jnp.asarray(bias, jnp.float32)
    if bias.ndim > 4:
      raise ValueError(f"dot_product_attention: bias has {bias.ndim} dims, at most 4 allowed")
    bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape)
    try:
      jnp.broadcast_shapes(bias.shape, (batch, heads, lq, lk))
    except ValueError as e:
      raise ValueError(f"dot_product_attention: bias shape {bias.shape} does not broadcast to "
                       f"[B, H, Lq, Lk]={(batch, heads, lq, lk)}") from e
    b, h = bias.shape[0], bias.shape[1]
    bias = jnp.broadcast_to(bias, (b, h, lq, lk))
    if h == 1:
      bias_g = jnp.broadcast_to(bias[:, :, None], (b, 1, groups, lq, lk))
      bias_g = bias_g.reshape(b, 1, groups * lq, lk)
    else:
      bias_g = bias.reshape(b, kv_heads, groups * lq, lk)
  if key_mask is None:
    mask_g = jnp.ones((1, 1, 1, 1), jnp.float32)
  else:
    if key_mask.shape != (batch, lk):
      raise ValueError(
        f"dot_product_attention: key_mask shape {key_mask.shape} != [B, Lk]=({batch}, {lk})")
    mask_g = key_mask.astype(jnp.float32)[:, None, None, :]
  return qg, kg, bias_g, mask_g, groups


def _softmax_weights(qg, kg, bias_g, mask_g):
  """Masked softmax `[B, Hk, G*Lq, Lk]` float32; all-masked rows are all zero."""
  logits = jnp.einsum("bhqd,bhkd->bhqk", qg, kg, preferred_element_type=jnp.float32) + bias_g
  logits = jnp.where(mask_g > 0, logits, _MASK_VALUE)
  row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  e = jnp.exp(logits - row_max) * mask_g
  denom = jnp.sum(e, axis=-1, keepdims=True)
  return e / jnp.where(denom > 0, denom, 1.0)


@jax.custom_vjp
def _attend(qg, kg, vg, bias_g, mask_g):
  weights = _softmax_weights(qg, kg, bias_g, mask_g)
  return jnp.einsum("bhqk,bhkd->bhqd", weights.astype(vg.dtype), vg,
                    preferred_element_type=jnp.float32)


def _attend_fwd(qg, kg, vg, bias_g, mask_g):
  weights = _softmax_weights(qg, kg, bias_g, mask_g)
  out = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(vg.dtype), vg,
                   preferred_element_type=jnp.float32)
  return out, (qg, kg, vg, bias_g, mask_g, weights)


def _attend_bwd(res, d_out):
  """The softmax-attention backward written out: five matmul-shaped ops in the forward's layout
  (XLA:CPU's autodiff of the same graph runs several times slower)."""
  qg, kg, vg, bias_g, mask_g, w = res
  d_out = d_out.astype(jnp.float32)
  d_v = jnp.einsum("bhqk,bhqd->bhkd", w, d_out).astype(vg.dtype)
  d_w = jnp.einsum("bhqd,bhkd->bhqk", d_out, vg.astype(jnp.float32))
  d_logits = w * (d_w - jnp.sum(d_w * w, axis=-1, keepdims=True))
  d_q = jnp.einsum("bhqk,bhkd->bhqd", d_logits, kg.astype(jnp.float32)).astype(qg.dtype)
  d_k = jnp.einsum("bhqk,bhqd->bhkd", d_logits, qg.astype(jnp.float32)).astype(kg.dtype)
  # Reduce the logits cotangent onto the (broadcast) bias shape.
  axes = tuple(i for i, n in enumerate(bias_g.shape) if n == 1 and d_logits.shape[i] != 1)
  d_bias = jnp.sum(d_logits, axis=axes, keepdims=True).astype(bias_g.dtype)
  return d_q, d_k, d_v, d_bias, jnp.zeros_like(mask_g)


_attend.defvjp(_attend_fwd, _attend_bwd)


def attention_weights(q: jax.Array, k: jax.Array, *, key_mask: jax.Array | None = None,
                      bias: jax.Array | None = None, scale: float | None = None) -> jax.Array:
  """The softmax weights of `dot_product_attention`, float32 `[B, H, Lq, Lk]`.

  Rows sum to 1 over the attended keys, or are all 0 when every key is masked. For models that
  supervise attention itself (vssflow §2.7: the duration predictor's alignment loss).
  """
  batch, lq, heads, lk, _ = _check(q, k, None)
  qg, kg, bias_g, mask_g, _ = _grouped_layout(q, k, key_mask, bias, scale)
  return _softmax_weights(qg, kg, bias_g, mask_g).reshape(batch, heads, lq, lk)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                          key_mask: jax.Array | None = None, bias: jax.Array | None = None,
                          scale: float | None = None) -> jax.Array:
  """softmax(q k^T * scale + bias) v with grouped KV heads, without repeating K/V.

  q: `[B, Lq, H, Dh]`; k: `[B, Lk, Hk, Dh]`; v: `[B, Lk, Hk, Dv]`; H % Hk == 0.
  key_mask: `[B, Lk]` bool, True = attend. bias: broadcastable to `[B, H, Lq, Lk]` (may hold -inf).
  scale: default `1/sqrt(Dh)`. Softmax runs in float32; a query whose keys are all masked (or all
  -inf) outputs exactly 0. Returns `[B, Lq, H, Dv]` in v's dtype.
  """
  batch, lq, heads, _, kv_heads = _check(q, k, v)
  qg, kg, bias_g, mask_g, groups = _grouped_layout(q, k, key_mask, bias, scale)
  out = _attend(qg, kg, v.transpose(0, 2, 1, 3), bias_g, mask_g)  # [B, Hk, G*Lq, Dv]
  out = out.reshape(batch, kv_heads, groups, lq, v.shape[-1]).transpose(0, 3, 1, 2, 4)
  return out.reshape(batch, lq, heads, v.shape[-1]).astype(v.dtype)


def _qk_norm(kind: str | None, head_dim: int, eps: float, rngs: nnx.Rngs) -> nnx.Module | None:
  if kind is None:
    return None
  if kind == "rms":
    return RMSNorm(head_dim, eps=eps, rngs=rngs)
  if kind == "layer":
    return LayerNorm(head_dim, eps=eps, rngs=rngs)
  raise ValueError(f"qk_norm={kind!r} must be 'rms', 'layer' or None")


def _maybe_rope(x: jax.Array, rope: RopeConfig | None, positions: jax.Array | None,
                rope_mask: jax.Array | None) -> jax.Array:
  if rope is None or positions is None:
    return x
  return apply_rope(x, positions, rope, enabled=rope_mask)


class Attention(nnx.Module):
  """Self- or cross-attention with GQA, optional per-head QK-norm, RoPE, key mask and logit bias.

  Params: `q` Dense(q_dim -> H*Dh, ('embed','heads')); `k`, `v` Dense(kv_dim -> Hk*Dh, ('embed' or
  'kv', 'kv_heads')): 'kv' when a separate context width `kv_dim` is given; `out` Dense(H*Dh ->
  out_dim, ('heads','embed')) unless `use_out_proj=False` (flowley §2: cross-attention without
  output Linear; the output is then the concatenated heads `[B, Lq, H*Dh]`); `q_norm`, `k_norm`
  when `qk_norm` is set. `queries`, `keys_values` and `project_out` expose the three stages for
  callers that combine them differently (JointAttention, attention-weight supervision).
  """

  def __init__(self, q_dim: int, num_heads: int, head_dim: int, *, kv_dim: int | None = None,
               num_kv_heads: int | None = None, out_dim: int | None = None,
               use_bias: bool = False, qk_norm: str | None = None, qk_norm_eps: float = 1e-6,
               use_out_proj: bool = True, dtype: Any = None, rngs: nnx.Rngs):
    num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
    if num_heads <= 0 or head_dim <= 0 or num_kv_heads <= 0 or num_heads % num_kv_heads:
      raise ValueError(
        f"Attention: num_heads={num_heads} must be a positive multiple of "
        f"num_kv_heads={num_kv_heads}, head_dim={head_dim} positive")
    kv_axis = "embed" if kv_dim is None else "kv"
    kv_dim = q_dim if kv_dim is None else kv_dim
    out_dim = q_dim if out_dim is None else out_dim
    self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
    self.q = Dense(q_dim, num_heads * head_dim, axes=("embed", "heads"), use_bias=use_bias,
                   dtype=dtype, rngs=rngs)
    self.k = Dense(kv_dim, num_kv_heads * head_dim, axes=(kv_axis, "kv_heads"),
                   use_bias=use_bias, dtype=dtype, rngs=rngs)
    self.v = Dense(kv_dim, num_kv_heads * head_dim, axes=(kv_axis, "kv_heads"),
                   use_bias=use_bias, dtype=dtype, rngs=rngs)
    self.out = (Dense(num_heads * head_dim, out_dim, axes=("heads", "embed"), use_bias=use_bias,
                      dtype=dtype, rngs=rngs) if use_out_proj else None)
    self.q_norm = _qk_norm(qk_norm, head_dim, qk_norm_eps, rngs)
    self.k_norm = _qk_norm(qk_norm, head_dim, qk_norm_eps, rngs)

  def queries(self, x: jax.Array, *, rope: RopeConfig | None = None,
              positions: jax.Array | None = None,
              rope_mask: jax.Array | None = None) -> jax.Array:
    """`[B, Lq, q_dim]` -> normed, rotated queries `[B, Lq, H, Dh]`."""
    q = self.q(x).reshape(*x.shape[:-1], self.num_heads, self.head_dim)
    if self.q_norm is not None:
      q = self.q_norm(q)
    return constrain(_maybe_rope(q, rope, positions, rope_mask), _HEADS_AXES)

  def keys_values(self, context: jax.Array, *, rope: RopeConfig | None = None,
                  positions: jax.Array | None = None,
                  rope_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """`[B, Lk, kv_dim]` -> keys and values `[B, Lk, Hk, Dh]` (keys normed and rotated)."""
    shape = (*context.shape[:-1], self.num_kv_heads, self.head_dim)
    k = self.k(context).reshape(shape)
    if self.k_norm is not None:
      k = self.k_norm(k)
    k = constrain(_maybe_rope(k, rope, positions, rope_mask), _KV_HEADS_AXES)
    v = constrain(self.v(context).reshape(shape), _KV_HEADS_AXES)
    return k, v

  def project_out(self, heads: jax.Array) -> jax.Array:
    """`[B, L, H, Dh]` -> `[B, L, out_dim]` (or `[B, L, H*Dh]` without an output projection)."""
    merged = heads.reshape(*heads.shape[:-2], self.num_heads * self.head_dim)
    return merged if self.out is None else self.out(merged)

  def __call__(self, x: jax.Array, context: jax.Array | None = None, *,
               key_mask: jax.Array | None = None, bias: jax.Array | None = None,
               rope: RopeConfig | None = None, q_positions: jax.Array | None = None,
               k_positions: jax.Array | None = None, q_rope_mask: jax.Array | None = None,
               k_rope_mask: jax.Array | None = None) -> jax.Array:
    """x `[B, Lq, q_dim]`, context `[B, Lk, kv_dim]` (None = self-attention) -> `[B, Lq, out_dim]`.

    RoPE rotates q iff `rope` and `q_positions` are given, k iff `rope` and `k_positions` are
    given: pass only `q_positions` for vssflow's query-only RoPE cross-attention (§2.4).
    """
    context = x if context is None else context
    q = self.queries(x, rope=rope, positions=q_positions, rope_mask=q_rope_mask)
    k, v = self.keys_values(context, rope=rope, positions=k_positions, rope_mask=k_rope_mask)
    out = dot_product_attention(q, k, v, key_mask=key_mask, bias=bias)
    return self.project_out(constrain(out, _HEADS_AXES))


def _per_stream(values: Sequence[Any] | None, count: int, name: str) -> list[Any]:
  if values is None:
    return [None] * count
  values = list(values)
  if len(values) != count:
    raise ValueError(f"JointAttention: {name} has {len(values)} entries for {count} streams")
  return values


class JointAttention(nnx.Module):
  """MM-DiT joint attention: every stream has its own projections, all attend in one softmax.

  Params: `streams` (an nnx.List), entry i an `Attention` over stream i's width (paths
  `streams/<i>/q/kernel`, ...). `use_out_proj` (bool or one per stream) False returns the
  concatenated heads `[B, L_i, H*Dh]` of that stream, for blocks whose output layer is a conv
  (audiogen_omni §2.4) or which never use that stream's output (the last, pre-only block).
  """

  def __init__(self, stream_dims: Sequence[int], num_heads: int, head_dim: int, *,
               qk_norm: str | None = "rms", qk_norm_eps: float = 1e-6, use_bias: bool = True,
               use_out_proj: bool | Sequence[bool] = True, dtype: Any = None, rngs: nnx.Rngs):
    stream_dims = list(stream_dims)
    if not stream_dims:
      raise ValueError("JointAttention: stream_dims must name at least one stream")
    out_flags = ([use_out_proj] * len(stream_dims) if isinstance(use_out_proj, bool)
                 else _per_stream(use_out_proj, len(stream_dims), "use_out_proj"))
    self.stream_dims = tuple(stream_dims)
    self.streams = nnx.List([
      Attention(dim, num_heads, head_dim, use_bias=use_bias, qk_norm=qk_norm,
                qk_norm_eps=qk_norm_eps, use_out_proj=bool(flag), dtype=dtype, rngs=rngs)
      for dim, flag in zip(stream_dims, out_flags, strict=True)])

  def __call__(self, streams: Sequence[jax.Array], *,
               masks: Sequence[jax.Array | None] | None = None, rope: RopeConfig | None = None,
               positions: Sequence[jax.Array | None] | None = None,
               rope_masks: Sequence[jax.Array | None] | None = None,
               query_streams: Sequence[bool] | None = None) -> list[jax.Array | None]:
    """streams: `[B, L_i, D_i]` each; masks: `[B, L_i]` bool (None = all valid) -> `[B, L_i, D_i]`.

    positions: per stream `[B, L_i]` / `[L_i]` floats on the shared time axis, or None for no RoPE
    on that stream; rope_masks: per stream per-token RoPE on/off. Masked tokens are never attended
    to. query_streams: per stream, False = the stream only gives keys and values: its queries are
    not computed and its output slot is None (a pre-only block, audiogen_omni §2.4, whose outputs
    would be discarded; the other streams' outputs are unchanged). None = every stream queries.
    """
    streams = list(streams)
    count = len(self.streams)
    if len(streams) != count:
      raise ValueError(f"JointAttention: got {len(streams)} streams, built for {count}")
    masks = _per_stream(masks, count, "masks")
    positions = _per_stream(positions, count, "positions")
    rope_masks = _per_stream(rope_masks, count, "rope_masks")
    querying = [True] * count if query_streams is None else [
      bool(f) for f in _per_stream(query_streams, count, "query_streams")]
    if not any(querying):
      raise ValueError("JointAttention: query_streams must let at least one stream query")
    batch = streams[0].shape[0]
    qs, ks, vs, key_masks, lengths = [], [], [], [], []
    per_stream = zip(self.streams, streams, masks, positions, rope_masks, querying, strict=True)
    for proj, x, mask, pos, rmask, query in per_stream:
      if query:
        qs.append(proj.queries(x, rope=rope, positions=pos, rope_mask=rmask))
      k, v = proj.keys_values(x, rope=rope, positions=pos, rope_mask=rmask)
      ks.append(k)
      vs.append(v)
      length = x.shape[1]
      if mask is not None and mask.shape != (batch, length):
        raise ValueError(
          f"JointAttention: mask shape {mask.shape} != [B, L]=({batch}, {length}) of its stream")
      key_masks.append(jnp.ones((batch, length), bool) if mask is None else mask.astype(bool))
      lengths.append(length)
    out = dot_product_attention(
      jnp.concatenate(qs, axis=1), jnp.concatenate(ks, axis=1), jnp.concatenate(vs, axis=1),
      key_mask=jnp.concatenate(key_masks, axis=1))
    q_lengths = [n for n, query in zip(lengths, querying, strict=True) if query]
    parts = iter(jnp.split(out, np.cumsum(q_lengths)[:-1].tolist(), axis=1))
    return [proj.project_out(next(parts)) if query else None
            for proj, query in zip(self.streams, querying, strict=True)]
