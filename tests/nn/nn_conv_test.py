"""Conv1d / ConvSwiGLU (flowav/nn/conv.py): torch Conv1d semantics, masks, dtype, backward."""

from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav import nn


def _normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _reference_conv(x, kernel, bias):
  """torch Conv1d(padding=K//2) on channel-last x, written as explicit sums (float64)."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  k_size, length = kernel.shape[0], x.shape[1]
  out = np.zeros((x.shape[0], length, kernel.shape[2])) + np.asarray(bias, np.float64)
  for t in range(length):
    for k in range(k_size):
      s = t + k - k_size // 2
      if 0 <= s < length:
        out[:, t] += x[:, s] @ kernel[k]
  return out


@pytest.mark.parametrize("kernel_size", [1, 3, 7])
def test_conv1d_matches_torch_semantics(kernel_size, jit_call):
  conv = nn.Conv1d(5, 6, kernel_size, rngs=nnx.Rngs(0))
  x = _normal(1, (2, 9, 5))
  expected = _reference_conv(x, conv.kernel[...], conv.bias[...])
  np.testing.assert_allclose(jit_call(conv, x), expected, atol=1e-5)
  bound = 1.0 / np.sqrt(kernel_size * 5)  # torch default init
  assert np.abs(conv.kernel[...]).max() <= bound and np.abs(conv.bias[...]).max() <= bound
  assert conv.kernel.get_metadata()["out_sharding"] == ("conv_window", "embed", "mlp")


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_narrowing_conv_uses_the_shifted_output_form_and_matches_torch(kernel_size, jit_call):
  conv = nn.Conv1d(6, 4, kernel_size, rngs=nnx.Rngs(0))
  assert conv.shifted_output and not nn.Conv1d(4, 4, 3, rngs=nnx.Rngs(0)).shifted_output
  x = _normal(1, (2, 9, 6))
  mask = jnp.asarray([[1] * 9, [1] * 5 + [0] * 4], bool)
  expected = _reference_conv(x * mask[..., None], conv.kernel[...], conv.bias[...])
  np.testing.assert_allclose(jit_call(conv, x, mask), expected, atol=1e-5)


def test_laid_out_taps_give_the_same_output_and_keep_sharding_names(jit_call):
  conv = nn.Conv1d(6, 4, 5, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  x = _normal(1, (2, 9, 6))
  before = jit_call(conv, x)
  conv.lay_out_for_sampling()
  conv.lay_out_for_sampling()  # idempotent
  assert conv.layout == "taps" and conv.kernel.shape == (6, 20)
  assert conv.kernel.get_metadata()["out_sharding"] == ("embed", "mlp")
  np.testing.assert_array_equal(jit_call(conv, x), before)
  widening = nn.Conv1d(4, 6, 5, rngs=nnx.Rngs(0))
  widening.lay_out_for_sampling()  # im2col layer: nothing to lay out
  assert widening.layout == "kernel" and widening.kernel.shape == (5, 4, 6)


@pytest.mark.parametrize("length", [1, 2, 9, 10])
@pytest.mark.parametrize("shape", [(6, 4), (4, 6)])
def test_winograd_k3_layout_matches_the_direct_conv(shape, length, jit_call):
  """F(2, 3): every k3 conv, narrowing or widening, odd or even length, with a mask and bias."""
  conv = nn.Conv1d(*shape, 3, rngs=nnx.Rngs(0))
  x = _normal(1, (2, length, shape[0]))
  mask = jnp.arange(length)[None] < jnp.asarray([[length], [max(length - 3, 1)]])
  before = jit_call(conv, x, mask)
  conv.lay_out_for_sampling()
  conv.lay_out_for_sampling()  # idempotent
  assert conv.layout == "winograd" and conv.kernel.shape == (4, *shape)
  assert conv.kernel.get_metadata()["out_sharding"] == ("conv_window", "embed", "mlp")
  np.testing.assert_allclose(jit_call(conv, x, mask), before, rtol=1e-5, atol=1e-5)


def test_winograd_bfloat16_error_is_of_the_direct_convs_order(jit_call):
  """Rounding the transformed inputs and taps to bfloat16 costs about what rounding the direct
  conv's inputs and taps does; both measured against the float32 conv."""
  exact = nn.Conv1d(64, 96, 3, rngs=nnx.Rngs(3))
  direct = nn.Conv1d(64, 96, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(3))
  x = _normal(2, (2, 40, 64))
  reference = jit_call(exact, x)
  error_direct = float(jnp.std(jit_call(direct, x).astype(jnp.float32) - reference))
  direct.lay_out_for_sampling()
  error_winograd = float(jnp.std(jit_call(direct, x).astype(jnp.float32) - reference))
  assert 0 < error_direct < 0.01 * float(jnp.std(reference))
  assert error_winograd < 2.5 * error_direct


