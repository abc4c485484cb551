"""Helpers for the AudioGen-Omni tests: tiny configs, schema batches, perturbed models, jitted calls.

Models are cached per process (every eager init of a new shape compiles on CPU).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav.models import audiogen_omni as ag

# Spec §6 tiny: 1 s at 31.25 Hz = 32 latent frames, 8 video frames (8 fps), 24 sync tokens (24/s).
NUM_FRAMES, VIDEO_FRAMES, SYNC_FRAMES, CAPTION_TOKENS, LYRIC_TOKENS = 32, 8, 24, 8, 12


def tiny_config(**overrides: Any) -> ag.AudioGenOmniConfig:
  return ag.AudioGenOmniConfig(**{**ag.VARIANTS["tiny"], **overrides})


@functools.cache
def _built(seed: int, perturb: bool, overrides: tuple[tuple[str, Any], ...]):
  model = ag.AudioGenOmni(tiny_config(**dict(overrides)), rngs=nnx.Rngs(seed))
  if perturb:
    perturb_zero_params(model, seed + 100)
  return nnx.split(model)


def tiny_model(seed: int = 0, *, perturb: bool = True, **overrides: Any) -> ag.AudioGenOmni:
  """A fresh tiny model (its own Variables). `perturb`: every all-zero parameter (AdaLN output
  linears, final conv, nulls, sync positions, GRN) gets random values first (spec §7), so "no
  effect" checks cannot pass because a gate is 0."""
  graphdef, state = _built(seed, perturb, tuple(sorted(overrides.items())))
  # nnx.merge reuses the state's Variables: copy them, or one test's in-place change to a
  # parameter leaks into every later tiny_model() of the same worker process.
  return nnx.merge(graphdef, jax.tree.map(lambda x: x, state))


def perturb_zero_params(model: nnx.Module, seed: int, scale: float = 0.3) -> list[str]:
  """Gives every all-zero Param N(0, scale^2) values in place; returns their paths."""
  rng = np.random.default_rng(seed)
  changed = []
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    value = np.asarray(var[...])
    if value.size and not np.any(value):
      var[...] = jnp.asarray(rng.normal(0.0, scale, value.shape), jnp.float32)
      changed.append("/".join(map(str, path)))
  return changed


def make_batch(cfg: ag.AudioGenOmniConfig, seed: int = 0, *, size: int = 3,
               num_frames: int = NUM_FRAMES) -> dict[str, np.ndarray]:
  """Rows: 0 = everything present (V2Song-like); 1 = video + sync only (V2A), caption and lyrics
  absent; 2 = text + lyrics only (T2Song), no video, its last 6 audio frames, last 3 caption tokens
  and last 4 lyric tokens padded. Rows past 3 repeat the pattern."""
  rng = np.random.default_rng(seed)
  b, t = size, num_frames
  kind = np.arange(b) % 3
  audio_mask = np.ones((b, t), bool)
  audio_mask[kind == 2, t - 6:] = False
  video_mask = np.repeat((kind != 2)[:, None], VIDEO_FRAMES, axis=1)
  sync_mask = np.repeat((kind != 2)[:, None], SYNC_FRAMES, axis=1)
  caption_mask = np.repeat((kind != 1)[:, None], CAPTION_TOKENS, axis=1)
  caption_mask[kind == 2, CAPTION_TOKENS - 3:] = False
  lyric_mask = np.repeat((kind != 1)[:, None], LYRIC_TOKENS, axis=1)
  lyric_mask[kind == 2, LYRIC_TOKENS - 4:] = False
  f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)
  return {
    "audio_latents": f32(b, t, cfg.audio_channels) * audio_mask[..., None],
    "audio_mask": audio_mask,
    "video_features": f32(b, VIDEO_FRAMES, cfg.video_dim) * video_mask[..., None],
    "video_mask": video_mask,
    "sync_features": f32(b, SYNC_FRAMES, cfg.sync_dim) * sync_mask[..., None],
    "sync_mask": sync_mask,
    "text_embeddings": f32(b, CAPTION_TOKENS, cfg.text_dim) * caption_mask[..., None],
    "text_ids": (rng.integers(1, cfg.caption_vocab + 1, (b, CAPTION_TOKENS)) * caption_mask
                 ).astype(np.int32),
    "text_mask": caption_mask,
    "lyric_ids": (rng.integers(1, cfg.lyric_vocab + 1, (b, LYRIC_TOKENS)) * lyric_mask
                  ).astype(np.int32),
    "lyric_mask": lyric_mask,
    "start_s": np.array([1.0, 0.0, 3.5] * b, np.float32)[:b],
    "duration_s": np.array([10.0, 4.0, 7.2] * b, np.float32)[:b],
    "task_id": np.array([2, 0, 2] * b, np.int32)[:b],
  }


@functools.partial(jax.jit, static_argnums=(0, 1))
def _call(graphdef: nnx.GraphDef, method: Any, state: nnx.State, *args: Any) -> Any:
  return method(nnx.merge(graphdef, state), *args)


def jit_method(model: nnx.Module, method: Any):
  """`method(model, *args)` as a jitted pure function of the model's split state; compiles are
  shared by models of one structure when `method` is a module-level function."""
  graphdef = nnx.split(model)[0]
  return lambda *args: _call(graphdef, method, nnx.split(model)[1], *args)


def velocity(model: ag.AudioGenOmni, batch: dict, x: Any, t: Any) -> jax.Array:
  return model(x, t, model.conditions(batch))


def velocity_from_cond(model: ag.AudioGenOmni, x: Any, t: Any, cond: dict) -> jax.Array:
  return model(x, t, cond)
