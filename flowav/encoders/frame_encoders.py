"""Frozen per-frame video encoders by name: `make("builtin")` -> an object with `.dim`,
`.encode_frames(uint8 [T, H, W, 3]) -> float32 [T, dim]` and `.describe() -> dict`.

`preprocess` (flowav.data.preprocess) picks one with `config.video_encoder` and stores its
`describe()` in `dataset_info.json`, so a dataset says which features it holds. Every model takes
any `[T, D]` features (DESIGN.md, "The embedded default"); only the width and rate must match.

Registered names:
  builtin       flowav.data.demo.video_encoder: 8x8 pooled RGB + motion, 256-d, no weights (the
                encoder of flowav-demo; works offline everywhere).
  mobilenet_v2  flowav.encoders.mobilenet_v2 (ImageNet MobileNetV2, 1280-d pooled features);
                imported lazily, needs its weights file.
  clip          flowav.encoders.clip_vision (CLIP image tower); imported lazily, needs weights.
The pretrained ones raise `EncoderUnavailableError` naming the module or weights when absent.
`register(name)` adds more.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np


class FrameEncoder(Protocol):
  """What preprocess needs of a frame encoder."""
  name: str
  dim: int
  frame_size: int  # the square frame side it expects (frames are centre-cropped and resized to it)

  def encode_frames(self, frames: np.ndarray) -> np.ndarray:
    """uint8 RGB `[T, H, W, 3]` -> float32 `[T, dim]`."""

  def describe(self) -> dict[str, Any]:
    """JSON-able description (name, width, weights, preprocessing) for dataset_info.json."""


class EncoderUnavailableError(RuntimeError):
  """A registered encoder cannot be built here (its module or weights are missing)."""


_FACTORIES: dict[str, Callable[..., FrameEncoder]] = {}


def register(name: str) -> Callable[[Callable[..., FrameEncoder]], Callable[..., FrameEncoder]]:
  """Decorator: `@register("mine") def make_mine(*, weights: str | None, **kw) -> FrameEncoder`."""
  def wrap(factory: Callable[..., FrameEncoder]) -> Callable[..., FrameEncoder]:
    if name in _FACTORIES:
      raise ValueError(f"frame encoder {name!r} is already registered")
    _FACTORIES[name] = factory
    return factory
  return wrap


def names() -> list[str]:
  return sorted(_FACTORIES)


def make(name: str, *, weights: str | None = None, frame_size: int = 0) -> FrameEncoder:
  """Builds the frame encoder registered as `name`.

  Args:
    name: a registered name (`names()`).
    weights: a local weights file for pretrained encoders (None: the encoder's default location).
    frame_size: square input side; 0 = the encoder's own default.
  Raises:
    KeyError naming the valid names; EncoderUnavailableError when its module or weights are absent.
  """
  if name not in _FACTORIES:
    raise KeyError(f"unknown video encoder {name!r}; registered: {names()} "
                   "(config.video_encoder)")
  return _FACTORIES[name](weights=weights or None, frame_size=int(frame_size))


class BuiltinEncoder:
  """flowav-demo's weight-free encoder (flowav.data.demo.video_encoder), 256-d per frame."""
  name = "builtin"

  def __init__(self, frame_size: int = 64):
    from flowav.data.demo import video_encoder  # pylint: disable=g-import-not-at-top
    if frame_size < video_encoder.GRID:
      raise ValueError(f"builtin video encoder: frame_size={frame_size} must be >= "
                       f"{video_encoder.GRID}")
    self._module = video_encoder
    self.dim = video_encoder.FEATURE_DIM
    self.frame_size = frame_size

  def encode_frames(self, frames: np.ndarray) -> np.ndarray:
    return self._module.encode_frames(frames)

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "module": self._module.__name__, "dim": self.dim,
            "frame_size": self.frame_size, "weights": None,
            "summary": "8x8 area-pooled RGB (192) + 8x8 area-pooled |luma difference| to the "
                       "previous frame (64), per frame; frames centre-cropped to a square"}


@register("builtin")
def _make_builtin(*, weights: str | None, frame_size: int) -> FrameEncoder:
  if weights:
    raise ValueError("the builtin video encoder has no weights; leave config.video_encoder_weights "
                     "empty")
  return BuiltinEncoder(frame_size or 64)


class _Adapter:
  """Wraps a pretrained encoder (jax output, own constants) into the FrameEncoder interface."""

  def __init__(self, name: str, inner: Any, dim: int, frame_size: int, info: dict[str, Any]):
    self.name, self.inner, self.dim, self.frame_size, self._info = name, inner, dim, frame_size, info

  def encode_frames(self, frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.shape[0] == 0:
      return np.zeros((0, self.dim), np.float32)
    out = np.asarray(self.inner.encode_frames(frames), np.float32)
    if out.shape != (frames.shape[0], self.dim):
      raise ValueError(f"video encoder {self.name!r} returned {out.shape}, expected "
                       f"({frames.shape[0]}, {self.dim})")
    return out

  def describe(self) -> dict[str, Any]:
    return {"name": self.name, "dim": self.dim, "frame_size": self.frame_size, **self._info}


def _import(module: str, what: str) -> Any:
  try:
    return importlib.import_module(module)
  except ModuleNotFoundError as e:
    raise EncoderUnavailableError(f"video encoder {what!r} needs the module {module} ({e})") from e


def _build(what: str, ctor: Callable[[], Any]) -> Any:
  try:
    return ctor()
  except FileNotFoundError as e:  # missing weights: say how to give them
    raise EncoderUnavailableError(f"video encoder {what!r}: weights not found ({e}); set "
                                  "config.video_encoder_weights=PATH") from e


MOBILENET_V2_MODULE = "flowav.encoders.mobilenet_v2"
CLIP_MODULE = "flowav.encoders.clip_vision"


@register("mobilenet_v2")
def _make_mobilenet_v2(*, weights: str | None, frame_size: int) -> FrameEncoder:
  """ImageNet MobileNetV2; weights: torchvision's .pth or its safetensors (None: the package's)."""
  module = _import(MOBILENET_V2_MODULE, "mobilenet_v2")
  inner = _build("mobilenet_v2", lambda: module.load_mobilenet_v2(weights))
  # The network resizes internally to its 224 input; decoding frames at that size keeps detail.
  size = frame_size or module.IMAGE_SIZE
  return _Adapter("mobilenet_v2", inner, module.FEATURE_DIM, size,
                  {"module": MOBILENET_V2_MODULE, "weights": weights or "default"})


@register("clip")
def _make_clip(*, weights: str | None, frame_size: int) -> FrameEncoder:
  """CLIP image tower; weights: a Hugging Face checkpoint directory (config.json + safetensors)."""
  if not weights:
    raise EncoderUnavailableError("video encoder 'clip' has no default weights: set "
                                  "config.video_encoder_weights to a Hugging Face CLIP checkpoint "
                                  "directory (config.json + model.safetensors)")
  module = _import(CLIP_MODULE, "clip")
  inner = _build("clip", lambda: module.load_clip_vision(weights))
  cfg = inner.cfg
  dim = cfg.projection_dim or cfg.hidden_size
  return _Adapter("clip", inner, int(dim), frame_size or int(cfg.image_size),
                  {"module": CLIP_MODULE, "weights": weights})
