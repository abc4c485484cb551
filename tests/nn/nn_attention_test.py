from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.nn import Attention, RopeConfig, attention_weights
from flowav.nn import dot_product_attention as eager_attention

dot_product_attention = jax.jit(eager_attention, static_argnames="scale")


def _normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _reference(q, k, v, mask=None, bias=None):
  """MHA in float64 numpy, KV heads repeated with torch `repeat_interleave` semantics."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  groups = q.shape[2] // k.shape[2]
  k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
  logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if bias is not None:
    logits = logits + np.asarray(bias, np.float64)
  if mask is not None:
    logits = np.where(np.asarray(mask)[:, None, None, :], logits, -np.inf)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w = w / w.sum(-1, keepdims=True)
  return np.einsum("bhqk,bkhd->bqhd", w, v)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)])
def test_matches_reference(heads, kv_heads):
  q, k, v = _normal(0, (2, 5, heads, 8)), _normal(1, (2, 6, kv_heads, 8)), _normal(
    2, (2, 6, kv_heads, 3))
  mask = jnp.asarray([[1, 1, 0, 1, 1, 1], [1, 0, 0, 0, 1, 1]], bool)
  bias = _normal(3, (1, heads, 5, 6))
  out = dot_product_attention(q, k, v, key_mask=mask, bias=bias)
  assert out.shape == (2, 5, heads, 3)
  np.testing.assert_allclose(out, _reference(q, k, v, mask, bias), atol=1e-5)


def test_attention_weights_are_the_softmax_used():
  q, k, v = _normal(0, (2, 4, 4, 8)), _normal(1, (2, 6, 2, 8)), _normal(2, (2, 6, 2, 3))
  mask = jnp.asarray([[1, 1, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]], bool)
  weights = jax.jit(attention_weights)(q, k, key_mask=mask)
  assert weights.shape == (2, 4, 4, 6)
  np.testing.assert_allclose(weights[0].sum(-1), 1.0, rtol=1e-6)
  np.testing.assert_array_equal(weights[0, ..., 3:5], 0.0)
  np.testing.assert_array_equal(weights[1], 0.0)
  v_rep = np.repeat(np.asarray(v), 2, axis=2)  # repeat_interleave of KV heads.
  np.testing.assert_allclose(np.einsum("bhqk,bkhd->bqhd", weights, v_rep),
                             dot_product_attention(q, k, v, key_mask=mask), atol=1e-5)


def test_masked_keys_carry_no_information():
  q, k, v = _normal(0, (2, 4, 4, 8)), _normal(1, (2, 6, 2, 8)), _normal(2, (2, 6, 2, 8))
  mask = jnp.asarray([[1, 1, 1, 0, 0, 1], [0, 1, 1, 1, 1, 1]], bool)
  out = dot_product_attention(q, k, v, key_mask=mask)
  k2 = jnp.where(mask[:, :, None, None], k, 100.0 * _normal(5, k.shape))
  v2 = jnp.where(mask[:, :, None, None], v, 1e4)
  np.testing.assert_array_equal(dot_product_attention(q, k2, v2, key_mask=mask), out)
  assert not np.allclose(dot_product_attention(q, k2, v2), out)  # Control: unmasked, it leaks.


def test_fully_masked_rows_are_zero_with_finite_grads():
  q, k, v = _normal(0, (2, 3, 2, 4)), _normal(1, (2, 5, 2, 4)), _normal(2, (2, 5, 2, 4))
  mask = jnp.asarray([[0, 0, 0, 0, 0], [1, 1, 0, 0, 1]], bool)
  out = dot_product_attention(q, k, v, key_mask=mask)
  np.testing.assert_array_equal(out[0], 0.0)
  assert np.all(np.isfinite(out)) and np.any(out[1] != 0)
  # Rows whose keys all have -inf bias also give 0, not NaN.
  bias = jnp.where(jnp.arange(5) < 5, -jnp.inf, 0.0)
  np.testing.assert_array_equal(dot_product_attention(q, k, v, bias=bias), 0.0)
  grads = jax.jit(jax.grad(lambda q, k, v: eager_attention(q, k, v, key_mask=mask).sum(),
                           argnums=(0, 1, 2)))(q, k, v)
  assert all(np.all(np.isfinite(g)) for g in grads)


def _plain_attention(q, k, v, mask=None, bias=None):
  """Textbook MHA in jnp, differentiated by autodiff: the reference for the hand-written VJP."""
  groups = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if bias is not None:
    logits = logits + bias
  if mask is not None:
    logits = jnp.where(mask[:, None, None, :], logits, -1e30)
  return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), v)


@pytest.mark.parametrize("with_mask,with_bias", [(False, False), (True, False), (False, True),
                                                 (True, True)])
def test_gradients_match_autodiff_of_plain_attention(with_mask, with_bias):
  q, k, v = _normal(0, (2, 5, 4, 8)), _normal(1, (2, 6, 2, 8)), _normal(2, (2, 6, 2, 8))
  mask = jnp.asarray([[1, 1, 0, 1, 1, 1], [1, 0, 0, 0, 1, 1]], bool) if with_mask else None
  bias = _normal(3, (1, 4, 5, 6)) if with_bias else None
  cotangent = _normal(4, (2, 5, 4, 8))

  def grads(fn):
    loss = lambda q, k, v, b: jnp.sum(fn(q, k, v, mask, b) * cotangent)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3) if with_bias else (0, 1, 2)))(
      q, k, v, bias)

  ours = grads(lambda q, k, v, m, b: eager_attention(q, k, v, key_mask=m, bias=b))
  for got, want in zip(ours, grads(_plain_attention), strict=True):
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


def test_bfloat16_gradients_stay_close_to_float32():
  """bf16 q/k/v: the backward matmuls take bf16 inputs (float32 accumulation), like the forward."""
  q, k, v = _normal(0, (2, 9, 4, 16)), _normal(1, (2, 11, 2, 16)), _normal(2, (2, 11, 2, 16))
  mask = jnp.asarray([[1] * 11, [1] * 6 + [0] * 5], bool)
  cotangent = _normal(4, (2, 9, 4, 16))
  loss = lambda q, k, v: jnp.sum(eager_attention(q, k, v, key_mask=mask).astype(jnp.float32)
                                 * cotangent)
  want = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
  got = jax.grad(loss, argnums=(0, 1, 2))(*(a.astype(jnp.bfloat16) for a in (q, k, v)))
  for g, w in zip(got, want, strict=True):
    assert g.dtype == jnp.bfloat16
    err = np.linalg.norm(np.asarray(g, np.float32) - w) / np.linalg.norm(w)
    assert err < 2e-2, err


def test_neg_inf_bias_equals_mask_and_bias_adds_to_logits():
  q, k, v = _normal(0, (1, 3, 2, 4)), _normal(1, (1, 5, 2, 4)), _normal(2, (1, 5, 2, 4))
  mask = jnp.asarray([[1, 0, 1, 1, 0]], bool)
  bias = jnp.where(mask, 0.0, -jnp.inf)[:, None, None, :]
  np.testing.assert_allclose(dot_product_attention(q, k, v, bias=bias),
                             dot_product_attention(q, k, v, key_mask=mask), atol=1e-6)
  # A bias equal to the logits' own value doubles them: same as scaling by 2.
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / 2.0
  np.testing.assert_allclose(dot_product_attention(q, k, v, bias=logits),
                             dot_product_attention(q, k, v, scale=1.0), atol=1e-5)


def test_per_head_bias_with_grouped_heads():
  q, k, v = _normal(0, (2, 3, 6, 4)), _normal(1, (2, 5, 2, 4)), _normal(2, (2, 5, 2, 4))
  bias = _normal(3, (6, 3, 5))  # [H, Lq, Lk], broadcast over batch.
  np.testing.assert_allclose(dot_product_attention(q, k, v, bias=bias),
                             _reference(q, k, v, bias=bias), atol=1e-5)


def test_gqa_with_duplicated_kv_weights_equals_mha(jit_call):
  gqa = Attention(16, 4, 8, kv_dim=12, num_kv_heads=2, rngs=nnx.Rngs(0))
  mha = Attention(16, 4, 8, kv_dim=12, num_kv_heads=4, rngs=nnx.Rngs(1))
  mha.q.kernel[...] = gqa.q.kernel[...]
  mha.out.kernel[...] = gqa.out.kernel[...]
  for name in ("k", "v"):
    kernel = getattr(gqa, name).kernel[...].reshape(12, 2, 8)
    getattr(mha, name).kernel[...] = jnp.repeat(kernel, 2, axis=1).reshape(12, 32)
  x, ctx = _normal(2, (2, 5, 16)), _normal(3, (2, 7, 12))
  np.testing.assert_allclose(jit_call(gqa, x, ctx), jit_call(mha, x, ctx), atol=1e-5)


def test_query_only_rope_keeps_keys_position_free(jit_call):
  attn = Attention(16, 2, 8, kv_dim=12, num_kv_heads=1, rngs=nnx.Rngs(0))
  rope = RopeConfig(rot_dim=4)
  x, ctx = _normal(1, (1, 5, 16)), _normal(2, (1, 7, 12))
  perm = np.random.default_rng(0).permutation(7)
  out = jit_call(attn, x, ctx, rope=rope, q_positions=jnp.arange(5.0))
  np.testing.assert_allclose(
    jit_call(attn, x, ctx[:, perm], rope=rope, q_positions=jnp.arange(5.0)), out, atol=1e-5)
  # Control: with positions on the keys too, the order of the context matters.
  kpos = jnp.arange(7.0)
  both = jit_call(attn, x, ctx, rope=rope, q_positions=jnp.arange(5.0), k_positions=kpos)
  permuted = jit_call(attn, x, ctx[:, perm], rope=rope, q_positions=jnp.arange(5.0),
                      k_positions=kpos)
  assert not np.allclose(both, permuted, atol=1e-4)


def test_self_attention_rope_is_shift_invariant(jit_call):
  attn = Attention(16, 2, 8, qk_norm="rms", rngs=nnx.Rngs(0))
  x = _normal(1, (2, 6, 16))
  rope = RopeConfig(rot_dim=8, layout="interleaved")
  pos = jnp.arange(6.0)
  out = jit_call(attn, x, rope=rope, q_positions=pos, k_positions=pos)
  shifted = jit_call(attn, x, rope=rope, q_positions=pos + 7.5, k_positions=pos + 7.5)
  np.testing.assert_allclose(shifted, out, atol=1e-5)
  assert not np.allclose(out, jit_call(attn, x), atol=1e-4)


def test_module_masks_and_shapes(jit_call):
  attn = Attention(16, 4, 8, out_dim=10, use_bias=True, qk_norm="layer", rngs=nnx.Rngs(0))
  x = _normal(1, (2, 6, 16))
  mask = jnp.asarray([[1] * 6, [1, 1, 1, 0, 0, 0]], bool)
  out = jit_call(attn, x, key_mask=mask)
  assert out.shape == (2, 6, 10)
  x2 = x.at[1, 3:].set(50.0)
  np.testing.assert_allclose(jit_call(attn, x2, key_mask=mask)[1, :3], out[1, :3], atol=1e-5)
  heads_only = Attention(16, 4, 8, use_out_proj=False, rngs=nnx.Rngs(0))
  assert jit_call(heads_only, x).shape == (2, 6, 32) and heads_only.out is None


def test_param_axes_self_vs_cross():
  self_attn = Attention(16, 4, 8, rngs=nnx.Rngs(0))
  cross = Attention(16, 4, 8, kv_dim=12, num_kv_heads=2, rngs=nnx.Rngs(0))
  spec = nnx.get_partition_spec(nnx.state(self_attn.k, nnx.Param))["kernel"].get_value()
  assert tuple(spec) == ("embed", "kv_heads")
  assert cross.k.kernel.get_metadata()["out_sharding"] == ("kv", "kv_heads")
  assert cross.q.kernel.get_metadata()["out_sharding"] == ("embed", "heads")
  assert cross.out.kernel.get_metadata()["out_sharding"] == ("heads", "embed")
  assert cross.k.kernel.shape == (12, 16)


def test_bad_input_errors():
  with pytest.raises(ValueError, match="num_kv_heads"):
    Attention(16, 4, 8, num_kv_heads=3, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="qk_norm"):
    Attention(16, 4, 8, qk_norm="batch", rngs=nnx.Rngs(0))
  q = _normal(0, (1, 2, 4, 4))
  with pytest.raises(ValueError, match="key_mask"):
    eager_attention(q, q, q, key_mask=jnp.ones((1, 3), bool))
  with pytest.raises(ValueError, match="bias"):
    eager_attention(q, q, q, bias=jnp.zeros((3, 2, 2)))
