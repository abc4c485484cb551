"""Classifier-free guidance: the formula, one batched call, and the w = 1 shortcut."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.flow import guidance

B, D = 3, 4


class RecordingModel:
  """v = x * t + cond['a'] @ W + cond['b']: a toy model that records the batch of every call."""

  def __init__(self):
    self.calls = []
    self.w = jax.random.normal(jax.random.key(0), (2, D))

  def __call__(self, x, t, cond):
    self.calls.append({"x": x.shape[0], "t": t.shape[0], "a": cond["a"], "b": cond["b"]})
    return x * t[:, None] + cond["a"] @ self.w + cond["b"]


def _inputs():
  ks = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(ks[0], (B, D))
  t = jnp.full((B,), 0.3)
  cond = {"a": jax.random.normal(ks[1], (B, 2)), "b": jax.random.normal(ks[2], (B, D))}
  null = {"a": jnp.zeros((B, 2)), "b": jnp.zeros((B, D))}
  return x, t, cond, null


def test_cfg_combine_formula():
  vc, vu = jnp.array([2.0, -1.0]), jnp.array([0.5, 1.0])
  np.testing.assert_allclose(guidance.cfg_combine(vc, vu, 3.0), vu + 3.0 * (vc - vu))
  np.testing.assert_array_equal(guidance.cfg_combine(vc, vu, 0.0), vu)
  np.testing.assert_array_equal(guidance.cfg_combine(vc, vu, 1.0), vc)


def test_scale_one_is_the_conditional_model_with_one_batch_b_call():
  model = RecordingModel()
  x, t, cond, null = _inputs()
  v = guidance.guided_velocity(model, cond, null, 1.0)(x, t)
  assert len(model.calls) == 1 and model.calls[0]["x"] == B
  np.testing.assert_array_equal(v, model(x, t, cond))
  # also under jit: traced once, batch B
  model.calls.clear()
  jitted = jax.jit(lambda x, t: guidance.guided_velocity(model, cond, null, 1.0)(x, t))
  np.testing.assert_allclose(jitted(x, t), v, rtol=1e-6)
  assert [c["x"] for c in model.calls] == [B]


def test_guided_call_is_one_2b_batch_cond_first():
  model = RecordingModel()
  x, t, cond, null = _inputs()
  guidance.guided_velocity(model, cond, null, 3.0)(x, t)
  assert len(model.calls) == 1
  call = model.calls[0]
  assert call["x"] == 2 * B and call["t"] == 2 * B
  np.testing.assert_array_equal(call["a"][:B], cond["a"])
  np.testing.assert_array_equal(call["a"][B:], null["a"])
  np.testing.assert_array_equal(call["b"][B:], null["b"])


def test_guided_velocity_is_affine_in_the_scale():
  model = RecordingModel()
  x, t, cond, null = _inputs()
  vc, vu = model(x, t, cond), model(x, t, null)
  v0 = guidance.guided_velocity(model, cond, null, 0.0)(x, t)
  np.testing.assert_allclose(v0, vu, rtol=1e-6, atol=1e-6)
  for w in (1.5, 3.0, -0.5):
    vw = guidance.guided_velocity(model, cond, null, w)(x, t)
    np.testing.assert_allclose(vw - vu, w * (vc - vu), rtol=1e-5, atol=1e-5)


def test_traced_or_bad_scale_is_rejected():
  model = RecordingModel()
  x, t, cond, null = _inputs()
  with pytest.raises(ValueError, match="static Python float"):
    jax.jit(lambda w: guidance.guided_velocity(model, cond, null, w)(x, t))(2.0)
  with pytest.raises(ValueError, match="finite"):
    guidance.guided_velocity(model, cond, null, float("nan"))
  with pytest.raises(ValueError, match="float"):
    guidance.guided_velocity(model, cond, null, "strong")


def test_mismatched_conditions_are_rejected():
  model = RecordingModel()
  x, t, cond, null = _inputs()
  with pytest.raises(ValueError, match="structure"):
    guidance.guided_velocity(model, cond, {"a": null["a"]}, 2.0)
  with pytest.raises(ValueError, match=r"null_cond\['b'\]"):
    guidance.guided_velocity(model, cond, {"a": null["a"], "b": null["b"][:1]}, 2.0)
  short = jax.tree.map(lambda c: c[:2], cond)
  with pytest.raises(ValueError, match="leading batch axis 3"):
    guidance.guided_velocity(model, short, jax.tree.map(jnp.zeros_like, short), 2.0)(x, t)
