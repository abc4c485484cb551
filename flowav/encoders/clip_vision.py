"""CLIP ViT image encoder (Radford et al. 2021, §2.4) loading Hugging Face `CLIPVisionModel` weights.

Follows transformers' `CLIPVisionModel`: a bias-free patch-embedding conv, a learned class token and
learned absolute positions, `pre_layrnorm`, N pre-LN encoder layers (LayerNorm -> MHA with q/k/v/out
biases -> residual; LayerNorm -> fc1 -> `hidden_act` (quick_gelu for OpenAI CLIP) -> fc2 ->
residual), and `post_layernorm` on the class token only (the pooled output). A
`CLIPVisionModelWithProjection` or `CLIPModel` file also holds `visual_projection` (no bias), which
gives `image_embeds`.

Images are channel-last (`[B, H, W, C]`, JAX's layout), not torch's `[B, C, H, W]`. Position
embeddings are not interpolated: inputs must be `image_size` square (`encode_frames` resizes).
Load with `load_clip_vision(checkpoint_dir)`; nothing imports torch or transformers.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, NamedTuple

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav import nn
from flowav.encoders.hf_config import HF_ACTIVATIONS, HFConfig, TensorReader, activation, stacked
from flowav.encoders.hf_config import linear_kernel as _kernel
from flowav.encoders.weights import WeightsError, assign
from flowav.parallel.sharding import constrain

# OpenAI CLIP's normalisation (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD), RGB in [0, 1].
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_SEQ_AXES = ("act_batch", "act_len", "act_embed")


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
  """Sizes of a CLIP vision tower (the fields of transformers' `CLIPVisionConfig`)."""
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  image_size: int
  patch_size: int
  num_channels: int = 3
  layer_norm_eps: float = 1e-5
  hidden_act: str = "quick_gelu"
  projection_dim: int | None = None  # visual_projection width; None = no projection

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(f"CLIPVisionConfig: hidden_size={self.hidden_size} is not divisible by "
                       f"num_heads={self.num_heads}")
    if self.image_size % self.patch_size:
      raise ValueError(f"CLIPVisionConfig: image_size={self.image_size} is not divisible by "
                       f"patch_size={self.patch_size}")
    if self.hidden_act not in HF_ACTIVATIONS:
      raise ValueError(f"CLIPVisionConfig: hidden_act={self.hidden_act!r} must be one of "
                       f"{sorted(HF_ACTIVATIONS)}")

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  @classmethod
  def from_hf(cls, config: HFConfig, projection_dim: int | None = None) -> CLIPVisionConfig:
    """From a vision config.json; fields transformers added later default as transformers does."""
    act = config.field("hidden_act", str, "quick_gelu")
    activation(act, source=config.source, key="hidden_act")
    return cls(hidden_size=config.positive_int("hidden_size"),
               intermediate_size=config.positive_int("intermediate_size"),
               num_layers=config.positive_int("num_hidden_layers"),
               num_heads=config.positive_int("num_attention_heads"),
               image_size=config.positive_int("image_size"),
               patch_size=config.positive_int("patch_size"),
               num_channels=config.positive_int("num_channels", 3),
               layer_norm_eps=config.field("layer_norm_eps", float, 1e-5),
               hidden_act=act, projection_dim=projection_dim)


class CLIPVisionOutput(NamedTuple):
  last_hidden_state: jax.Array  # [B, 1 + P, D], before post_layernorm (as in transformers)
  pooler_output: jax.Array  # [B, D], post_layernorm(class token)
  image_embeds: jax.Array | None  # [B, projection_dim], or None without a projection


class CLIPEncoderLayer(nnx.Module):
  """Pre-LN transformer layer `[B, L, D] -> [B, L, D]`.

  Params: `norm1`, `norm2` LayerNorm; `attn` nn.Attention (q/k/v/out with biases); `fc1`
  ('embed','mlp'), `fc2` ('mlp','embed') with biases.
  """

  def __init__(self, cfg: CLIPVisionConfig, *, dtype: Any = None, rngs: nnx.Rngs):
    d = cfg.hidden_size
    self.hidden_act = cfg.hidden_act
    self.norm1 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
    self.attn = nn.Attention(d, cfg.num_heads, d // cfg.num_heads, use_bias=True, dtype=dtype,
                             rngs=rngs)
    self.norm2 = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
    self.fc1 = nn.Dense(d, cfg.intermediate_size, axes=("embed", "mlp"), use_bias=True,
                        dtype=dtype, rngs=rngs)
    self.fc2 = nn.Dense(cfg.intermediate_size, d, axes=("mlp", "embed"), use_bias=True,
                        dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    return x + self.fc2(HF_ACTIVATIONS[self.hidden_act](self.fc1(self.norm2(x))))


class CLIPVisionEncoder(nnx.Module):
  """Images `[B, S, S, C]` (normalised, S = image_size) -> `CLIPVisionOutput`.

  Params: `patch_kernel` `[p, p, C, D]` (None, None, 'channels', 'embed'); `class_embedding` `[D]`;
  `pos_embed` nn.Embed `[1 + P, D]`; `pre_norm`, `post_norm` LayerNorm; `layers` nn.Stack of
  `CLIPEncoderLayer`; `projection` Dense (D -> projection_dim, no bias) when configured.
  """

  def __init__(self, cfg: CLIPVisionConfig, *, dtype: Any = None, rngs: nnx.Rngs):
    d, p = cfg.hidden_size, cfg.patch_size
    self.cfg = cfg
    self.dtype = dtype
    init = nnx.initializers.normal(0.02)
    self.patch_kernel = nnx.Param(init(rngs.params(), (p, p, cfg.num_channels, d), jnp.float32),
                                  out_sharding=(None, None, "channels", "embed"))
    self.class_embedding = nnx.Param(init(rngs.params(), (d,), jnp.float32), out_sharding=("embed",))
    self.pos_embed = nn.Embed(cfg.num_patches + 1, d, axes=(None, "embed"), init=init, rngs=rngs)
    self.pre_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
    self.layers = nn.Stack(lambda r: CLIPEncoderLayer(cfg, dtype=dtype, rngs=r), cfg.num_layers,
                           rngs=rngs)
    self.post_norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
    self.projection = (nn.Dense(d, cfg.projection_dim, axes=("embed", "mlp"), dtype=dtype, rngs=rngs)
                       if cfg.projection_dim else None)

  def embed_patches(self, pixels: jax.Array) -> jax.Array:
    """`[B, S, S, C]` -> `[B, P, D]`: the stride-p conv as one matmul over p x p x C patches, in
    row-major patch order (torch's `flatten(2)` of the conv output)."""
    cfg = self.cfg
    b, s, p = pixels.shape[0], cfg.image_size, cfg.patch_size
    expected = (s, s, cfg.num_channels)
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
      raise ValueError(f"CLIPVisionEncoder: pixels must be [B, {s}, {s}, {cfg.num_channels}] "
                       f"(channel-last), got {pixels.shape}")
    g = s // p
    patches = pixels.reshape(b, g, p, g, p, cfg.num_channels).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, g * g, p, p, cfg.num_channels)
    kernel = self.patch_kernel[...]
    if self.dtype is not None:
      patches, kernel = patches.astype(self.dtype), kernel.astype(self.dtype)
    return jnp.einsum("bnhwc,hwcd->bnd", patches, kernel, preferred_element_type=jnp.float32)

  def __call__(self, pixels: jax.Array) -> CLIPVisionOutput:
    b = pixels.shape[0]
    patches = self.embed_patches(jnp.asarray(pixels, jnp.float32))
    cls = jnp.broadcast_to(self.class_embedding[...], (b, 1, self.cfg.hidden_size))
    x = jnp.concatenate([cls, patches], axis=1)
    x = x + self.pos_embed(jnp.arange(x.shape[1]))[None]
    x = constrain(self.pre_norm(x), _SEQ_AXES)
    x = self.layers(x).astype(jnp.float32)
    pooled = self.post_norm(x[:, 0])
    embeds = None if self.projection is None else self.projection(pooled).astype(jnp.float32)
    return CLIPVisionOutput(x, pooled, embeds)

  def encode_frames(self, frames: np.ndarray | jax.Array, *, batch_size: int = 64,
                    project: bool = True, mean: tuple[float, ...] = CLIP_MEAN,
                    std: tuple[float, ...] = CLIP_STD) -> jax.Array:
    """Video frames uint8 `[T, H, W, 3]` (RGB) -> per-frame embeddings float32 `[T, D']`.

    Runs `clip_preprocess` and the model in chunks of `batch_size` frames (one compiled shape; the
    last chunk is padded). `D'` is `projection_dim` (`image_embeds`) when the checkpoint has a
    visual projection and `project` is True, else `hidden_size` (`pooler_output`).
    """
    frames = np.asarray(frames)  # stays on the host; only one chunk at a time goes to the device
    if frames.ndim != 4 or frames.shape[-1] != 3:
      raise ValueError(f"encode_frames: frames must be [T, H, W, 3], got {frames.shape}")
    if batch_size <= 0:
      raise ValueError(f"encode_frames: batch_size={batch_size} must be positive")
    total = frames.shape[0]
    chunk = min(batch_size, max(total, 1))
    pad = (-total) % chunk
    if pad:
      frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)], axis=0)
    project = project and self.projection is not None
    outs = [_encode_chunk(self, jnp.asarray(frames[i:i + chunk]), project, tuple(mean), tuple(std))
            for i in range(0, frames.shape[0], chunk)]
    if not outs:
      return jnp.zeros((0, self.cfg.projection_dim if project else self.cfg.hidden_size), jnp.float32)
    return jnp.concatenate(outs, axis=0)[:total]


