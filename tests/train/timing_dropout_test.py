"""Phone-timing dropout (`config.flow.dropout.p_timing`): with rate 1 the conditions no longer see
the clip's timing, the duration predictor still trains on it, and runs without it are unchanged."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from configs import audiogen_omni as omni_config
from configs import vssflow as vssflow_config
from flowav.train import runtime, timing_dropout
from flowav.train import step as step_lib
from tests.train.step_test import tiny_batch


def test_drop_timing_replaces_whole_rows_at_the_rate():
  durations = np.tile(np.array([[5, 1, 1, 0]], np.int32), (2000, 1))
  mask = np.tile(np.array([[1, 1, 1, 0]], bool), (2000, 1))
  out = np.asarray(timing_dropout.drop_timing(durations, mask, jax.random.key(0), 0.3))
  dropped = np.all(out == [3, 2, 2, 0], axis=1)
  assert np.all(dropped | np.all(out == durations, axis=1))  # a row is either kept or uniform
  assert 0.26 < dropped.mean() < 0.34
  assert np.all(np.asarray(timing_dropout.drop_timing(durations, mask, jax.random.key(0), 0.0))
                == durations)


@pytest.fixture(scope="module")
def losses():
  """flow_matching_loss of tiny VSSFlow, for p_timing 0 and 1, on two batches that differ only in
  the phones' timing (same total frames)."""
  config = vssflow_config.get_config("tiny")
  rt = runtime.make_runtime(config)
  state = rt.init_state()
  base = tiny_batch()
  moved = {**base, "phone_durations": base["phone_durations"].copy()}
  moved["phone_durations"][:, :4] = [2, 14, 10, 6]  # 32 frames, as the base's 8 + 8 + 8 + 8
  out = {}
  for p in (0.0, 1.0):
    config.flow.dropout = dict(p_speaker=0.0, p_all=0.0, p_timing=p)
    cfg = step_lib.step_config(config)

    @functools.partial(jax.jit, static_argnums=1)
    def loss(batch, train, cfg=cfg):
      model = nnx.merge(rt.graphdef, state.params, state.rest)
      return step_lib.flow_matching_loss(model, batch, jax.random.key(3), cfg, train=train)[1]

    out[p] = {name: loss(b, True) for name, b in (("base", base), ("moved", moved))}
    out[p]["eval_moved"] = loss(moved, False)
  return out


def test_without_timing_dropout_the_timing_changes_the_loss(losses):
  assert abs(float(losses[0.0]["base"]["flow_loss"]) - float(losses[0.0]["moved"]["flow_loss"])) > 1e-4


def test_with_rate_one_the_flow_loss_ignores_the_timing_but_the_duration_loss_does_not(losses):
  a, b = losses[1.0]["base"], losses[1.0]["moved"]
  np.testing.assert_allclose(float(a["flow_loss"]), float(b["flow_loss"]), rtol=1e-6)
  duration_keys = [k for k in a if "duration" in k]
  assert duration_keys and any(abs(float(a[k]) - float(b[k])) > 1e-4 for k in duration_keys), a
  # Evaluation (train=False) never drops the timing.
  np.testing.assert_allclose(float(losses[1.0]["eval_moved"]["flow_loss"]),
                             float(losses[0.0]["moved"]["flow_loss"]), rtol=1e-6)


def test_rate_outside_zero_one_names_the_flag():
  config = vssflow_config.get_config("tiny")
  config.flow.dropout = dict(p_speaker=0.1, p_all=0.1, p_timing=1.5)
  with pytest.raises(ValueError, match="config.flow.dropout.p_timing"):
    step_lib.step_config(config)


def test_rate_on_a_model_without_phone_timing_is_refused():
  """AudioGen-Omni reads phone durations only with lyrics_aligned: a rate elsewhere would train
  exactly as rate 0, so it is refused, naming the flag and the model option."""
  config = omni_config.get_config("tiny")
  config.flow.dropout.p_timing = 0.5
  config.model.lyrics_aligned = False
  with pytest.raises(ValueError, match=r"p_timing=0.5 has no effect.*lyrics_aligned"):
    step_lib.step_config(config)
  config.model.lyrics_aligned = True
  assert dict(step_lib.step_config(config).dropout)["p_timing"] == 0.5