def test_conv1d_mask_reads_padded_frames_as_zero(jit_call):
  conv = nn.Conv1d(4, 4, 3, rngs=nnx.Rngs(0))
  x = _normal(1, (1, 6, 4))
  mask = jnp.asarray([[1, 1, 1, 1, 0, 0]], bool)
  out = jit_call(conv, x, mask)
  np.testing.assert_allclose(out, jit_call(conv, x * mask[..., None]), atol=1e-6)
  out2 = jit_call(conv, x.at[0, 4:].set(50.0), mask)
  np.testing.assert_allclose(out2[0, :4], out[0, :4], atol=1e-6)
  assert not np.allclose(jit_call(conv, x.at[0, 4:].set(50.0))[0, 3], out[0, 3], atol=1e-3)


def test_conv_swiglu_masks_both_convs_and_supports_bfloat16(jit_call):
  ffn = nn.ConvSwiGLU(8, 12, 3, rngs=nnx.Rngs(0))
  x = _normal(1, (2, 7, 8))
  mask = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], bool)
  out = jit_call(ffn, x, mask)
  out2 = jit_call(ffn, x.at[1, 4:].set(-9.0), mask)
  np.testing.assert_allclose(out2[1, :4], out[1, :4], atol=1e-6)  # also frame 3, 2 convs deep
  a, b = np.split(_reference_conv(x, ffn.proj.kernel[...], 0.0), 2, axis=-1)
  expected = _reference_conv(a * b / (1 + np.exp(-b)), ffn.out.kernel[...], 0.0)
  np.testing.assert_allclose(jit_call(ffn, x), expected, atol=1e-4)
  bf16 = nn.ConvSwiGLU(8, 12, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  low = jit_call(bf16, x)
  assert low.dtype == jnp.bfloat16
  assert np.abs(np.asarray(low, np.float32) - expected).max() < 0.05 * np.abs(expected).max()


def test_conv1d_gradients_match_autodiff_of_the_reference():
  conv = nn.Conv1d(3, 2, 3, rngs=nnx.Rngs(0))
  x = _normal(1, (2, 5, 3))
  graphdef, params = nnx.split(conv)

  def loss(params, x):
    return jnp.sum(jnp.sin(nnx.merge(graphdef, params)(x)))

  def reference(kernel, bias, x):
    windows = jnp.stack([jnp.pad(x, ((0, 0), (1, 1), (0, 0)))[:, k:k + 5] for k in range(3)], 2)
    return jnp.sum(jnp.sin(jnp.einsum("btkc,kco->bto", windows, kernel) + bias))

  g_params, g_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
  r_kernel, r_bias, r_x = jax.grad(reference, argnums=(0, 1, 2))(
    conv.kernel[...], conv.bias[...], x)
  np.testing.assert_allclose(g_params["kernel"][...], r_kernel, atol=1e-5)
  np.testing.assert_allclose(g_params["bias"][...], r_bias, atol=1e-5)
  np.testing.assert_allclose(g_x, r_x, atol=1e-5)


def test_conv1d_errors():
  with pytest.raises(ValueError, match="odd"):
    nn.Conv1d(3, 2, 4, rngs=nnx.Rngs(0))
  conv = nn.Conv1d(3, 2, 3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"\[B, L, 3\]"):
    conv(jnp.zeros((1, 4, 5)))
  with pytest.raises(ValueError, match="mask"):
    conv(jnp.zeros((1, 4, 3)), jnp.ones((1, 5), bool))
