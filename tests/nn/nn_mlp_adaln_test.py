from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.nn import AdaLNModulation, FrameRows, Mlp, SwiGLU, gate, modulate


def _x(seed=0, shape=(2, 3, 8)):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _count(module_fn) -> dict[str, int]:
  """Parameter counts per top-level attribute, from shapes only (no weights allocated)."""
  state = nnx.state(nnx.eval_shape(module_fn), nnx.Param)
  counts: dict[str, int] = {}
  for path, var in nnx.to_flat_state(state):
    counts[path[0]] = counts.get(path[0], 0) + int(np.prod(var.shape))
  return counts


def test_swiglu_param_count_vssflow():
  # vssflow §2.6: Lin(1536 -> 12288, bias) = 18,886,656 and Lin(6144 -> 1536, bias) = 9,438,720.
  counts = _count(lambda: SwiGLU(1536, 6144, rngs=nnx.Rngs(0)))
  assert counts == {"proj": 18_886_656, "out": 9_438_720}


def test_swiglu_known_answer(jit_call):
  ff = SwiGLU(8, 5, out_dim=3, rngs=nnx.Rngs(0))
  x = _x()
  h = np.asarray(x) @ np.asarray(ff.proj.kernel[...]) + np.asarray(ff.proj.bias[...])
  a, b = h[..., :5], h[..., 5:]
  ref = (a * b / (1 + np.exp(-b))) @ np.asarray(ff.out.kernel[...]) + np.asarray(ff.out.bias[...])
  np.testing.assert_allclose(jit_call(ff, x), ref, atol=1e-5)
  assert _count(lambda: SwiGLU(8, 5, use_bias=False, rngs=nnx.Rngs(0))) == {
    "proj": 80, "out": 40}


@pytest.mark.parametrize("activation,fn", [
  ("gelu_tanh", lambda h: 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))),
  ("relu", lambda h: np.maximum(h, 0)),
  ("silu", lambda h: h / (1 + np.exp(-h))),
])
def test_mlp_known_answer(activation, fn, jit_call):
  mlp = Mlp(8, 16, out_dim=4, activation=activation, rngs=nnx.Rngs(0))
  x = np.asarray(_x())
  h = fn(x @ np.asarray(mlp.fc1.kernel[...]) + np.asarray(mlp.fc1.bias[...]))
  ref = h @ np.asarray(mlp.fc2.kernel[...]) + np.asarray(mlp.fc2.bias[...])
  np.testing.assert_allclose(jit_call(mlp, jnp.asarray(x)), ref, atol=1e-5)
  assert mlp.fc1.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")
  assert mlp.fc2.kernel.get_metadata()["out_sharding"] == ("mlp", "embed")


def test_mlp_exact_gelu_differs_from_tanh_and_bad_name():
  x = _x() * 2
  exact = Mlp(8, 16, activation="gelu", rngs=nnx.Rngs(0))
  approx = Mlp(8, 16, activation="gelu_tanh", rngs=nnx.Rngs(0))
  assert not np.allclose(exact(x), approx(x), atol=1e-7)
  np.testing.assert_allclose(exact(x), approx(x), atol=1e-2)
  with pytest.raises(ValueError, match="activation"):
    Mlp(8, 16, activation="swish2", rngs=nnx.Rngs(0))


def test_adaln_zero_init_gives_zeros_and_identity_block():
  mod = AdaLNModulation(8, 6, num_chunks=6, rngs=nnx.Rngs(0))
  chunks = mod(_x(shape=(2, 8)))
  assert len(chunks) == 6 and all(c.shape == (2, 1, 6) for c in chunks)
  assert all(np.all(np.asarray(c) == 0) for c in chunks)
  shift, scale, g = chunks[:3]
  x = _x(1, (2, 4, 6))
  np.testing.assert_array_equal(modulate(x, shift, scale), x)
  np.testing.assert_array_equal(gate(x, g), 0.0)


def test_adaln_chunks_split_the_projection_in_order():
  mod = AdaLNModulation(8, 4, num_chunks=3, zero_init=False, rngs=nnx.Rngs(0))
  c = _x(shape=(2, 8))
  full = np.asarray(jax.nn.silu(c)) @ np.asarray(mod.proj.kernel[...])
  chunks = mod(c)
  for i, chunk in enumerate(chunks):
    np.testing.assert_allclose(chunk[:, 0], full[:, 4 * i:4 * (i + 1)], atol=1e-5)
  per_frame = mod(_x(shape=(2, 5, 8)))  # Per-frame conditioning (audiogen_omni §2.3).
  assert all(p.shape == (2, 5, 4) for p in per_frame)
  with pytest.raises(ValueError, match="c must be"):
    mod(jnp.ones((8,)))


def test_modulate_and_gate_known_answers():
  x = jnp.asarray([[[1.0, 2.0]]])
  np.testing.assert_allclose(modulate(x, jnp.asarray([[[0.5, -1.0]]]), jnp.asarray([[[1.0, 0.5]]])),
                             [[[2.5, 2.0]]])
  np.testing.assert_allclose(gate(x, jnp.asarray([[[3.0, 0.0]]])), [[[3.0, 0.0]]])


def test_adaln_per_example_projects_in_float32_and_takes_only_vectors(jit_call):
  mod = AdaLNModulation(8, 4, num_chunks=2, zero_init=False, dtype=jnp.bfloat16,
                        per_example=True, rngs=nnx.Rngs(0))
  assert mod.proj.dtype is None  # nn.prepare_for_sampling leaves its kernel float32
  c = jnp.asarray(np.random.default_rng(0).standard_normal((3, 8)), jnp.float32)
  shift, scale = jit_call(mod, c)
  assert shift.dtype == jnp.float32 and shift.shape == (3, 1, 4)
  h = jax.nn.silu(c) @ mod.proj.kernel[...] + mod.proj.bias[...]
  np.testing.assert_allclose(jnp.concatenate([shift, scale], -1)[:, 0], h, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r"per_example=True.*\[B, Dc\]"):
    mod(jnp.zeros((3, 5, 8)))


def test_adaln_on_frame_rows_equals_adaln_on_every_frame(jit_call):
  """FrameRows (AudioGen-Omni's c_a at the sync rate): project the distinct rows, then gather."""
  mod = AdaLNModulation(8, 4, num_chunks=3, zero_init=False, rngs=nnx.Rngs(0))
  rows = _x(1, (2, 5, 8))
  index = jnp.asarray([0, 0, 1, 2, 2, 3, 4, 4, 4], jnp.int32)  # 9 frames over 5 rows
  c = FrameRows(rows, index)
  assert c.dense().shape == (2, 9, 8)
  np.testing.assert_array_equal(c.dense()[:, 5], rows[:, 3])
  got, want = jit_call(mod, c), jit_call(mod, c.dense())
  assert [g.shape for g in got] == [(2, 9, 4)] * 3
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)
  per_example = AdaLNModulation(8, 4, num_chunks=2, per_example=True, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="FrameRows"):
    per_example(c)
