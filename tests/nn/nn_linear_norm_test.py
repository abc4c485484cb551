from __future__ import annotations

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.nn import Dense, FeatureNorm, LayerNorm, RMSNorm


def _x(seed=0, shape=(2, 3, 6)):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def test_dense_known_answer_and_names():
  dense = Dense(6, 4, axes=("embed", "mlp"), use_bias=True,
                bias_init=lambda key, shape, dtype: jnp.arange(4.0, dtype=dtype), rngs=nnx.Rngs(0))
  x = _x()
  expected = np.asarray(x) @ np.asarray(dense.kernel[...]) + np.arange(4.0)
  np.testing.assert_allclose(dense(x), expected, atol=1e-5)
  assert dense.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")
  assert dense.bias.get_metadata()["out_sharding"] == ("mlp",)
  assert Dense(6, 4, axes=("embed", "mlp"), rngs=nnx.Rngs(0)).bias is None


def test_dense_default_init_is_torch_uniform():
  kernel = np.asarray(Dense(64, 256, axes=("embed", "mlp"), rngs=nnx.Rngs(0)).kernel[...])
  bound = 1 / np.sqrt(64)
  assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
  np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.05)


def test_dense_compute_dtype():
  dense = Dense(6, 4, axes=("embed", "mlp"), use_bias=True, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  x = _x()
  y = dense(x)
  assert y.dtype == jnp.bfloat16 and dense.kernel[...].dtype == jnp.float32
  np.testing.assert_allclose(y.astype(jnp.float32), np.asarray(x) @ np.asarray(dense.kernel[...]),
                             atol=5e-2)


def test_dense_bad_input():
  dense = Dense(6, 4, axes=("embed", "mlp"), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="in_features=6"):
    dense(jnp.ones((2, 5)))
  with pytest.raises(ValueError, match="axes"):
    Dense(6, 4, axes=("embed",), rngs=nnx.Rngs(0))


def test_layer_norm_matches_numpy_and_keeps_dtype():
  ln = LayerNorm(6, eps=1e-5)
  ln.scale[...] = jnp.arange(1.0, 7.0)
  ln.bias[...] = jnp.full((6,), 0.5)
  x = np.asarray(_x()) * 3 + 1
  ref = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(ln(jnp.asarray(x)), ref * np.arange(1.0, 7.0) + 0.5, atol=1e-4)
  plain = LayerNorm(6, use_scale=False, use_bias=False)
  assert nnx.state(plain, nnx.Param) == nnx.State({})
  y = plain(jnp.asarray(x, jnp.bfloat16))
  assert y.dtype == jnp.bfloat16
  np.testing.assert_allclose(y.astype(jnp.float32), ref, atol=5e-2)


def test_rms_norm_matches_numpy():
  rms = RMSNorm(6, eps=1e-6)
  rms.scale[...] = jnp.linspace(0.5, 2.0, 6)
  x = np.asarray(_x())
  ref = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * np.linspace(0.5, 2.0, 6)
  np.testing.assert_allclose(rms(jnp.asarray(x)), ref, atol=1e-5)
  with pytest.raises(ValueError, match="dim=6"):
    rms(jnp.ones((2, 4)))


def test_feature_norm_standardises_with_set_statistics_and_is_not_trained():
  norm = FeatureNorm(3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 3)), jnp.float32)
  np.testing.assert_allclose(norm(x), x, atol=1e-7)  # identity until statistics are set
  norm.set_stats([1.0, -2.0, 0.5], [2.0, 0.5, 0.0])
  mask = jnp.asarray([[True] * 5, [True, True, False, False, False]])
  out = np.asarray(norm(x, mask))
  want = (np.asarray(x) - [1.0, -2.0, 0.5]) / [2.0, 0.5, 1e-3]  # std 0 is raised to min_std
  np.testing.assert_allclose(out[0], want[0], rtol=1e-5)
  np.testing.assert_allclose(out[1, :2], want[1, :2], rtol=1e-5)
  np.testing.assert_array_equal(out[1, 2:], 0.0)  # invalid frames
  assert not nnx.state(norm, nnx.Param)  # statistics are Constants, outside the optimizer's tree
  with pytest.raises(ValueError, match="set_stats"):
    norm.set_stats(np.zeros(4), np.ones(4))
  with pytest.raises(ValueError, match="FeatureNorm"):
    norm(jnp.zeros((1, 2, 4)))
