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


@pytest.mark.parametrize("name, zero_ok, not_a_size", [
  ("vssflow", "depth", "fourier_seed"), ("audiogen_omni", "single_depth", None)])
def test_sizes_must_be_positive_except_block_counts(name, zero_ok, not_a_size):
  config_cls = MODELS[name][0]
  with pytest.raises(ValueError, match=rf"{config_cls.__name__}: width=-2 must be positive"):
    model_config({"name": name, "variant": "tiny", "width": -2})
  with pytest.raises(ValueError, match=rf"{zero_ok}=-1 must be >= 0"):
    model_config({"name": name, "variant": "tiny", zero_ok: -1})
  assert getattr(model_config({"name": name, "variant": "tiny", zero_ok: 0}), zero_ok) == 0
  if not_a_size:
    assert getattr(model_config({"name": name, "variant": "tiny", not_a_size: 0}), not_a_size) == 0


def _vssflow_velocity(model, batch, x, t):
  return model(x, t, model.conditions(batch))


@pytest.mark.parametrize("name", [
  "vssflow", pytest.param("audiogen_omni", marks=pytest.mark.slow),  # 23 s: in the slow tier
])
def test_scan_unroll_changes_the_loop_not_the_model(name):
  """`scan_unroll` (the demo variants unroll their block stacks) keeps the parameters (so
  checkpoints stay interchangeable), the velocity and its gradients."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  if name == "vssflow":
    from tests.models import vssflow_testlib as lib  # pylint: disable=g-import-not-at-top
    looped, unrolled = lib.tiny_model(), lib.tiny_model(scan_unroll=2)
    velocity = _vssflow_velocity
  else:
    from tests.models import audiogen_omni_testlib as lib  # pylint: disable=g-import-not-at-top
    looped, unrolled = lib.tiny_model(), lib.tiny_model(scan_unroll=2)
    velocity = lib.velocity
  stacks = ("blocks",) if name == "vssflow" else ("joint_blocks", "single_blocks")
  assert [getattr(unrolled, s).unroll for s in stacks] == [2] * len(stacks)
  assert [getattr(looped, s).unroll for s in stacks] == [1] * len(stacks)
  batch = lib.make_batch(looped.cfg)
  x = np.asarray(batch["audio_latents"])
  t = np.array([0.2, 0.5, 0.8], np.float32)
  params = [nnx.state(m, nnx.Param) for m in (looped, unrolled)]
  jax.tree.map(np.testing.assert_array_equal, *params)

  def loss_and_grad(model):
    graphdef, state = nnx.split(model)
    loss = lambda s: jax.numpy.mean(velocity(nnx.merge(graphdef, s), batch, x, t) ** 2)
    return jax.jit(jax.value_and_grad(loss))(state)

  (loss_a, grad_a), (loss_b, grad_b) = loss_and_grad(looped), loss_and_grad(unrolled)
  assert float(loss_a) > 0
  np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6), grad_a, grad_b)
