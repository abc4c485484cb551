"""CLIP vision encoder: parity with transformers' CLIPVisionModel on random small checkpoints, the
accepted file layouts, CLIP preprocessing, and loading errors that name the file and key."""

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

from flowav.encoders import clip_vision  # noqa: E402
from flowav.encoders.weights import WeightsError  # noqa: E402
from flowav.parallel.rules import PARAM_AXES  # noqa: E402

TOL = 1e-4
SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             image_size=32, patch_size=8, projection_dim=16)


def _randomize(model, seed: int) -> None:
  """Perturbs every parameter, so LayerNorm scales are not all 1 and biases not all 0 (a swapped or
  dropped norm / bias would otherwise go unnoticed)."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.1 * torch.randn(p.shape, generator=gen))


def _save(model_cls, config, path: pathlib.Path, seed: int = 0):
  torch.manual_seed(seed)
  model = model_cls(config).eval()
  _randomize(model, seed)
  model.save_pretrained(path)
  return model


def _pixels(seed: int = 0, batch: int = 3) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal((batch, 32, 32, 3)).astype(np.float32)


def _torch_out(model, pixels: np.ndarray):
  with torch.no_grad():
    return model(pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy()))


def _diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a) - b.detach().numpy())))


@pytest.fixture(scope="module")
def with_projection(tmp_path_factory):
  path = tmp_path_factory.mktemp("clip_proj")
  config = transformers.CLIPVisionConfig(**SMALL)
  return path, _save(transformers.CLIPVisionModelWithProjection, config, path)


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_vision_model_matches_transformers(tmp_path, act):
  config = transformers.CLIPVisionConfig(**SMALL, hidden_act=act)
  ref = _save(transformers.CLIPVisionModel, config, tmp_path, seed=1)
  model = clip_vision.load_clip_vision(tmp_path)
  assert model.projection is None and model.cfg.hidden_act == act
  pixels = _pixels()
  out, want = model(pixels), _torch_out(ref, pixels)
  assert out.last_hidden_state.shape == (3, 17, 32) and out.pooler_output.shape == (3, 32)
  assert out.image_embeds is None
  assert _diff(out.last_hidden_state, want.last_hidden_state) < TOL
  assert _diff(out.pooler_output, want.pooler_output) < TOL
  assert float(jnp.std(out.pooler_output)) > 0.1  # not a degenerate (constant) output


def test_projection_and_jit_match_transformers(with_projection):
  path, ref = with_projection
  model = clip_vision.load_clip_vision(path)
  pixels = _pixels(seed=2)
  out = nnx.jit(lambda m, x: m(x))(model, jnp.asarray(pixels))
  want = _torch_out(ref, pixels)
  assert out.image_embeds.shape == (3, 16)
  assert _diff(out.last_hidden_state, want.last_hidden_state) < TOL
  assert _diff(out.image_embeds, want.image_embeds) < TOL


def test_clip_model_file_uses_vision_tower_and_top_level_projection(tmp_path):
  vision = dict(SMALL, projection_dim=512)  # stale nested value: CLIPModel reads the top level
  config = transformers.CLIPConfig(
    vision_config=vision, projection_dim=16,
    text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                     num_attention_heads=4, vocab_size=99))
  ref = _save(transformers.CLIPModel, config, tmp_path, seed=3)
  model = clip_vision.load_clip_vision(tmp_path / "config.json")
  pixels = _pixels(seed=3)
  out = model(pixels)
  want = _torch_out(ref.vision_model, pixels)
  with torch.no_grad():
    embeds = ref.visual_projection(want.pooler_output)
  assert model.cfg.projection_dim == 16
  assert _diff(out.pooler_output, want.pooler_output) < TOL
  assert _diff(out.image_embeds, embeds) < TOL


def test_legacy_prefixed_layout_with_position_ids(tmp_path, with_projection):
  """transformers 4.x saved CLIPVisionModel keys under `vision_model.` with a position_ids buffer."""
  path, ref = with_projection
  tensors = {k: v for k, v in load_file(str(path / "model.safetensors")).items()
             if k != "visual_projection.weight"}
  tensors["vision_model.embeddings.position_ids"] = np.arange(17, dtype=np.int64)[None]
  save_file(tensors, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text((path / "config.json").read_text())
  model = clip_vision.load_clip_vision(tmp_path)
  pixels = _pixels(seed=4)
  assert model.projection is None
  assert _diff(model(pixels).pooler_output, _torch_out(ref.vision_model, pixels).pooler_output) < TOL


def test_params_carry_logical_names(with_projection):
  model = clip_vision.load_clip_vision(with_projection[0])
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  # patch, class, positions; pre/post norm scale+bias; 16 stacked layer tensors; projection.
  assert len(flat) == 24
  for path, var in flat:
    names = var.get_metadata().get("out_sharding")
    if path[0] == "layers":
      assert names[0] == "layers" and var.shape[0] == 2, (path, names)
    assert names is not None and len(names) == var.ndim, (path, names)
    assert all(n is None or n in PARAM_AXES for n in names), (path, names)


@pytest.mark.parametrize("shape", [(2, 45, 70, 3), (1, 100, 40, 3), (1, 64, 64, 3)])
def test_preprocess_close_to_clip_image_processor(shape):
  frames = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
  proc = transformers.CLIPImageProcessor(size={"shortest_edge": 32},
                                         crop_size={"height": 32, "width": 32})
  want = proc(images=list(frames), return_tensors="np")["pixel_values"].transpose(0, 2, 3, 1)
  got = np.asarray(clip_vision.clip_preprocess(jnp.asarray(frames), 32))
  assert got.shape == want.shape
  # Uniform noise is the worst case for resampler differences (PIL's kernel edges, uint8 rounding).
  diff = np.abs(got - want)
  assert diff.mean() < 0.01 and diff.max() < 0.3, (diff.mean(), diff.max())


def test_preprocess_without_resize_is_exact_crop_and_normalize():
  frames = np.random.default_rng(6).integers(0, 256, (2, 32, 47, 3), dtype=np.uint8)
  got = np.asarray(clip_vision.clip_preprocess(jnp.asarray(frames), 32))
  crop = frames[:, :, 7:39].astype(np.float32) / 255.0  # (47 - 32) // 2 = 7
  want = (crop - np.asarray(clip_vision.CLIP_MEAN)) / np.asarray(clip_vision.CLIP_STD)
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_encode_frames_chunks_and_projects(with_projection):
  path, ref = with_projection
  model = clip_vision.load_clip_vision(path)
  frames = np.random.default_rng(7).integers(0, 256, (5, 40, 50, 3), dtype=np.uint8)
  emb = model.encode_frames(frames, batch_size=2)  # 3 chunks, the last one padded
  pooled = model.encode_frames(frames, batch_size=8, project=False)
  pixels = np.asarray(clip_vision.clip_preprocess(jnp.asarray(frames), 32))
  want = _torch_out(ref, pixels)
  assert emb.shape == (5, 16) and pooled.shape == (5, 32)
  assert _diff(emb, want.image_embeds) < TOL
  with torch.no_grad():
    assert _diff(pooled, ref.vision_model(
      pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).pooler_output) < TOL
  assert model.encode_frames(frames[:0]).shape == (0, 16)


def _copy_checkpoint(src: pathlib.Path, dst: pathlib.Path, *, drop_key=None, reshape_key=None,
                     drop_field=None) -> pathlib.Path:
  tensors = load_file(str(src / "model.safetensors"))
  if drop_key:
    del tensors[drop_key]
  if reshape_key:
    tensors[reshape_key] = tensors[reshape_key][..., :-1].copy()
  save_file(tensors, str(dst / "model.safetensors"))
  config = json.loads((src / "config.json").read_text())
  config.pop(drop_field, None)
  (dst / "config.json").write_text(json.dumps(config))
  return dst


@pytest.mark.parametrize("change, words", [
  (dict(drop_key="vision_model.encoder.layers.1.mlp.fc2.bias"),
   ["missing key", "'vision_model.encoder.layers.1.mlp.fc2.bias'", "model.safetensors"]),
  (dict(reshape_key="vision_model.embeddings.position_embedding.weight"),
   ["'vision_model.embeddings.position_embedding.weight'", "(17, 31)", "(17, 32)",
    "model.safetensors"]),
  (dict(drop_field="patch_size"), ["missing config field 'patch_size'", "config.json"]),
])
def test_bad_checkpoint_names_file_and_key(with_projection, tmp_path, change, words):
  path = _copy_checkpoint(with_projection[0], tmp_path, **change)
  with pytest.raises(WeightsError) as err:
    clip_vision.load_clip_vision(path)
  assert all(w in str(err.value) for w in words), str(err.value)
  assert str(tmp_path) in str(err.value)


def test_unexpected_key_is_refused(with_projection, tmp_path):
  path = _copy_checkpoint(with_projection[0], tmp_path)
  tensors = load_file(str(path / "model.safetensors"))
  tensors["vision_model.encoder.layers.2.mlp.fc1.bias"] = np.zeros(64, np.float32)
  save_file(tensors, str(path / "model.safetensors"))
  with pytest.raises(WeightsError, match=r"unexpected keys \['vision_model.encoder.layers.2"):
    clip_vision.load_clip_vision(path)


def test_frame_encoder_registry_builds_clip_from_a_checkpoint_directory(with_projection):
  from flowav.encoders import frame_encoders  # pylint: disable=g-import-not-at-top
  path, _ = with_projection
  enc = frame_encoders.make("clip", weights=str(path))
  assert enc.dim == SMALL["projection_dim"] and enc.frame_size == SMALL["image_size"]
  frames = np.random.default_rng(1).integers(0, 256, (3, 40, 48, 3), dtype=np.uint8)
  direct = clip_vision.load_clip_vision(path).encode_frames(frames)
  np.testing.assert_allclose(enc.encode_frames(frames), direct, atol=1e-6)
  assert enc.describe()["weights"] == str(path)