@nnx.jit(static_argnums=(2, 3, 4))
def _encode_chunk(model: CLIPVisionEncoder, frames: jax.Array, project: bool,
                  mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
  out = model(clip_preprocess(frames, model.cfg.image_size, mean=mean, std=std))
  return out.image_embeds if project else out.pooler_output


def clip_preprocess(frames: jax.Array, image_size: int, *, mean: tuple[float, ...] = CLIP_MEAN,
                    std: tuple[float, ...] = CLIP_STD) -> jax.Array:
  """uint8 RGB `[T, H, W, 3]` -> float32 `[T, S, S, 3]`, S = image_size, as CLIPImageProcessor does.

  1. Resize so the shorter side is S, the longer `int(S * long / short)` (transformers'
     `get_resize_output_image_size`), bicubic (Keys a=-0.5) with antialiasing when shrinking, then
     clipped to [0, 255]. This is `jax.image.resize`, not PIL: values differ from PIL's by a few
     uint8 levels (PIL also rounds to uint8), see tests/encoders/clip_vision_test.py.
  2. Center crop S x S (offset `(size - S) // 2`).
  3. Scale to [0, 1], then `(x - mean) / std` per channel.
  """
  if frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"clip_preprocess: frames must be [T, H, W, 3], got {frames.shape}")
  t, h, w, _ = frames.shape
  short, long = min(h, w), max(h, w)
  new_long = int(image_size * long / short)
  new_h, new_w = (image_size, new_long) if h <= w else (new_long, image_size)
  x = jnp.asarray(frames, jnp.float32)
  if (new_h, new_w) != (h, w):
    x = jax.image.resize(x, (t, new_h, new_w, 3), method="bicubic", antialias=True)
    x = jnp.clip(x, 0.0, 255.0)
  top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
  x = x[:, top:top + image_size, left:left + image_size] / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def _convert(reader: TensorReader, cfg: CLIPVisionConfig, prefix: str) -> dict[str, np.ndarray]:
  """transformers' key layout -> `CLIPVisionEncoder` param paths (torch [out, in] transposed)."""
  d, ff, p, c = cfg.hidden_size, cfg.intermediate_size, cfg.patch_size, cfg.num_channels
  emb = prefix + "embeddings."
  out = {
    "patch_kernel": reader.take(emb + "patch_embedding.weight", (d, c, p, p)).transpose(2, 3, 1, 0),
    "class_embedding": reader.take(emb + "class_embedding", (d,)),
    "pos_embed/embedding": reader.take(emb + "position_embedding.weight", (cfg.num_patches + 1, d)),
  }
  for ours, theirs in (("pre_norm", "pre_layrnorm"), ("post_norm", "post_layernorm")):
    out[f"{ours}/scale"] = reader.take(f"{prefix}{theirs}.weight", (d,))
    out[f"{ours}/bias"] = reader.take(f"{prefix}{theirs}.bias", (d,))
  layer_keys = {  # ours -> (theirs, in, out) for Linear; (theirs, dim) for LayerNorm
    "norm1": ("layer_norm1", d), "norm2": ("layer_norm2", d),
    "attn/q": ("self_attn.q_proj", d, d), "attn/k": ("self_attn.k_proj", d, d),
    "attn/v": ("self_attn.v_proj", d, d), "attn/out": ("self_attn.out_proj", d, d),
    "fc1": ("mlp.fc1", d, ff), "fc2": ("mlp.fc2", ff, d),
  }
  layers = [f"{prefix}encoder.layers.{i}." for i in range(cfg.num_layers)]
  for ours, (theirs, *dims) in layer_keys.items():
    if len(dims) == 1:
      out[f"layers/layers/{ours}/scale"] = stacked(reader.take(f"{n}{theirs}.weight", dims)
                                                   for n in layers)
      out[f"layers/layers/{ours}/bias"] = stacked(reader.take(f"{n}{theirs}.bias", dims)
                                                  for n in layers)
    else:
      out[f"layers/layers/{ours}/kernel"] = stacked(_kernel(reader, f"{n}{theirs}.weight", *dims)
                                                    for n in layers)
      out[f"layers/layers/{ours}/bias"] = stacked(reader.take(f"{n}{theirs}.bias", dims[1:])
                                                  for n in layers)
  if cfg.projection_dim:
    out["projection/kernel"] = _kernel(reader, "visual_projection.weight", d, cfg.projection_dim)
  return out


