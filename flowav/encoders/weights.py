"""Pretrained weights from local files: torch checkpoints -> safetensors cache -> nnx modules.

Nothing here downloads. A torch file is read once with `torch.load(weights_only=True)` (the
`convert` extra) and cached next to a user-chosen cache directory as safetensors, so later loads
need neither torch nor pickle. Every encoder turns its source key layout into flowav's parameter
paths (`"block/0/conv/kernel"`) and calls `assign`, which refuses a missing, unexpected or
misshapen tensor by name.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
from collections.abc import Mapping

import flax.nnx as nnx
import numpy as np


class WeightsError(ValueError):
  """A weights file that does not fit the model it is loaded into (names the file and key)."""


def _require_torch(what: str):
  try:
    import torch  # noqa: PLC0415 -- optional: only the `convert` extra has it
  except ImportError as e:
    raise ImportError(f"{what} needs torch to read a .pth file once; install the convert extra: "
                      "pip install 'flowav[convert]' (torch==2.13.0)") from e
  return torch


def read_torch_state_dict(path: str | os.PathLike, *, subkey: str | None = None
                          ) -> dict[str, np.ndarray]:
  """Reads a torch checkpoint with `weights_only=True` into float32/int numpy arrays.

  Args:
    path: a `.pth` / `.pth.tar` file holding a state dict (or a dict containing one).
    subkey: the entry holding the state dict (e.g. HiFi-GAN's "generator"); None for the top level.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"weights file not found: {path}")
  torch = _require_torch(f"reading {path}")
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pickle errors come in many types; name the file
    raise WeightsError(f"{path}: not a torch checkpoint loadable with weights_only=True: {e}") from e
  if subkey is not None:
    if not isinstance(obj, Mapping) or subkey not in obj:
      keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
      raise WeightsError(f"{path}: has no entry {subkey!r} (top level: {keys})")
    obj = obj[subkey]
  if not isinstance(obj, Mapping):
    raise WeightsError(f"{path}: expected a state dict, got {type(obj).__name__}")
  out = {}
  for key, value in obj.items():
    if not hasattr(value, "detach"):
      continue  # e.g. bookkeeping scalars stored beside the tensors
    array = value.detach().cpu()
    out[key] = array.float().numpy() if array.is_floating_point() else array.numpy()
  return out


def default_cache_dir() -> pathlib.Path:
  """Where converted weights are cached: `$FLOWAV_CACHE_DIR/weights`, else
  `$XDG_CACHE_HOME/flowav/weights`, else `~/.cache/flowav/weights`."""
  if os.environ.get("FLOWAV_CACHE_DIR"):
    return pathlib.Path(os.environ["FLOWAV_CACHE_DIR"]).expanduser() / "weights"
  root = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(root) / "flowav" / "weights"


def file_digest(path: str | os.PathLike) -> str:
  """Hex sha256 of a file (identifies a cached conversion's source)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def save_safetensors(tensors: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
  """Writes atomically (temporary file + rename), so a kill never leaves a partial cache file."""
  from safetensors.numpy import save_file  # noqa: PLC0415

  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
  os.close(fd)
  try:
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads every tensor of a safetensors file as numpy."""
  from safetensors import SafetensorError  # noqa: PLC0415
  from safetensors.numpy import load_file  # noqa: PLC0415

  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"weights file not found: {path}")
  try:
    return load_file(str(path))
  except (SafetensorError, OSError, ValueError) as e:
    raise WeightsError(f"{path}: not a readable safetensors file: {e}") from e


def cached_torch_conversion(source: str | os.PathLike, cache_dir: str | os.PathLike, *,
                            subkey: str | None = None) -> dict[str, np.ndarray]:
  """A torch state dict, converted once to `<cache_dir>/<stem>-<sha12>.safetensors` and reused.

  The cache name carries the source's digest, so a changed source file is converted again.
  """
  source = pathlib.Path(source)
  if source.suffix == ".safetensors":
    return load_safetensors(source)
  digest = file_digest(source)[:12]
  stem = source.name.split(".")[0]
  cached = pathlib.Path(cache_dir) / f"{stem}-{digest}.safetensors"
  if cached.is_file():
    return load_safetensors(cached)
  tensors = read_torch_state_dict(source, subkey=subkey)
  save_safetensors(tensors, cached)
  return tensors


def param_paths(module: nnx.Module) -> dict[str, tuple[int, ...]]:
  """`{"a/b/kernel": shape}` for every nnx.Param of `module`."""
  state = nnx.state(module, nnx.Param)
  return {"/".join(str(p) for p in path): tuple(v.shape)
          for path, v in nnx.to_flat_state(state)}


def assign(module: nnx.Module, tensors: Mapping[str, np.ndarray], *, source: str) -> None:
  """Sets every nnx.Param of `module` from `tensors` keyed by "/"-joined param path.

  Raises WeightsError naming `source` and the keys when a parameter is missing, a tensor is left
  over, or a shape differs; the module is untouched in that case.
  """
  state = nnx.state(module, nnx.Param)
  flat = nnx.to_flat_state(state)
  expected = {"/".join(str(p) for p in path): (path, v) for path, v in flat}
  missing = sorted(set(expected) - set(tensors))
  unexpected = sorted(set(tensors) - set(expected))
  if missing or unexpected:
    raise WeightsError(f"{source}: does not fit {type(module).__name__}: missing {missing[:8]}"
                       f"{' ...' if len(missing) > 8 else ''} (of {len(missing)}), unexpected "
                       f"{unexpected[:8]}{' ...' if len(unexpected) > 8 else ''} "
                       f"(of {len(unexpected)})")
  for key, (_, var) in expected.items():
    if tuple(var.shape) != tuple(np.shape(tensors[key])):
      raise WeightsError(f"{source}: {key} has shape {tuple(np.shape(tensors[key]))}, "
                         f"{type(module).__name__} expects {tuple(var.shape)}")
  for key, (_, var) in expected.items():
    var.set_value(np.asarray(tensors[key], dtype=var.dtype))
