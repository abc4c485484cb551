"""Export of trained weights: a pure parameter dict (msgpack) and a JSON that says what it is.

`workdir/export/params.msgpack` holds `nnx.to_pure_dict` of the EMA weights if the run kept an EMA
(else the raw weights); `export/meta.json` records which (`weights: "ema" | "raw"`), the step, the
model name and variant, the parameter-path digest, the codec and the latent statistics, and
`feature_stats` (batch key -> per-channel mean / std) for a model that standardises inputs with its
training data's statistics (`nn.FeatureNorm`, not a parameter): set them on a rebuilt model with
`model.feature_norms()[key].set_stats(mean, std)`.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np
from flax import nnx, serialization

from flowav import generate
from flowav.train.checkpoint import params_digest


def export(workdir: str | os.PathLike, *, use_ema: bool = True) -> str:
  """Writes workdir/export/{params.msgpack, meta.json} atomically; returns the directory."""
  run = generate.load_run(workdir, use_ema=use_ema)
  out = pathlib.Path(workdir) / "export"
  out.mkdir(parents=True, exist_ok=True)
  pure = jax.tree.map(np.asarray, nnx.to_pure_dict(run.params))
  meta = {
    "weights": run.weights, "step": run.step, "model": run.meta["model"],
    "variant": run.meta["variant"], "params_digest": params_digest(run.params),
    "codec": run.meta["codec"], "latent_stats": run.meta["latent_stats"],
    "config": json.loads(run.config.to_json_best_effort()),
    "feature_stats": feature_stats(run.model),
  }
  for name, data in (("params.msgpack", serialization.msgpack_serialize(pure)),
                     ("meta.json", (json.dumps(meta, indent=1) + "\n").encode())):
    tmp = out / (name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out / name)
  return str(out)


def feature_stats(model: nnx.Module) -> dict[str, dict[str, list[float]]]:
  """{batch key: {"mean": [D], "std": [D]}} of the model's FeatureNorms ({} without any)."""
  norms = model.feature_norms() if hasattr(model, "feature_norms") else {}
  return {key: {"mean": np.asarray(norm.mean[...]).tolist(), "std": np.asarray(norm.std[...]).tolist()}
          for key, norm in norms.items()}


def load_exported(directory: str | os.PathLike) -> tuple[dict, dict]:
  """(pure parameter dict, meta) of an export; fails clearly on a missing or foreign file."""
  directory = pathlib.Path(directory)
  meta_path, params_path = directory / "meta.json", directory / "params.msgpack"
  for p in (meta_path, params_path):
    if not p.exists():
      raise FileNotFoundError(f"{p} not found: not a flowav export directory")
  meta = json.loads(meta_path.read_text())
  params = serialization.msgpack_restore(params_path.read_bytes())
  return params, meta
