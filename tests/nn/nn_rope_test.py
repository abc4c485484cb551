from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.nn import RopeConfig, apply_rope, rope_frequencies, time_positions

LAYOUTS = ("half", "interleaved")


def _reference_rope(x: np.ndarray, positions: np.ndarray, rot: int, theta: float,
                    layout: str) -> np.ndarray:
  """Straight from the formulas of vssflow §2.4 (half) and audiogen_omni §2.6 (interleaved)."""
  x = np.asarray(x, np.float64)
  out = x.copy()
  freqs = theta ** (-2.0 * np.arange(rot // 2) / rot)
  ang = np.asarray(positions, np.float64)[..., None] * freqs  # [B, L, rot/2]
  ang = np.broadcast_to(ang, x.shape[:2] + (rot // 2,))[:, :, None, :]
  if layout == "half":
    cos = np.concatenate([np.cos(ang)] * 2, -1)
    sin = np.concatenate([np.sin(ang)] * 2, -1)
    a, b = x[..., :rot // 2], x[..., rot // 2:rot]
    rotate_half = np.concatenate([-b, a], -1)
    out[..., :rot] = x[..., :rot] * cos + rotate_half * sin
  else:
    for k in range(rot // 2):
      e, o = x[..., 2 * k], x[..., 2 * k + 1]
      c, s = np.cos(ang[..., k]), np.sin(ang[..., k])
      out[..., 2 * k] = e * c - o * s
      out[..., 2 * k + 1] = e * s + o * c
  return out


def _x(shape=(2, 7, 3, 16), seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_frequencies_known_values():
  f = rope_frequencies(32)
  assert f.shape == (16,)
  np.testing.assert_allclose(f[0], 1.0)
  np.testing.assert_allclose(f[1], 10000.0 ** (-2 / 32), rtol=1e-6)
  np.testing.assert_allclose(f[15], 10000.0 ** (-30 / 32), rtol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_reference_formula(layout):
  x = _x()
  pos = jnp.asarray(np.random.default_rng(0).uniform(0, 50, (2, 7)), jnp.float32)
  cfg = RopeConfig(rot_dim=8, layout=layout)
  np.testing.assert_allclose(apply_rope(x, pos, cfg), _reference_rope(x, pos, 8, 1e4, layout),
                             atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_keeps_norm_and_leaves_tail_untouched(layout):
  x = _x()
  y = apply_rope(x, jnp.arange(7.0) * 3.3, RopeConfig(rot_dim=8, layout=layout))
  np.testing.assert_allclose(jnp.linalg.norm(y[..., :8], axis=-1),
                             jnp.linalg.norm(x[..., :8], axis=-1), rtol=1e-5)
  np.testing.assert_array_equal(y[..., 8:], x[..., 8:])
  assert not np.allclose(y[:, 1:, :, :8], x[:, 1:, :, :8])  # Something did rotate.


@pytest.mark.parametrize("layout", LAYOUTS)
def test_logits_depend_only_on_position_difference(layout):
  cfg = RopeConfig(rot_dim=16, layout=layout)
  q = jnp.broadcast_to(_x((1, 1, 1, 16), seed=1), (1, 9, 1, 16))
  k = jnp.broadcast_to(_x((1, 1, 1, 16), seed=2), (1, 9, 1, 16))
  pos = jnp.arange(9.0)

  def logits(shift):
    qr = apply_rope(q, pos + shift, cfg)[0, :, 0]
    kr = apply_rope(k, pos + shift, cfg)[0, :, 0]
    return qr @ kr.T

  base = logits(0.0)
  # logit(i, j) == logit(i + s, j + s) for an integer shift inside the grid ...
  np.testing.assert_allclose(base[:-3, :-3], base[3:, 3:], atol=1e-4)
  # ... and for a fractional global shift of every position.
  np.testing.assert_allclose(base, logits(2.75), atol=1e-4)
  assert not np.allclose(base[0, 1], base[0, 2])  # It does depend on i - j.


def test_float_positions_align_streams_at_different_rates():
  # A stream at twice the reference rate: its frame 2i is the same instant as reference frame i.
  ref_rate = 31.25
  x = jnp.broadcast_to(_x((1, 1, 2, 16), seed=3), (1, 20, 2, 16))
  cfg = RopeConfig(rot_dim=16)
  ref = apply_rope(x[:, :10], time_positions(10, ref_rate, ref_rate), cfg)
  fast = apply_rope(x, time_positions(20, 2 * ref_rate, ref_rate), cfg)
  np.testing.assert_allclose(fast[:, ::2], ref, atol=1e-5)
  assert not np.allclose(fast[:, 1], ref[:, 1], atol=1e-3)


def test_time_positions_paapi_example():
  # audiogen_omni §7.4: r_a = 31.25, 24-fps stream: position(i=96) == position(j=125) == 125.
  np.testing.assert_allclose(time_positions(200, 24.0, 31.25)[96], 125.0, rtol=1e-6)
  np.testing.assert_allclose(time_positions(200, 31.25, 31.25)[125], 125.0)
  np.testing.assert_allclose(time_positions(4, 8.0, 44100 / 1024)[1], 5.3833, atol=1e-4)


def test_rot_dim_zero_is_identity():
  x = _x()
  np.testing.assert_array_equal(apply_rope(x, jnp.arange(7.0), RopeConfig(rot_dim=0)), x)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_disabled_tokens_are_untouched(layout):
  x = _x()
  enabled = jnp.asarray(np.random.default_rng(1).random((2, 7)) > 0.5)
  cfg = RopeConfig(rot_dim=16, layout=layout)
  pos = jnp.arange(7.0) + 1.0
  y = apply_rope(x, pos, cfg, enabled=enabled)
  full = apply_rope(x, pos, cfg)
  mask = np.asarray(enabled)[..., None, None]
  np.testing.assert_array_equal(np.where(mask, 0, y), np.where(mask, 0, x))
  np.testing.assert_array_equal(np.where(mask, y, 0), np.where(mask, full, 0))


def test_batched_positions_and_dtype():
  x = _x().astype(jnp.bfloat16)
  pos = jnp.stack([jnp.arange(7.0), jnp.arange(7.0) * 2])
  y = apply_rope(x, pos, RopeConfig(rot_dim=8))
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(
    y[1].astype(jnp.float32),
    apply_rope(x[1:], pos[1], RopeConfig(rot_dim=8))[0].astype(jnp.float32))


def test_bad_input_errors():
  with pytest.raises(ValueError, match="rot_dim"):
    RopeConfig(rot_dim=3)
  with pytest.raises(ValueError, match="layout"):
    RopeConfig(rot_dim=4, layout="spiral")
  with pytest.raises(ValueError, match="head_dim"):
    apply_rope(_x(), jnp.arange(7.0), RopeConfig(rot_dim=32))
  with pytest.raises(ValueError, match="positions"):
    apply_rope(_x(), jnp.arange(6.0), RopeConfig(rot_dim=8))


def test_static_positions_bake_the_tables_into_the_program():
  """numpy positions: cos/sin computed once at trace time, not inside every compiled layer."""
  positions = time_positions(7, 8.0, 16.0, offset=1.5)
  assert isinstance(positions, np.ndarray) and positions.dtype == np.float32
  cfg = RopeConfig(rot_dim=8, layout="interleaved")
  x = _x()
  static = jax.jit(lambda x: apply_rope(x, positions, cfg))
  traced = jax.jit(lambda x, p: apply_rope(x, p, cfg))
  assert "cosine(" not in static.lower(x).compile().as_text()
  assert "cosine(" in traced.lower(x, jnp.asarray(positions)).compile().as_text()
  np.testing.assert_allclose(static(x), traced(x, jnp.asarray(positions)), atol=1e-6)
  np.testing.assert_allclose(static(x), _reference_rope(x, positions, 8, 1e4, "interleaved"),
                             atol=1e-5)