def load_clip_vision(path: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                     dtype: Any = None) -> CLIPVisionEncoder:
  """A `CLIPVisionEncoder` from a Hugging Face checkpoint directory (config.json + safetensors).

  Accepts `CLIPVisionModel` (keys with or without the `vision_model.` prefix),
  `CLIPVisionModelWithProjection` and `CLIPModel` files (the text tower is ignored); the visual
  projection is loaded when the file has `visual_projection.weight`. `weights` overrides the
  safetensors file (default: the model.safetensors or sharded index in `path`). `dtype` (e.g.
  jnp.bfloat16) is the matmul dtype; parameters stay float32.
  """
  path = pathlib.Path(path)
  directory = path if path.is_dir() else path.parent
  config = HFConfig.read(path)
  vision = config.sub("vision_config") if config.has("vision_config") else config
  reader = TensorReader.read(directory if weights is None else weights)
  prefix = "vision_model." if any(k.startswith("vision_model.") for k in reader.tensors) else ""
  projection_dim = None
  if "visual_projection.weight" in reader:
    # CLIPModel keeps projection_dim at the top level; its vision_config's value may be stale.
    owner = config if config is not vision and config.has("projection_dim") else vision
    projection_dim = owner.positive_int("projection_dim")
  try:
    cfg = CLIPVisionConfig.from_hf(vision, projection_dim)
  except ValueError as e:
    if isinstance(e, WeightsError):
      raise
    raise WeightsError(f"{vision.source}: {e}") from e
  params = _convert(reader, cfg, prefix)
  reader.check_all_used(ignore_prefixes=("text_model.", "text_projection.", "logit_scale"),
                        ignore_suffixes=("position_ids",))
  model = nnx.eval_shape(lambda: CLIPVisionEncoder(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
  assign(model, params, source=reader.source)
  return model
