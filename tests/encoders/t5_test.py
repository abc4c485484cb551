"""T5 encoder: parity with transformers' T5EncoderModel (relu and gated-gelu, padded batches) on
random small checkpoints, the relative position buckets, and loading errors naming file and key."""

from __future__ import annotations

import json
import pathlib

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests need torch (the convert extra)")
transformers = pytest.importorskip("transformers", reason="parity tests need transformers>=5.0,<6")

from safetensors.numpy import load_file, save_file  # noqa: E402
from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402

from flowav.encoders import t5  # noqa: E402
from flowav.encoders.weights import WeightsError  # noqa: E402
from flowav.parallel.rules import PARAM_AXES  # noqa: E402

TOL = 1e-4
VOCAB, LENGTH = 50, 20
# max_distance 16 with 8 buckets: positions 20 apart exercise the exact, log-spaced and clipped
# buckets in both directions.
SMALL = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
             relative_attention_num_buckets=8, relative_attention_max_distance=16)


def _save(model_cls, config, path: pathlib.Path, seed: int):
  torch.manual_seed(seed)
  model = model_cls(config).eval()
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():  # LayerNorm weights off 1, so a dropped or swapped norm shows
    for p in model.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=gen))
  model.save_pretrained(path)
  return model


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Three sequences: full length, padded after 13 tokens, padded after 1 token."""
  ids = np.random.default_rng(seed).integers(0, VOCAB, (3, LENGTH)).astype(np.int32)
  mask = np.ones((3, LENGTH), np.int32)
  mask[1, 13:] = 0
  mask[2, 1:] = 0
  return ids, mask


def _reference(model, ids, mask) -> np.ndarray:
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(ids).long(),
                 attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()


@pytest.fixture(scope="module")
def relu_checkpoint(tmp_path_factory):
  path = tmp_path_factory.mktemp("t5_relu")
  return path, _save(transformers.T5EncoderModel, transformers.T5Config(**SMALL), path, seed=0)


@pytest.mark.parametrize("proj", ["relu", "gated-gelu"])
def test_matches_transformers_with_padding(tmp_path, relu_checkpoint, proj):
  if proj == "relu":
    path, ref = relu_checkpoint
  else:
    path = tmp_path
    ref = _save(transformers.T5EncoderModel,
                transformers.T5Config(**SMALL, feed_forward_proj=proj), path, seed=1)
  model = t5.load_t5_encoder(path)
  assert model.cfg.gated == (proj == "gated-gelu")
  assert model.cfg.act == ("gelu_new" if model.cfg.gated else "relu")
  ids, mask = _batch()
  want = _reference(ref, ids, mask)
  got = np.asarray(nnx.jit(lambda m, i, k: m(i, k))(model, jnp.asarray(ids), jnp.asarray(mask)))
  assert got.shape == (3, LENGTH, 32)
  # Every position matches, padded ones included (transformers masks keys, not queries).
  assert np.max(np.abs(got - want)) < TOL
  # The mask matters: the same ids without padding give different valid outputs.
  unpadded = np.asarray(model(jnp.asarray(ids)))
  assert np.max(np.abs(unpadded[1, :13] - got[1, :13])) > 1e-2
  assert np.max(np.abs(unpadded[0] - got[0])) < TOL


def test_full_seq2seq_file_loads_encoder_only(tmp_path):
  config = transformers.T5Config(**SMALL, feed_forward_proj="gated-gelu")
  ref = _save(transformers.T5ForConditionalGeneration, config, tmp_path, seed=2)
  model = t5.load_t5_encoder(tmp_path)
  ids, mask = _batch(seed=2)
  want = _reference(ref.get_encoder(), ids, mask)
  assert np.max(np.abs(np.asarray(model(ids, mask)) - want)) < TOL


@pytest.mark.parametrize("buckets, max_distance, length", [(8, 16, 40), (32, 128, 300), (32, 20, 64)])
def test_relative_position_buckets_match_transformers(buckets, max_distance, length):
  rel = torch.arange(length)[None] - torch.arange(length)[:, None]
  want = T5Attention._relative_position_bucket(rel, True, buckets, max_distance).numpy()
  got = t5.relative_position_buckets(length, length, buckets, max_distance)
  np.testing.assert_array_equal(got, want)
  assert got.min() == 0 and got.max() == buckets - 1


def test_params_carry_logical_names(relu_checkpoint):
  model = t5.load_t5_encoder(relu_checkpoint[0])
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  assert len(flat) == 11  # embed, rel_bias, final norm; stacked q, k, v, out, wi, wo, 2 norms
  for path, var in flat:
    names = var.get_metadata().get("out_sharding")
    assert names is not None and len(names) == var.ndim, (path, names)
    assert all(n is None or n in PARAM_AXES for n in names), (path, names)


def _copy_checkpoint(src: pathlib.Path, dst: pathlib.Path, *, drop_key=None, reshape_key=None,
                     config_change=None) -> pathlib.Path:
  tensors = load_file(str(src / "model.safetensors"))
  if drop_key:
    del tensors[drop_key]
  if reshape_key:
    tensors[reshape_key] = tensors[reshape_key][:-1].copy()
  save_file(tensors, str(dst / "model.safetensors"))
  config = json.loads((src / "config.json").read_text())
  for key, value in (config_change or {}).items():
    if value is None:
      config.pop(key)
    else:
      config[key] = value
  (dst / "config.json").write_text(json.dumps(config))
  return dst


@pytest.mark.parametrize("change, words", [
  (dict(drop_key="encoder.block.1.layer.1.DenseReluDense.wo.weight"),
   ["missing key", "'encoder.block.1.layer.1.DenseReluDense.wo.weight'", "model.safetensors"]),
  (dict(reshape_key="encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
   ["'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight'", "(7, 4)", "(8, 4)",
    "model.safetensors"]),
  (dict(config_change={"d_kv": None}), ["missing config field 'd_kv'", "config.json"]),
  (dict(config_change={"feed_forward_proj": "gated-gelu"}),
   ["missing key", "'encoder.block.0.layer.1.DenseReluDense.wi_0.weight'"]),
  (dict(config_change={"feed_forward_proj": "gated-mish"}),
   ["'feed_forward_proj'='gated-mish'", "'mish'", "config.json"]),
  (dict(config_change={"num_layers": 1}), ["unexpected keys", "'encoder.block.1."]),
  (dict(config_change={"num_heads": "4"}), ["'num_heads'='4' must be int", "config.json"]),
])
def test_bad_checkpoint_names_file_and_key(relu_checkpoint, tmp_path, change, words):
  path = _copy_checkpoint(relu_checkpoint[0], tmp_path, **change)
  with pytest.raises(WeightsError) as err:
    t5.load_t5_encoder(path)
  assert all(w in str(err.value) for w in words), str(err.value)
  assert str(tmp_path) in str(err.value)


def test_mask_shape_is_checked(relu_checkpoint):
  model = t5.load_t5_encoder(relu_checkpoint[0])
  ids, mask = _batch()
  with pytest.raises(ValueError, match="mask shape"):
    model(ids, mask[:, :-1])
