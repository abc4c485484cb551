"""The model registry: config sections -> config dataclasses -> models, with clear errors."""

from __future__ import annotations

import flax.nnx as nnx
import pytest

from configs import audiogen_omni as omni_experiment
from configs import vssflow as vssflow_experiment
from flowav.models import (
  MODELS,
  AudioGenOmni,
  AudioGenOmniConfig,
  VSSFlow,
  VSSFlowConfig,
  build_model,
  model_config,
)
from flowav.models.vssflow import VARIANTS


def test_build_model_applies_the_variant_and_overrides():
  section = {"name": "vssflow", "variant": "tiny", "depth": 1, "temporal_channel": False}
  model = nnx.eval_shape(lambda: build_model(section, rngs=nnx.Rngs(0)))  # nothing allocated
  assert isinstance(model, VSSFlow)
  assert model.cfg == VSSFlowConfig(**{**VARIANTS["tiny"], "depth": 1, "temporal_channel": False})
  assert model.blocks.layers.norm1.scale.shape == (1, 64)
  assert MODELS["vssflow"] == (VSSFlowConfig, VSSFlow)


@pytest.mark.parametrize("variant", ["tiny", "demo", "paper"])
def test_experiment_config_round_trips(variant):
  section = vssflow_experiment.get_config(variant).model  # an ml_collections.ConfigDict
  fields = {k: v for k, v in section.to_dict().items() if k not in ("name", "variant")}
  assert model_config(section) == VSSFlowConfig(**fields)


@pytest.mark.parametrize("variant", ["tiny", "demo", "paper", "mmaudio_s"])
def test_audiogen_omni_experiment_config_round_trips(variant):
  section = omni_experiment.get_config(variant).model
  fields = {k: v for k, v in section.to_dict().items() if k not in ("name", "variant")}
  assert model_config(section) == AudioGenOmniConfig(**fields)
  assert MODELS["audiogen_omni"] == (AudioGenOmniConfig, AudioGenOmni)


def test_errors_name_the_bad_entry_and_list_the_valid_ones():
  with pytest.raises(ValueError, match=r"Unknown keys \['widht'\].*valid: \[.*'width'"):
    model_config({"name": "vssflow", "variant": "tiny", "widht": 3})
  with pytest.raises(ValueError, match=r"variant='huge'.*\['demo', 'paper', 'tiny'\]"):
    model_config({"name": "vssflow", "variant": "huge"})
  with pytest.raises(ValueError, match=r"name='flowly'.*\['audiogen_omni', 'vssflow'\]"):
    model_config({"name": "flowly", "variant": "tiny"})
  with pytest.raises(ValueError, match="num_kv_heads"):
    model_config({"name": "vssflow", "variant": "tiny", "num_kv_heads": 3})
  with pytest.raises(ValueError, match="width=0"):
    model_config({"name": "vssflow", "variant": "tiny", "width": 0})
