"""Helpers for the VSSFlow tests: tiny configs, schema batches, jitted calls through split/merge.

Models and compiled functions are cached per process: on a 2-core CPU most of a test's time is
compiling (every eager random init of a new shape compiles too), not running.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.nnx as nnx
import jax
import numpy as np

from flowav.models import vssflow

NUM_FRAMES, VIDEO_FRAMES, NUM_PHONES = 32, 13, 10  # spec §6 tiny: F = 13 -> T = 32, P_max = 10


def tiny_config(**overrides: Any) -> vssflow.VSSFlowConfig:
  return vssflow.VSSFlowConfig(**{**vssflow.VARIANTS["tiny"], **overrides})


@functools.cache
def _built(seed: int, overrides: tuple[tuple[str, Any], ...]) -> tuple[nnx.GraphDef, nnx.State]:
  return nnx.split(vssflow.VSSFlow(tiny_config(**dict(overrides)), rngs=nnx.Rngs(seed)))


def tiny_model(seed: int = 0, **overrides: Any) -> vssflow.VSSFlow:
  """A fresh tiny VSSFlow (its own Variables: tests may change parameters in place)."""
  graphdef, state = _built(seed, tuple(sorted(overrides.items())))
  # nnx.merge reuses the state's Variables: copy them, or one test's in-place change to a
  # parameter leaks into every later tiny_model() of the same worker process.
  return nnx.merge(graphdef, jax.tree.map(lambda x: x, state))


def make_batch(cfg: vssflow.VSSFlowConfig, seed: int = 0) -> dict[str, np.ndarray]:
  """Three rows: 0 = TTS with speaker; 1 = V2S (no transcript, no speaker); 2 = TTS whose last 6
  audio frames (and last 2 video frames) are padding and whose last 2 valid frames have no phone.
  """
  rng = np.random.default_rng(seed)
  b, t, p = 3, NUM_FRAMES, NUM_PHONES
  audio_mask = np.ones((b, t), bool)
  audio_mask[2, t - 6:] = False
  video_mask = np.ones((b, VIDEO_FRAMES), bool)
  video_mask[2, VIDEO_FRAMES - 2:] = False
  ids = np.zeros((b, p), np.int32)
  durations = np.zeros((b, p), np.int32)
  ids[0, :5], durations[0, :5] = [3, 17, 5, 42, 9], [4, 9, 6, 8, 5]  # 32 frames
  ids[2, :4], durations[2, :4] = [7, 7, 61, 2], [3, 5, 7, 9]  # 24 of 26 valid frames
  video = rng.standard_normal((b, VIDEO_FRAMES, cfg.video_dim)).astype(np.float32)
  return {
    "audio_latents": rng.standard_normal((b, t, cfg.audio_channels)).astype(np.float32),
    "audio_mask": audio_mask,
    "video_features": video * video_mask[..., None],
    "video_mask": video_mask,
    "transcript_ids": ids,
    "transcript_mask": durations > 0,
    "phone_durations": durations,
    "speaker_embedding": rng.standard_normal((b, cfg.speaker_dim)).astype(np.float32),
    "speaker_mask": np.array([True, False, True]),
  }


@functools.partial(jax.jit, static_argnums=(0, 1))
def _call(graphdef: nnx.GraphDef, method: Callable[..., Any], state: nnx.State, *args: Any) -> Any:
  return method(nnx.merge(graphdef, state), *args)


def jit_method(model: nnx.Module, method: Callable[..., Any]) -> Callable[..., Any]:
  """`method(model, *args)` as a jitted pure function of the model's split state (the way the
  trainer and sampler call models); `fn(*args)` uses the model's state at call time. Compiles
  are shared by models of one structure when `method` is a module-level function."""
  graphdef = nnx.split(model)[0]
  return lambda *args: _call(graphdef, method, nnx.split(model)[1], *args)
