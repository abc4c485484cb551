"""Hugging Face checkpoint directories read without transformers: config.json fields and weight keys.

A checkpoint directory holds `config.json` and either `model.safetensors` or a sharded
`model.safetensors.index.json` (its `weight_map` names the shard of every key). Encoders read the
fields they need through `HFConfig.field` and the tensors through `TensorReader.take`; both raise
`WeightsError` naming the file and the field or key, so a wrong or truncated checkpoint fails with
a message that says what to fix. Nothing here imports torch or transformers.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from flowav.encoders.weights import WeightsError, load_safetensors

_REQUIRED = object()


def _quick_gelu(x: jax.Array) -> jax.Array:
  """OpenAI CLIP's `x * sigmoid(1.702 x)` (transformers' `quick_gelu`)."""
  return x * jax.nn.sigmoid(1.702 * x)


# transformers' ACT2FN names -> the same function in JAX. `gelu` is the exact erf form; `gelu_new`,
# `gelu_fast` and `gelu_pytorch_tanh` are all the tanh approximation (T5 v1.1 uses `gelu_new`).
HF_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "relu": jax.nn.relu,
  "gelu": lambda x: jax.nn.gelu(x, approximate=False),
  "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
  "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
  "quick_gelu": _quick_gelu,
  "silu": jax.nn.silu,
  "swish": jax.nn.silu,
  "tanh": jnp.tanh,
}


class HFConfig:
  """The fields of one config.json (or one nested sub-config such as CLIPModel's `vision_config`).

  `source` names where the fields came from (`.../config.json` or `.../config.json:vision_config`)
  and appears in every error.
  """

  def __init__(self, data: Mapping[str, Any], source: str):
    if not isinstance(data, Mapping):
      raise WeightsError(f"{source}: expected a JSON object, got {type(data).__name__}")
    self.data = dict(data)
    self.source = source

  @classmethod
  def read(cls, path: str | os.PathLike) -> HFConfig:
    """Reads `path` (a config.json, or a directory holding one)."""
    path = pathlib.Path(path)
    if path.is_dir():
      path = path / "config.json"
    if not path.is_file():
      raise FileNotFoundError(f"config file not found: {path}")
    try:
      data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise WeightsError(f"{path}: not valid JSON: {e}") from e
    return cls(data, str(path))

  def has(self, key: str) -> bool:
    return self.data.get(key) is not None

  def field(self, key: str, kind: type | tuple[type, ...], default: Any = _REQUIRED) -> Any:
    """The value of `key`, checked to be of `kind`; `default` when absent (required if none given).

    An int is accepted where a float is asked for; a bool is never taken for an int.
    """
    value = self.data.get(key)
    if value is None:
      if default is _REQUIRED:
        raise WeightsError(f"{self.source}: missing config field {key!r}")
      return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
      names = "/".join(k.__name__ for k in kinds)
      raise WeightsError(f"{self.source}: config field {key!r}={value!r} must be {names}")
    return value

  def positive_int(self, key: str, default: Any = _REQUIRED) -> int:
    value = self.field(key, int, default)
    if value <= 0:
      raise WeightsError(f"{self.source}: config field {key!r}={value} must be positive")
    return value

  def sub(self, key: str) -> HFConfig:
    """The nested config `key` (e.g. CLIPModel's `vision_config`)."""
    return HFConfig(self.field(key, dict), f"{self.source}:{key}")


def activation(name: str, *, source: str, key: str) -> Callable[[jax.Array], jax.Array]:
  """The JAX function of a transformers activation name (config field `key` of `source`)."""
  if name not in HF_ACTIVATIONS:
    raise WeightsError(f"{source}: config field {key!r}={name!r} is not a supported activation "
                       f"(one of {sorted(HF_ACTIVATIONS)})")
  return HF_ACTIVATIONS[name]


def _weight_files(directory: pathlib.Path) -> list[pathlib.Path]:
  single = directory / "model.safetensors"
  if single.is_file():
    return [single]
  index = directory / "model.safetensors.index.json"
  if index.is_file():
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise WeightsError(f"{index}: not a safetensors index with a 'weight_map': {e}") from e
    return [directory / name for name in sorted(set(weight_map.values()))]
  raise FileNotFoundError(
    f"{directory}: no model.safetensors or model.safetensors.index.json (convert a .bin checkpoint "
    "once with transformers: model.save_pretrained(dir, safe_serialization=True))")


class TensorReader:
  """The tensors of a checkpoint, handed out by Hugging Face key with shape checks.

  `take` marks a key used; `check_all_used` then refuses keys the model did not read (outside the
  ignored prefixes), so a checkpoint of a different architecture is not silently half-loaded.
  """

  def __init__(self, tensors: Mapping[str, np.ndarray], source: str):
    self.tensors = dict(tensors)
    self.source = source
    self.used: set[str] = set()

  @classmethod
  def read(cls, path: str | os.PathLike) -> TensorReader:
    """All tensors of `path`: a .safetensors file, or a checkpoint directory (sharded or not)."""
    path = pathlib.Path(path)
    files = _weight_files(path) if path.is_dir() else [path]
    tensors: dict[str, np.ndarray] = {}
    for file in files:
      tensors.update(load_safetensors(file))
    return cls(tensors, str(files[0] if len(files) == 1 else path))

  def __contains__(self, key: str) -> bool:
    return key in self.tensors

  def take(self, key: str, shape: Iterable[int]) -> np.ndarray:
    """The tensor `key` as float32, which must have `shape` (from the config)."""
    if key not in self.tensors:
      raise WeightsError(f"{self.source}: missing key {key!r}")
    value = self.tensors[key]
    shape = tuple(int(n) for n in shape)
    if tuple(value.shape) != shape:
      raise WeightsError(f"{self.source}: key {key!r} has shape {tuple(value.shape)}, "
                         f"the config asks for {shape}")
    self.used.add(key)
    return np.asarray(value, np.float32)

  def check_all_used(self, ignore_prefixes: Iterable[str] = (), ignore_suffixes: Iterable[str] = ()
                     ) -> None:
    ignore_prefixes, ignore_suffixes = tuple(ignore_prefixes), tuple(ignore_suffixes)
    left = sorted(k for k in set(self.tensors) - self.used
                  if not k.startswith(ignore_prefixes) and not k.endswith(ignore_suffixes))
    if left:
      raise WeightsError(f"{self.source}: unexpected keys {left[:8]}{' ...' if len(left) > 8 else ''}"
                         f" (of {len(left)}): the config and the weights describe different models")


def linear_kernel(reader: TensorReader, key: str, in_features: int, out_features: int) -> np.ndarray:
  """A torch `nn.Linear.weight` `[out, in]` as a flowav Dense kernel `[in, out]`."""
  return reader.take(key, (out_features, in_features)).T


def stacked(values: Iterable[np.ndarray]) -> np.ndarray:
  """Per-layer tensors stacked on a leading layer axis (the layout of `flowav.nn.Stack`)."""
  return np.stack(list(values), axis=0)
