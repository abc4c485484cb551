"""T5 text encoder (Raffel et al. 2020, §2.1) loading Hugging Face `T5EncoderModel` weights.

Follows transformers' T5 encoder stack: the shared token embedding, N blocks of (T5 LayerNorm =
RMS norm without mean subtraction or bias -> self-attention without the 1/sqrt(d) scaling plus a
bucketed relative position bias -> residual; T5 LayerNorm -> DenseReluDense -> residual), then
`final_layer_norm`. The position bias table lives in the first block only and the bias it gives is
added in every block (bidirectional buckets, `relative_attention_num_buckets`,
`relative_attention_max_distance`). DenseReluDense is `wo(act(wi x))`, or the gated
`wo(act(wi_0 x) * wi_1 x)` for `feed_forward_proj: gated-*` (T5 v1.1 / Flan-T5: gated-gelu with
the tanh GELU). Dropout is left out (inference).

Token ids in, hidden states out: tokenisation (SentencePiece) is the caller's business. Load with
`load_t5_encoder(checkpoint_dir)`; nothing imports torch or transformers. Full
`T5ForConditionalGeneration` files load too (the decoder and LM head are ignored).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav import nn
from flowav.encoders.hf_config import HF_ACTIVATIONS, HFConfig, TensorReader, stacked
from flowav.encoders.hf_config import linear_kernel as _kernel
from flowav.encoders.weights import WeightsError, assign
from flowav.parallel.sharding import constrain

_SEQ_AXES = ("act_batch", "act_len", "act_embed")


@dataclasses.dataclass(frozen=True)
class T5EncoderConfig:
  """Sizes of a T5 encoder (the fields of transformers' `T5Config` it reads)."""
  vocab_size: int
  d_model: int
  d_kv: int  # per-head width; heads * d_kv need not equal d_model
  d_ff: int
  num_layers: int
  num_heads: int
  num_buckets: int = 32
  max_distance: int = 128
  layer_norm_eps: float = 1e-6
  act: str = "relu"  # transformers' `dense_act_fn`
  gated: bool = False  # `is_gated_act`: DenseGatedActDense with wi_0 / wi_1

  def __post_init__(self):
    if self.act not in HF_ACTIVATIONS:
      raise ValueError(f"T5EncoderConfig: act={self.act!r} must be one of {sorted(HF_ACTIVATIONS)}")
    if self.num_buckets < 4 or self.max_distance < self.num_buckets // 4 + 1:
      raise ValueError(f"T5EncoderConfig: num_buckets={self.num_buckets} must be >= 4 and "
                       f"max_distance={self.max_distance} > num_buckets // 4")

  @classmethod
  def from_hf(cls, config: HFConfig) -> T5EncoderConfig:
    """From a T5 config.json. `feed_forward_proj` ('relu' by default, as in transformers: old T5
    files lack it) parses as transformers does: 'gated-ACT' is gated, 'gated-gelu' means gelu_new."""
    proj = config.field("feed_forward_proj", str, "relu")
    parts = proj.split("-")
    if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
      raise WeightsError(f"{config.source}: config field 'feed_forward_proj'={proj!r} must be "
                         "'ACT' or 'gated-ACT'")
    act = "gelu_new" if proj == "gated-gelu" else parts[-1]
    if act not in HF_ACTIVATIONS:
      raise WeightsError(f"{config.source}: config field 'feed_forward_proj'={proj!r}: activation "
                         f"{act!r} is not one of {sorted(HF_ACTIVATIONS)}")
    return cls(vocab_size=config.positive_int("vocab_size"),
               d_model=config.positive_int("d_model"),
               d_kv=config.positive_int("d_kv"),
               d_ff=config.positive_int("d_ff"),
               num_layers=config.positive_int("num_layers"),
               num_heads=config.positive_int("num_heads"),
               num_buckets=config.positive_int("relative_attention_num_buckets", 32),
               max_distance=config.positive_int("relative_attention_max_distance", 128),
               layer_norm_eps=config.field("layer_norm_epsilon", float, 1e-6),
               act=act, gated=len(parts) == 2)


def relative_position_buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int
                              ) -> np.ndarray:
  """Bidirectional T5 buckets of `key - query` positions, int32 `[q_len, k_len]` (static shapes).

  Half the buckets per direction; in each half, distances below `num_buckets // 4` get their own
  bucket and the rest are log-spaced up to `max_distance` (Mesh TensorFlow's
  `_relative_position_bucket`). The log is taken in float32, as in the reference, so bucket edges
  match it exactly.
  """
  rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
  half = num_buckets // 2
  buckets = (rel > 0).astype(np.int64) * half
  dist = np.abs(rel)
  max_exact = half // 2
  with np.errstate(divide="ignore"):  # log(0) on the exact-bucket entries, never selected
    scaled = (np.log(dist.astype(np.float32) / np.float32(max_exact))
              / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact))
  large = max_exact + np.where(dist < max_exact, 0, scaled).astype(np.int64)
  large = np.minimum(large, half - 1)
  return (buckets + np.where(dist < max_exact, dist, large)).astype(np.int32)


