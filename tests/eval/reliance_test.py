"""flowav.eval.reliance: the velocity loss with a clip's own condition vs another clip's."""

from __future__ import annotations

import flax.nnx as nnx
import jax
import numpy as np
import pytest

from flowav.eval import reliance
from tests.models.audiogen_omni_testlib import make_batch, tiny_config, tiny_model

# The tiny model's builds and compiles take ~45 s: the slow tier (e2e_omni_test covers the eval).
pytestmark = pytest.mark.slow

TIMES = (0.3, 0.7)


def _parts(model):
  return nnx.split(model, nnx.Param, ...)


def test_a_zero_velocity_model_scores_the_mean_squared_target_on_valid_frames():
  parts = _parts(tiny_model(perturb=False))  # adaLN-zero: the fresh model's velocity is 0
  batch = make_batch(tiny_config())
  got = reliance.velocity_losses(*parts, batch, times=(0.5,), num_noise=1, seed=0)
  x1, mask = batch["audio_latents"], batch["audio_mask"]
  x0 = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.key(0), 0), x1.shape))
  # target x1 - x0 on valid frames only (row 2's last 6 frames are padding)
  want = ((x1 - x0) ** 2 * mask[..., None]).sum((1, 2)) / (mask.sum(1) * x1.shape[-1])
  np.testing.assert_allclose(got[0], want, rtol=1e-5)


def test_noise_is_paired_by_seed():
  parts, batch = _parts(tiny_model()), make_batch(tiny_config())
  losses = reliance.velocity_losses(*parts, batch, times=TIMES, num_noise=2, seed=3)
  assert losses.shape == (2, 3) and np.all(np.isfinite(losses)) and np.all(losses > 0)
  np.testing.assert_array_equal(
    losses, reliance.velocity_losses(*parts, batch, times=TIMES, num_noise=2, seed=3))
  assert not np.allclose(
    losses, reliance.velocity_losses(*parts, batch, times=TIMES, num_noise=2, seed=4))


def test_the_gap_is_one_for_a_hidden_condition_and_not_for_a_read_one():
  """Perturbed tiny model (its zero-initialised gates made random, so it reads every stream)."""
  parts, cfg = _parts(tiny_model()), tiny_config()
  batch, other = make_batch(cfg, seed=0), make_batch(cfg, seed=1)
  video = {**batch, "video_features": other["video_features"],
           "sync_features": other["sync_features"]}  # rows 0 and 1 have video
  hidden = {**batch, "text_mask": np.zeros_like(batch["text_mask"])}  # the caption masked out
  hidden_swapped = {**hidden, "text_embeddings": other["text_embeddings"],
                    "text_ids": other["text_ids"]}
  read = reliance.loss_gap(parts, [batch], [video], times=TIMES, num_noise=1)
  unread = reliance.loss_gap(parts, [hidden], [hidden_swapped], times=TIMES, num_noise=1)
  assert unread["ratio"] == pytest.approx(1.0, abs=1e-6)
  assert abs(read["ratio"] - 1.0) > 1e-3, read
  assert read["num_clips"] == 3 and set(read["by_t"]) == {"0.3", "0.7"}
  assert read["model"] == pytest.approx(np.mean([m for m, _ in read["by_t"].values()]))


def test_bad_arguments_are_named():
  parts, batch = _parts(tiny_model()), make_batch(tiny_config())
  with pytest.raises(ValueError, match="num_noise=0"):
    reliance.velocity_losses(*parts, batch, num_noise=0)
  with pytest.raises(ValueError, match="got 1 and 0"):
    reliance.loss_gap(parts, [batch], [])
