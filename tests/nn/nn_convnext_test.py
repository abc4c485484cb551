from __future__ import annotations

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.nn import ConvNeXtV2Block, depthwise_conv1d


def _x(seed=0, shape=(2, 9, 8)):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.fixture(scope="module")
def block():
  block = ConvNeXtV2Block(8, 16, kernel_size=5, rngs=nnx.Rngs(0))
  # GRN starts as the identity (gamma = beta = 0); give it values so its masked norm is exercised.
  rng = np.random.default_rng(1)
  block.grn.gamma[...] = jnp.asarray(rng.standard_normal(16), jnp.float32)
  block.grn.beta[...] = jnp.asarray(rng.standard_normal(16), jnp.float32)
  return block


def test_depthwise_conv_matches_numpy():
  x, kernel = _x(), _x(1, (5, 8))
  out = np.asarray(depthwise_conv1d(x, kernel))
  for b in range(2):
    for c in range(8):
      # torch Conv1d is a cross-correlation: convolve with the flipped kernel.
      ref = np.convolve(np.asarray(x[b, :, c]), np.asarray(kernel[::-1, c]), mode="same")
      np.testing.assert_allclose(out[b, :, c], ref, atol=1e-5)


def test_padding_never_leaks_into_valid_frames(block, jit_call):
  x = _x()
  lengths = np.array([6, 3])
  mask = jnp.asarray(np.arange(9)[None] < lengths[:, None])
  out = jit_call(block, x, mask)
  assert out.shape == x.shape
  np.testing.assert_array_equal(np.where(mask[..., None], 0.0, out), 0.0)
  garbage = jnp.where(mask[..., None], x, 1e3 * _x(5))
  np.testing.assert_allclose(jit_call(block, garbage, mask), out, atol=1e-5)
  # More padding (a longer frame budget) leaves the valid frames unchanged.
  longer = jnp.concatenate([garbage, _x(6, (2, 5, 8))], axis=1)
  long_mask = jnp.concatenate([mask, jnp.zeros((2, 5), bool)], axis=1)
  np.testing.assert_allclose(jit_call(block, longer, long_mask)[:, :9], out, atol=1e-5)
  # Control: without the mask the padded values do reach the valid frames.
  assert not np.allclose(jit_call(block, garbage)[0, :6], out[0, :6], atol=1e-3)


def test_no_mask_and_param_names(block, jit_call):
  x = _x()
  out = jit_call(block, x, jnp.ones((2, 9), bool))
  np.testing.assert_allclose(jit_call(block, x), out, atol=1e-6)
  assert block.dw_kernel.shape == (5, 8)
  assert block.dw_kernel.get_metadata()["out_sharding"] == ("conv_window", "embed")
  assert block.grn.gamma.get_metadata()["out_sharding"] == ("mlp",)


def test_bad_input():
  with pytest.raises(ValueError, match="kernel_size"):
    ConvNeXtV2Block(8, 16, kernel_size=4, rngs=nnx.Rngs(0))
  block = ConvNeXtV2Block(8, 16, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="mask"):
    block(_x(), jnp.ones((2, 8), bool))
  with pytest.raises(ValueError, match="x must be"):
    block(_x(shape=(2, 9, 4)))