class T5FeedForward(nnx.Module):
  """DenseReluDense `[..., d_model] -> [..., d_model]`, no biases.

  Params: `wi` (or `wi_0`, `wi_1` when gated) ('embed','mlp'); `wo` ('mlp','embed').
  """

  def __init__(self, cfg: T5EncoderConfig, *, dtype: Any = None, rngs: nnx.Rngs):
    self.act = cfg.act
    def dense(i, o, axes):
      return nn.Dense(i, o, axes=axes, dtype=dtype, rngs=rngs)
    if cfg.gated:
      self.wi_0 = dense(cfg.d_model, cfg.d_ff, ("embed", "mlp"))
      self.wi_1 = dense(cfg.d_model, cfg.d_ff, ("embed", "mlp"))
      self.wi = None
    else:
      self.wi = dense(cfg.d_model, cfg.d_ff, ("embed", "mlp"))
    self.wo = dense(cfg.d_ff, cfg.d_model, ("mlp", "embed"))

  def __call__(self, x: jax.Array) -> jax.Array:
    act = HF_ACTIVATIONS[self.act]
    h = act(self.wi(x)) if self.wi is not None else act(self.wi_0(x)) * self.wi_1(x)
    return self.wo(h)


class T5Block(nnx.Module):
  """One encoder block `[B, L, D] -> [B, L, D]` given the shared position bias `[1, H, L, L]`.

  Params: `attn_norm`, `ff_norm` RMSNorm; `attn` nn.Attention (q/k/v/out, no biases); `ff`.
  """

  def __init__(self, cfg: T5EncoderConfig, *, dtype: Any = None, rngs: nnx.Rngs):
    self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
    self.attn = nn.Attention(cfg.d_model, cfg.num_heads, cfg.d_kv, dtype=dtype, rngs=rngs)
    self.ff_norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)
    self.ff = T5FeedForward(cfg, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, bias: jax.Array, mask: jax.Array) -> jax.Array:
    h = self.attn_norm(x)
    q = self.attn.queries(h)
    k, v = self.attn.keys_values(h)
    # T5 leaves q.k unscaled: the 1/sqrt(d_kv) is folded into the initialisation (§2.1).
    heads = nn.dot_product_attention(q, k, v, key_mask=mask, bias=bias, scale=1.0)
    x = x + self.attn.project_out(heads)
    return x + self.ff(self.ff_norm(x))


