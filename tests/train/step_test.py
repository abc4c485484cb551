"""The pure train step on the tiny VSSFlow: loss falls when overfitting one batch (spec §7.15),
EMA follows the weights, NaN-free, and padded frames do not enter the loss."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from configs import vssflow as vssflow_config
from flowav.parallel import sharding as shd
from flowav.train import runtime
from flowav.train import step as step_lib


def tiny_batch(b: int = 4, t: int = 32, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  dur = np.zeros((b, 16), np.int32)
  dur[:, :4] = t // 4
  return {
    "audio_latents": rng.standard_normal((b, t, 80)).astype(np.float32),
    "audio_mask": np.ones((b, t), bool),
    "video_features": rng.standard_normal((b, 8, 256)).astype(np.float32),
    "video_mask": np.ones((b, 8), bool),
    "transcript_ids": np.where(np.arange(16) < 4, 7, 0)[None].repeat(b, 0).astype(np.int32),
    "transcript_mask": (np.arange(16) < 4)[None].repeat(b, 0),
    "phone_durations": dur,
    "speaker_embedding": rng.standard_normal((b, 80)).astype(np.float32),
    "speaker_mask": np.ones((b,), bool),
    "task_id": (np.arange(b) % 2).astype(np.int32),
    "start_s": np.zeros((b,), np.float32), "duration_s": np.ones((b,), np.float32),
  }


@pytest.fixture(scope="module")
def setup():
  config = vssflow_config.get_config("tiny")
  config.train.ema_decay = 0.9
  config.optim.warmup_steps = 0
  rt = runtime.make_runtime(config)
  cfg = step_lib.step_config(config)
  step = jax.jit(functools.partial(step_lib.train_step, graphdef=rt.graphdef, tx=rt.tx, cfg=cfg))
  return config, rt, cfg, step


def test_overfitting_one_batch_lowers_the_loss(setup):
  _, rt, _, step = setup
  state = rt.init_state()
  batch = tiny_batch()
  losses = []
  with shd.use_mesh(rt.mesh, rt.rules):
    for _ in range(60):
      state, metrics = step(state, batch)
      losses.append(float(metrics["flow_loss"]))
  assert np.all(np.isfinite(losses))
  assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:5]), losses
  assert int(state.step) == 60
  # EMA moved towards the weights but is not equal to them.
  p, e = jax.tree.leaves(state.params), jax.tree.leaves(state.ema)
  assert any(not np.array_equal(a, b) for a, b in zip(p, e))


def test_padded_frames_do_not_change_the_loss(setup):
  _, rt, cfg, _ = setup
  state = rt.init_state()
  batch = tiny_batch()
  batch["audio_mask"][:, 24:] = False
  other = {k: v.copy() for k, v in batch.items()}
  other["audio_latents"][:, 24:] = 1e3  # garbage in padded frames
  eval_step = jax.jit(functools.partial(step_lib.eval_step, graphdef=rt.graphdef, cfg=cfg))
  key = jax.random.key(0)
  a = eval_step(state.params, state.rest, batch, key)["flow_loss"]
  b = eval_step(state.params, state.rest, other, key)["flow_loss"]
  # The model is not causal, so padded inputs may move valid outputs slightly; the loss terms of
  # padded frames themselves (1e6-scale errors) must be absent.
  assert float(b) < 10 * float(a)


def test_micro_batches_are_strided_and_cover_the_batch():
  x = np.arange(12)[:, None] * np.ones((1, 3))
  micro = np.asarray(step_lib._split_micro({"x": x}, 3)["x"])  # pylint: disable=protected-access
  assert micro.shape == (3, 4, 3)
  np.testing.assert_array_equal(micro[1, :, 0], [1, 4, 7, 10])  # rows 1, 1+3, ...: every device
  assert sorted(micro[..., 0].ravel().tolist()) == list(range(12))
  with pytest.raises(ValueError, match="grad_accum=5"):
    step_lib._split_micro({"x": x}, 5)  # pylint: disable=protected-access


@pytest.mark.slow  # ~20 s; `make test` stays under 10 minutes
def test_gradient_accumulation_step_trains(setup):
  config, rt, _, _ = setup
  config = config.copy_and_resolve_references()
  config.optim.grad_accum = 2
  cfg = step_lib.step_config(config)
  step = jax.jit(functools.partial(step_lib.train_step, graphdef=rt.graphdef, tx=rt.tx, cfg=cfg))
  state = rt.init_state()
  losses = []
  with shd.use_mesh(rt.mesh, rt.rules):
    for _ in range(60):
      state, metrics = step(state, tiny_batch())
      losses.append(float(metrics["flow_loss"]))
  assert np.all(np.isfinite(losses)) and int(state.step) == 60
  assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
