from __future__ import annotations

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.nn import Constant, Embed, FourierFeatures, TimestepEmbedder, timestep_sinusoidal


def test_timestep_sinusoidal_known_answer():
  t = jnp.asarray([0.0, 0.25, 1.0])
  emb = timestep_sinusoidal(t, 8)
  assert emb.shape == (3, 8)
  freqs = np.exp(-np.log(10000.0) * np.arange(4) / 4)
  args = 1000.0 * np.asarray(t)[:, None] * freqs
  np.testing.assert_allclose(emb, np.concatenate([np.cos(args), np.sin(args)], -1), atol=2e-4)
  np.testing.assert_array_equal(emb[0], [1, 1, 1, 1, 0, 0, 0, 0])
  odd = timestep_sinusoidal(t, 7)
  assert odd.shape == (3, 7) and np.all(np.asarray(odd[:, -1]) == 0)
  with pytest.raises(ValueError, match="t must be"):
    timestep_sinusoidal(jnp.ones((2, 1)), 8)


def test_fourier_features_are_frozen_constants():
  ff = FourierFeatures(16, seed=3)
  assert isinstance(ff.weight, Constant) and not isinstance(ff.weight, nnx.Param)
  assert len(nnx.to_flat_state(nnx.state(ff, nnx.Param))) == 0
  assert len(nnx.to_flat_state(nnx.state(ff, Constant))) == 1
  np.testing.assert_array_equal(ff.weight[...], FourierFeatures(16, seed=3).weight[...])
  assert not np.allclose(ff.weight[...], FourierFeatures(16, seed=4).weight[...])
  t = jnp.asarray([0.0, 0.3])
  args = 2 * np.pi * np.asarray(t)[:, None] * np.asarray(ff.weight[...])
  np.testing.assert_allclose(ff(t), np.concatenate([np.cos(args), np.sin(args)], -1), atol=1e-5)


def test_timestep_embedder_fourier_trainable_tree_excludes_weights(jit_call):
  emb = TimestepEmbedder(32, 24, kind="fourier", rngs=nnx.Rngs(0))
  paths = {"/".join(p) for p, _ in nnx.to_flat_state(nnx.state(emb, nnx.Param))}
  assert paths == {"fc1/kernel", "fc1/bias", "fc2/kernel", "fc2/bias"}
  graphdef, params, rest = nnx.split(emb, nnx.Param, ...)
  assert {"/".join(p) for p, _ in nnx.to_flat_state(rest)} == {"features/weight"}
  out = jit_call(emb, jnp.asarray([0.1, 0.9]))
  assert out.shape == (2, 24) and not np.allclose(out[0], out[1])
  assert emb.fc1.kernel.get_metadata()["out_sharding"] == ("freq", "mlp")
  assert emb.fc2.kernel.get_metadata()["out_sharding"] == ("mlp", "embed")
  del graphdef, params


def test_timestep_embedder_sinusoidal_and_errors(jit_call):
  emb = TimestepEmbedder(16, 8, rngs=nnx.Rngs(0))
  assert emb.features is None
  t = jnp.asarray([0.2, 0.7])
  feats = np.asarray(timestep_sinusoidal(t, 16))
  ref = np.asarray(emb.fc1.kernel[...]).T @ feats.T
  h = ref.T + np.asarray(emb.fc1.bias[...])
  h = h / (1 + np.exp(-h))
  ref = h @ np.asarray(emb.fc2.kernel[...]) + np.asarray(emb.fc2.bias[...])
  np.testing.assert_allclose(jit_call(emb, t), ref, atol=1e-5)
  with pytest.raises(ValueError, match="kind"):
    TimestepEmbedder(16, 8, kind="learned", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="even"):
    TimestepEmbedder(15, 8, kind="fourier", rngs=nnx.Rngs(0))


def test_embed_lookup_and_out_of_range():
  embed = Embed(5, 3, rngs=nnx.Rngs(0))
  table = np.asarray(embed.embedding[...])
  ids = jnp.asarray([[0, 4], [2, 2]])
  np.testing.assert_array_equal(embed(ids), table[np.asarray(ids)])
  assert embed.embedding.get_metadata()["out_sharding"] == ("vocab", "embed")
  bad = embed(jnp.asarray([5, -1, 1]))
  assert np.all(np.isnan(bad[:2])) and np.all(np.isfinite(bad[2]))
  with pytest.raises(ValueError, match="integers"):
    embed(jnp.asarray([0.0, 1.0]))
  positions = Embed(16, 4, axes=(None, "embed"), init=nnx.initializers.zeros_init(),
                    rngs=nnx.Rngs(0))
  np.testing.assert_array_equal(positions(jnp.arange(3)), 0.0)
