"""Model and train-state construction under a mesh, shared by training, sampling and export.

Parameters are born sharded: the state is traced abstractly (`jax.eval_shape`), its logical axis
names are mapped to NamedShardings by the rules table, and a jitted init writes each parameter
directly onto its devices (big_vision's train.py pattern).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
from absl import logging
from flax import nnx

from flowav import models
from flowav.data import pipeline
from flowav.parallel import mesh as mesh_lib
from flowav.parallel import rules as rules_lib
from flowav.train import optim
from flowav.train.checkpoint import params_digest
from flowav.train.state import TrainState, split_model, tree_shardings

_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}


def model_kwargs(config: mlc.ConfigDict) -> dict[str, Any]:
  """`config.model` as the model's registry entry expects it (variant + overriding fields)."""
  kw = config.model.to_dict()
  dtype = config.train.compute_dtype
  if dtype not in _DTYPES:
    raise ValueError(f"Unknown config.train.compute_dtype={dtype!r}; valid: {sorted(_DTYPES)}")
  if "dtype" in kw:
    kw["dtype"] = _DTYPES[dtype]
  return kw


def build_model(config: mlc.ConfigDict, seed: int = 0) -> nnx.Module:
  return models.build_model(model_kwargs(config), rngs=nnx.Rngs(seed))


@dataclasses.dataclass
class Runtime:
  """Everything static about a run: mesh, rules, model structure, optimizer."""
  config: mlc.ConfigDict
  mesh: jax.sharding.Mesh
  rules: rules_lib.Rules
  graphdef: nnx.GraphDef
  tx: Any
  abstract_state: TrainState  # ShapeDtypeStructs carrying shardings (restore target)
  state_shardings: Any
  meta: dict[str, Any]

  def init_state(self, feature_stats: FeatureStats | None = None) -> TrainState:
    """Fresh parameters, optimizer and EMA, created directly with their shardings;
    `feature_stats` (from `data_feature_stats`) sets the model's `nn.FeatureNorm`s."""
    init = jax.jit(_init_fn(self.config, self.tx), out_shardings=self.state_shardings)
    with jax.set_mesh(self.mesh):
      return init(jax.random.key(int(self.config.train.seed)), feature_stats or {})


# Batch key -> (mean [D], std [D]) for the model's FeatureNorms.
FeatureStats = dict[str, tuple[np.ndarray, np.ndarray]]


def feature_norm_keys(config: mlc.ConfigDict) -> tuple[str, ...]:
  """The batch keys whose statistics the model standardises with (`model.feature_norms()`)."""
  model = nnx.eval_shape(lambda: build_model(config))
  return tuple(model.feature_norms()) if hasattr(model, "feature_norms") else ()


def data_feature_stats(config: mlc.ConfigDict) -> FeatureStats:
  """Statistics of the training split for every key in `feature_norm_keys` (empty if none);
  identical on every process (record order)."""
  out = {}
  for key in feature_norm_keys(config):
    mean, std, frames = pipeline.feature_stats(str(config.data.dir), str(config.data.train_split),
                                               key)
    logging.info("Standardising %s with statistics of %d %s frames of %s", key, frames,
                 config.data.train_split, config.data.dir)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
      raise ValueError(f"{config.data.dir}: {key!r} of split {config.data.train_split!r} has "
                       f"non-finite values (its statistics are not finite)")
    out[key] = (mean, std)
  return out


def _init_fn(config: mlc.ConfigDict, tx: Any):
  def init(key: jax.Array, feature_stats: FeatureStats | None = None) -> TrainState:
    k_model, k_state = jax.random.split(key)
    model = models.build_model(model_kwargs(config), rngs=nnx.Rngs(k_model))
    for name, (mean, std) in (feature_stats or {}).items():
      model.feature_norms()[name].set_stats(mean, std)
    _, params, rest = split_model(model)
    ema = params if float(config.train.ema_decay) > 0 else None
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                      opt_state=tx.init(params), ema=ema, rng=jax.random.key_data(k_state))
  return init


def make_runtime(config: mlc.ConfigDict, devices: list | None = None) -> Runtime:
  mesh = mesh_lib.make_mesh({k: config.mesh[k] for k in mesh_lib.MESH_AXES}, devices)
  rules = rules_lib.get_rules(config.mesh.rules)
  tx = optim.make_optimizer(config.optim, int(config.train.num_steps))
  abstract = jax.eval_shape(_init_fn(config, tx), jax.random.key(0))
  shardings = tree_shardings(abstract, mesh, rules)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  graphdef, _, _ = split_model(nnx.eval_shape(lambda: build_model(config)))
  meta = {
    "model": config.model.name,
    "variant": config.model.variant,
    "params_digest": params_digest(abstract.params),
  }
  return Runtime(config, mesh, rules, graphdef, tx, abstract, shardings, meta)


def abstract_batch(config: mlc.ConfigDict, global_batch: int) -> dict[str, jax.ShapeDtypeStruct]:
  """ShapeDtypeStructs of one global batch `[global_batch, ...]`, shaped by the pipeline's own
  crop_and_pad (for ahead-of-time compiles and benchmarks)."""
  m, seconds = config.model, float(config.data.clip_seconds)
  rates = {"audio": float(m.audio_rate), "video": float(m.video_rate)}
  lengths = pipeline.Lengths(
    audio=int(seconds * rates["audio"] + 1e-6), video=int(np.ceil(seconds * rates["video"] - 1e-6)),
    phones=int(config.data.max_phones), speaker_dim=int(m.get("speaker_dim", 0)),
    video_dim=int(m.video_dim), audio_dim=int(m.audio_channels),
    text=int(config.data.get("max_text_tokens", 0)), lyrics=int(config.data.get("max_lyric_tokens", 0)))
  empty = {"audio_latents": np.zeros((0, lengths.audio_dim), np.float32),
           "audio_mask": np.zeros((0,), bool), "task_id": 0, "start_s": 0.0, "duration_s": 0.0}
  one = pipeline.crop_and_pad(empty, lengths, rates)
  return {k: jax.ShapeDtypeStruct((global_batch,) + np.shape(v), np.asarray(v).dtype)
          for k, v in one.items()}
