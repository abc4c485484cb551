"""prepare_for_sampling: unstacked layers and kernels in the compute dtype, same velocities."""

from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np

from flowav.nn import (
  Conv1d,
  Dense,
  LayerNorm,
  Stack,
  cast_kernels_to_compute_dtype,
  prepare_for_sampling,
)
from tests.models import audiogen_omni_testlib as omni_lib


class ConvBlock(nnx.Module):
  """A residual block with a norm, a bf16-capable conv and a biased dense layer."""

  def __init__(self, rngs: nnx.Rngs, dtype=None):
    self.norm = LayerNorm(8)
    self.conv = Conv1d(8, 16, 3, dtype=dtype, rngs=rngs)
    self.out = Dense(16, 8, axes=("mlp", "embed"), use_bias=True, dtype=dtype, rngs=rngs)

  def __call__(self, x):
    return x + self.out(jax.nn.gelu(self.conv(self.norm(x)))).astype(x.dtype)


def _x(shape=(2, 5, 8)):
  return jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)


def _kernels(model):
  return {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model))
          if p[-1] == "kernel"}


def _jit_apply(model, x):
  graphdef, state = nnx.split(model)
  return jax.jit(lambda s: nnx.merge(graphdef, s)(x))(state)


def test_unstacked_stack_equals_the_scan_and_names_layers_by_index():
  stack = Stack(lambda r: ConvBlock(r), 3, rngs=nnx.Rngs(0))
  x = _x()
  scanned = _jit_apply(stack, x)
  stack.unstack()
  stack.unstack()  # idempotent
  assert stack.unstacked and len(stack.layers) == 3
  paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(stack))}
  assert "layers/2/conv/kernel" in paths and not any(p.startswith("layers/conv") for p in paths)
  assert stack.layers[1].conv.kernel.shape == (3, 8, 16)  # the layer axis is gone
  assert stack.layers[1].conv.kernel.get_metadata()["out_sharding"] == (
    "conv_window", "embed", "mlp")
  np.testing.assert_allclose(_jit_apply(stack, x), scanned, rtol=1e-6, atol=1e-6)


def test_cast_stores_only_compute_dtype_kernels_in_that_dtype():
  mixed = nnx.List([ConvBlock(nnx.Rngs(0), dtype=jnp.bfloat16), ConvBlock(nnx.Rngs(1))])
  assert cast_kernels_to_compute_dtype(mixed) == 2
  dtypes = {p: v.dtype for p, v in _kernels(mixed).items()}
  assert dtypes == {"0/conv/kernel": jnp.bfloat16, "0/out/kernel": jnp.bfloat16,
                    "1/conv/kernel": jnp.float32, "1/out/kernel": jnp.float32}
  assert mixed[0].out.bias.get_value().dtype == jnp.float32  # biases and norms keep float32
  assert mixed[0].norm.scale.get_value().dtype == jnp.float32
  assert cast_kernels_to_compute_dtype(mixed) == 0  # nothing left to cast


def test_bf16_block_output_is_unchanged_by_casting():
  block = ConvBlock(nnx.Rngs(2), dtype=jnp.bfloat16)
  x = _x()
  before = _jit_apply(block, x)
  cast_kernels_to_compute_dtype(block)
  np.testing.assert_array_equal(_jit_apply(block, x), before)


def _omni_velocity(dtype, prepare):
  model = omni_lib.tiny_model(dtype=dtype)
  batch = omni_lib.make_batch(omni_lib.tiny_config())
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal(batch["audio_latents"].shape), jnp.float32)
  t = jnp.asarray([0.2, 0.5, 0.9], jnp.float32)
  graphdef, state = nnx.split(model)

  def fn(s):
    m = nnx.merge(graphdef, s)
    if prepare:
      prepare_for_sampling(m)
      assert all(stack.unstacked for _, stack in nnx.iter_graph(m) if isinstance(stack, Stack))
      assert any(c.layout == "winograd" for _, c in nnx.iter_graph(m) if isinstance(c, Conv1d))
    return m(x, t, m.conditions(batch)).astype(jnp.float32)

  fn = jax.jit(fn)
  return fn(state), fn.lower(state).compile().as_text()


def _rms(a):
  return float(jnp.sqrt(jnp.mean(jnp.square(a))))


def test_prepared_float32_omni_model_gives_the_same_velocity():
  reference, _ = _omni_velocity(None, prepare=False)
  prepared, compiled = _omni_velocity(None, prepare=True)
  assert _rms(reference) > 0.1  # perturbed zero-init layers: a real velocity
  # Winograd k3 convs round differently: float32 rounding relative to the velocity's scale
  scale = float(jnp.max(jnp.abs(reference)))
  np.testing.assert_allclose(prepared, reference, rtol=1e-5, atol=5e-6 * scale)
  assert " while(" not in compiled  # no layer loop left: each layer reads its own weights


def test_prepared_bfloat16_omni_model_is_as_accurate_as_unprepared():
  """Not bit-identical: unrolled, XLA keeps some activations in float32 across layers where the
  scan's carry rounded them to bfloat16 (excess precision). Both are measured against float32."""
  exact, _ = _omni_velocity(None, prepare=False)
  reference, _ = _omni_velocity("bfloat16", prepare=False)
  prepared, compiled = _omni_velocity("bfloat16", prepare=True)
  error_reference, error_prepared = _rms(reference - exact), _rms(prepared - exact)
  assert 0 < error_reference < 0.05 * _rms(exact)  # bfloat16 rounding, not a broken model
  assert error_prepared <= 1.25 * error_reference
  assert " while(" not in compiled