class T5Encoder(nnx.Module):
  """Token ids `[B, L]` (+ mask `[B, L]`, 1 = token) -> last_hidden_state float32 `[B, L, d_model]`.

  Params: `embed` nn.Embed `[vocab, d_model]` ('vocab','embed'); `rel_bias` nn.Embed
  `[num_buckets, num_heads]` (None, 'heads'); `blocks` nn.Stack of `T5Block`; `final_norm` RMSNorm.
  Padded keys are never attended to; padded positions still get (meaningless) outputs, as in
  transformers. A row whose mask is all 0 outputs attention 0 (transformers: uniform weights).
  """

  def __init__(self, cfg: T5EncoderConfig, *, dtype: Any = None, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embed = nn.Embed(cfg.vocab_size, cfg.d_model, init=nnx.initializers.normal(1.0), rngs=rngs)
    self.rel_bias = nn.Embed(cfg.num_buckets, cfg.num_heads, axes=(None, "heads"), rngs=rngs)
    self.blocks = nn.Stack(lambda r: T5Block(cfg, dtype=dtype, rngs=r), cfg.num_layers, rngs=rngs)
    self.final_norm = nn.RMSNorm(cfg.d_model, eps=cfg.layer_norm_eps)

  def position_bias(self, length: int) -> jax.Array:
    """The relative position bias `[1, H, L, L]` shared by every block."""
    buckets = relative_position_buckets(length, length, self.cfg.num_buckets, self.cfg.max_distance)
    return self.rel_bias(jnp.asarray(buckets)).transpose(2, 0, 1)[None]

  def __call__(self, ids: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    ids = jnp.asarray(ids)
    if ids.ndim != 2:
      raise ValueError(f"T5Encoder: ids must be [B, L], got shape {ids.shape}")
    if mask is None:
      mask = jnp.ones(ids.shape, bool)
    elif tuple(mask.shape) != tuple(ids.shape):
      raise ValueError(f"T5Encoder: mask shape {mask.shape} != ids shape {ids.shape}")
    x = constrain(self.embed(ids).astype(jnp.float32), _SEQ_AXES)
    x = self.blocks(x, self.position_bias(ids.shape[1]), jnp.asarray(mask).astype(bool))
    return self.final_norm(x.astype(jnp.float32))


def _convert(reader: TensorReader, cfg: T5EncoderConfig) -> dict[str, np.ndarray]:
  """transformers' key layout -> `T5Encoder` param paths (torch [out, in] transposed)."""
  d, inner, ff = cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff
  # T5EncoderModel files hold `shared.weight`; some also (or only) its tied copy embed_tokens.
  embed_key = "shared.weight" if "shared.weight" in reader else "encoder.embed_tokens.weight"
  out = {
    "embed/embedding": reader.take(embed_key, (cfg.vocab_size, d)),
    "rel_bias/embedding": reader.take(
      "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
      (cfg.num_buckets, cfg.num_heads)),
    "final_norm/scale": reader.take("encoder.final_layer_norm.weight", (d,)),
  }
  linears = {"attn/q": ("layer.0.SelfAttention.q", d, inner),
             "attn/k": ("layer.0.SelfAttention.k", d, inner),
             "attn/v": ("layer.0.SelfAttention.v", d, inner),
             "attn/out": ("layer.0.SelfAttention.o", inner, d),
             "ff/wo": ("layer.1.DenseReluDense.wo", ff, d)}
  for name in ("wi_0", "wi_1") if cfg.gated else ("wi",):
    linears[f"ff/{name}"] = (f"layer.1.DenseReluDense.{name}", d, ff)
  blocks = [f"encoder.block.{i}." for i in range(cfg.num_layers)]
  for ours, (theirs, i, o) in linears.items():
    out[f"blocks/layers/{ours}/kernel"] = stacked(_kernel(reader, f"{b}{theirs}.weight", i, o)
                                                  for b in blocks)
  for ours, theirs in (("attn_norm", "layer.0.layer_norm"), ("ff_norm", "layer.1.layer_norm")):
    out[f"blocks/layers/{ours}/scale"] = stacked(reader.take(f"{b}{theirs}.weight", (d,))
                                                 for b in blocks)
  return out


def load_t5_encoder(path: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                    dtype: Any = None) -> T5Encoder:
  """A `T5Encoder` from a Hugging Face checkpoint directory (config.json + safetensors).

  `weights` overrides the safetensors file (default: the model.safetensors or sharded index in
  `path`). `dtype` (e.g. jnp.bfloat16) is the matmul dtype; parameters stay float32 (T5 is known
  to overflow in float16).
  """
  path = pathlib.Path(path)
  directory = path if path.is_dir() else path.parent
  config = HFConfig.read(path)
  try:
    cfg = T5EncoderConfig.from_hf(config)
  except ValueError as e:
    if isinstance(e, WeightsError):
      raise
    raise WeightsError(f"{config.source}: {e}") from e
  reader = TensorReader.read(directory if weights is None else weights)
  params = _convert(reader, cfg)
  reader.check_all_used(ignore_prefixes=("decoder.", "lm_head.", "encoder.embed_tokens."))
  model = nnx.eval_shape(lambda: T5Encoder(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
  assign(model, params, source=reader.source)
  return model
