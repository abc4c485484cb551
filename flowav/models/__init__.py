"""Model registry: a config section `{'name', 'variant', **overrides}` -> config -> nnx.Module.

Each model module defines a frozen config dataclass, a `VARIANTS` dict of named size sets and the
model class (the interface the trainer and sampler use: `conditions`, `drop_conditions`,
`null_conditions`, `__call__`, `auxiliary_loss`; see flowav/train/step.py).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from typing import Any

import flax.nnx as nnx

from flowav.models.audiogen_omni import AudioGenOmni, AudioGenOmniConfig
from flowav.models.vssflow import VSSFlow, VSSFlowConfig

MODELS: dict[str, tuple[type, type]] = {
  "vssflow": (VSSFlowConfig, VSSFlow),
  "audiogen_omni": (AudioGenOmniConfig, AudioGenOmni),
}


def _as_dict(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
  if hasattr(model_cfg, "to_dict"):  # ml_collections.ConfigDict
    model_cfg = model_cfg.to_dict()
  return dict(model_cfg)


def model_config(model_cfg: Mapping[str, Any]) -> Any:
  """`Config(**{**VARIANTS[variant], **overrides})` of the model named `model_cfg['name']`.

  Raises ValueError naming an unknown model, variant or config key (and listing the valid ones).
  """
  fields = _as_dict(model_cfg)
  name = fields.pop("name", None)
  if name not in MODELS:
    raise ValueError(f"Unknown model name={name!r} in the model config; valid: {sorted(MODELS)}")
  config_cls, model_cls = MODELS[name]
  variants = sys.modules[model_cls.__module__].VARIANTS
  variant = fields.pop("variant", None)
  if variant not in variants:
    raise ValueError(f"Unknown variant={variant!r} for model {name!r}; valid: {sorted(variants)}")
  valid = sorted(f.name for f in dataclasses.fields(config_cls))
  unknown = sorted(set(fields) - set(valid))
  if unknown:
    raise ValueError(f"Unknown keys {unknown} in the config of model {name!r}; valid: {valid}")
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
  return config_cls(**{**variants[variant], **overrides})


def build_model(model_cfg: Mapping[str, Any], *, rngs: nnx.Rngs) -> nnx.Module:
  """Builds the model described by a config section (see `model_config`)."""
  cfg = model_config(model_cfg)
  return MODELS[_as_dict(model_cfg)["name"]][1](cfg, rngs=rngs)


__all__ = ["MODELS", "AudioGenOmni", "AudioGenOmniConfig", "VSSFlow", "VSSFlowConfig", "build_model",
           "model_config"]
