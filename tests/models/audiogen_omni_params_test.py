"""AudioGen-Omni spec §7.10: parameter counts, logical names, golden parameter paths, training."""

from __future__ import annotations

import pathlib

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowav.flow import timesteps
from flowav.models import audiogen_omni as ag
from flowav.train import step as step_lib
from flowav.train.state import count_params, param_paths
from tests.models.audiogen_omni_testlib import make_batch, tiny_model
from tests.param_checks import check_golden_paths, check_param_names

GOLDEN = pathlib.Path(__file__).parent / "golden" / "audiogen_omni.txt"


def _abstract(variant, **overrides):
  cfg = ag.AudioGenOmniConfig(**{**ag.VARIANTS[variant], **overrides})
  return nnx.eval_shape(lambda: ag.AudioGenOmni(cfg, rngs=nnx.Rngs(0)))


def _count(module):
  return count_params(nnx.state(module, nnx.Param))


def test_parameter_counts():  # §2 arithmetic, §6, §7.10 (eval_shape: nothing allocated)
  paper = _abstract("paper")
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(nnx.state(paper)))
  total = _count(paper)
  assert 1.45e9 <= total <= 1.60e9 and abs(total - 1.496e9) < 0.02 * 1.496e9, total
  assert total == 1_496_219_176
  assert paper.cfg.ffn_hidden == 2816
  assert abs(_count(paper.joint_blocks) / 7 - 96.2e6) < 0.1e6  # each full joint block
  assert abs(_count(paper.single_blocks) / 16 - 38.5e6) < 0.1e6
  inputs = sum(_count(m) for m in (paper.audio_proj, paper.video_proj, paper.sync_proj,
                                   paper.text_proj)) + 8 * 768
  assert abs(inputs - 129e6) < 0.5e6
  assert abs(_count(paper.lyrics) - 14.6e6) < 0.1e6
  assert 1.3e6 < _count(tiny_model()) < 1.5e6  # spec §6: tiny ~1.4 M
  assert abs(_count(_abstract("mmaudio_s")) - 157e6) < 1e6  # MMAudio-S-16k: 157 M


@pytest.mark.parametrize("variant", ["tiny", "demo"])
def test_every_parameter_has_one_logical_name_per_dim(variant):
  assert check_param_names(_abstract(variant)) > 0


def test_golden_parameter_paths():
  paths = param_paths(nnx.state(tiny_model(perturb=False), nnx.Param))
  check_golden_paths(paths, GOLDEN, "AudioGen-Omni")


@pytest.mark.slow  # ~25 s on the 2-core machine, almost all of it compiling the backward pass
def test_tiny_training_lowers_the_loss():  # §7.10, through the trainer's loss and CFG dropout
  model = tiny_model(perturb=False)
  batch = {k: jnp.asarray(v) for k, v in make_batch(model.cfg).items()}
  cfg = step_lib.StepConfig(t_sampler=timesteps.make_t_sampler("logit_normal", mean=0.0, std=1.0),
                            dropout=(("p_caption", 0.1), ("p_lyrics", 0.1), ("p_video", 0.1)))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(1e-3)

  @jax.jit
  def train_step(params, opt, key):
    def loss_fn(params):
      model = nnx.merge(graphdef, params, rest)
      return step_lib.flow_matching_loss(model, batch, key, cfg)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, loss

  opt = tx.init(params)
  probe = jax.random.key(9)  # the same noise, t and drops before and after
  before = float(train_step(params, opt, probe)[2])
  for key in jax.random.split(jax.random.key(1), 30):
    params, opt, _ = train_step(params, opt, key)
  after = float(train_step(params, opt, probe)[2])
  assert np.isfinite(before) and np.isfinite(after)
  assert after < 0.8 * before, (before, after)
