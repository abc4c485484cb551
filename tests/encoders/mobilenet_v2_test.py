"""MobileNetV2 encoder: ImageNet classification, parity with a torch forward, loading errors."""

from __future__ import annotations

import pathlib

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.encoders import mobilenet_v2 as mnv2
from flowav.encoders import weights
from flowav.parallel.rules import PARAM_AXES


def _weights_file() -> pathlib.Path:
  try:
    path = mnv2.default_weights_path()
  except FileNotFoundError as e:
    pytest.skip(f"pretrained MobileNetV2 weights not found: {e}")
  pytest.importorskip("torch", reason="reading the .pth needs torch (the convert extra)")
  return path


@pytest.fixture(scope="module")
def pth() -> pathlib.Path:
  return _weights_file()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> pathlib.Path:
  return tmp_path_factory.mktemp("mnv2_cache")


@pytest.fixture(scope="module")
def encoder(pth, cache_dir) -> mnv2.MobileNetV2Encoder:
  return mnv2.load_mobilenet_v2(pth, cache_dir=cache_dir, batch_size=4)


@pytest.fixture(scope="module")
def state_dict(pth) -> dict[str, np.ndarray]:
  return weights.read_torch_state_dict(pth)


def _torch_reference(sd: dict[str, np.ndarray], x_nchw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """torchvision MobileNetV2 eval forward written with torch.nn.functional: (features, logits)."""
  import torch  # noqa: PLC0415
  import torch.nn.functional as F  # noqa: N812, PLC0415

  t = {k: torch.from_numpy(v) for k, v in sd.items()}

  def cbr(h, conv, bn, stride=1, groups=1, act=True):
    w = t[f"{conv}.weight"]
    h = F.conv2d(h, w, stride=stride, padding=(w.shape[-1] - 1) // 2, groups=groups)
    h = F.batch_norm(h, t[f"{bn}.running_mean"], t[f"{bn}.running_var"], t[f"{bn}.weight"],
                     t[f"{bn}.bias"], training=False, eps=1e-5)
    return F.relu6(h) if act else h

  with torch.no_grad():
    h = cbr(torch.from_numpy(x_nchw), "features.0.0", "features.0.1", stride=2)
    index, cin = 1, 32
    for t_, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1)]:
      for i in range(n):
        p, stride, hidden, y = f"features.{index}.conv", s if i == 0 else 1, cin * t_, h
        j = 0
        if t_ != 1:
          y, j = cbr(y, f"{p}.0.0", f"{p}.0.1"), 1
        y = cbr(y, f"{p}.{j}.0", f"{p}.{j}.1", stride=stride, groups=hidden)
        y = cbr(y, f"{p}.{j + 1}", f"{p}.{j + 2}", act=False)
        h = h + y if stride == 1 and cin == c else y
        index, cin = index + 1, c
    h = cbr(h, "features.18.0", "features.18.1")
    feats = h.mean(dim=(2, 3))
    logits = F.linear(feats, t["classifier.1.weight"], t["classifier.1.bias"])
  return feats.numpy(), logits.numpy()


def _abstract_model() -> mnv2.MobileNetV2:
  return nnx.eval_shape(lambda: mnv2.MobileNetV2(rngs=nnx.Rngs(0)))


def test_default_weights_path_is_torchvision_file(pth):
  assert pth.name == "mobilenet_v2-b0353104.pth"
  # torchvision names files by the sha256 prefix of their content.
  assert weights.file_digest(pth).startswith("b0353104")


@pytest.mark.parametrize("name,label", [("chelsea", 285), ("coffee", 967)])
def test_classifies_skimage_images(encoder, name, label):
  data = pytest.importorskip("skimage.data", reason="needs scikit-image for its sample images")
  image = getattr(data, name)()
  logits = np.asarray(encoder.logits(image[None]))
  assert logits.shape == (1, 1000)
  top = np.argsort(logits[0])[::-1]
  assert top[0] == label, f"{name}: top-5 {top[:5]}"
  assert logits[0, top[0]] - logits[0, top[1]] > 1.0  # a clear decision, not a near tie


def test_matches_torch_forward(encoder, state_dict):
  x = np.random.default_rng(0).normal(size=(2, 224, 224, 3)).astype(np.float32)
  ref_feats, ref_logits = _torch_reference(state_dict, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  graphdef, state = nnx.split(encoder.model)

  @jax.jit
  def forward(state, x):
    model = nnx.merge(graphdef, state)
    return model.features(x), model(x)

  feats, logits = map(np.asarray, forward(state, jnp.asarray(x)))
  # Folded BN reorders float32 rounding; differences are ~1e-6 of values of order 1-10.
  np.testing.assert_allclose(feats, ref_feats, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(logits, ref_logits, atol=1e-4, rtol=1e-4)
  assert np.abs(ref_feats).max() > 1.0  # the comparison is not between near-zero outputs


def test_center_crop_matches_pil_eval_transform():
  """Resize(256) + CenterCrop(224) as torchvision does it on a PIL image (bilinear, antialiased)."""
  data = pytest.importorskip("skimage.data", reason="needs scikit-image for its sample images")
  from PIL import Image  # noqa: PLC0415

  image = data.chelsea()  # 300 x 451: resized to 256 x 384, cropped at (16, 80)
  pil = np.asarray(Image.fromarray(image).resize((384, 256), Image.BILINEAR), np.float32)[16:240, 80:304]
  ref = (pil / 255.0 - np.asarray(mnv2.IMAGENET_MEAN)) / np.asarray(mnv2.IMAGENET_STD)
  out = np.asarray(mnv2.preprocess(jnp.asarray(image[None]))[0])
  assert out.shape == (224, 224, 3)
  # PIL rounds to uint8 and its filter support differs slightly at the edges; a 1-pixel shift
  # of the crop would give a mean error of ~0.1.
  assert np.abs(out - ref).mean() < 0.02
  squashed = mnv2.preprocess(jnp.asarray(image[None]), "squash")
  assert squashed.shape == (1, 224, 224, 3)


def test_encode_frames_chunking_and_padding(encoder):
  frames = np.random.default_rng(1).integers(0, 256, size=(6, 48, 64, 3), dtype=np.uint8)
  feats = encoder.encode_frames(frames)  # batch_size 4: a chunk of 4, then 2 frames
  assert feats.shape == (6, mnv2.FEATURE_DIM) and feats.dtype == jnp.float32
  # 3 frames are zero-padded to a batch of 4: the padding must not change the real frames' features.
  np.testing.assert_allclose(np.asarray(encoder.encode_frames(frames[:3])), np.asarray(feats[:3]),
                             atol=1e-5)
  assert np.all(np.asarray(feats) >= 0.0)  # pooled ReLU6 activations
  assert np.std(np.asarray(feats), axis=0).max() > 1e-3  # different frames, different features
  assert encoder.encode_frames(frames[:0]).shape == (0, mnv2.FEATURE_DIM)


@pytest.mark.parametrize("frames,error,match", [
  (np.zeros((2, 32, 32, 3), np.float32), TypeError, "uint8.*float32"),
  (np.zeros((32, 32, 3), np.uint8), ValueError, r"\[T, H, W, 3\].*\(32, 32, 3\)"),
  (np.zeros((2, 32, 32, 4), np.uint8), ValueError, r"\(2, 32, 32, 4\)"),
  ([[1, 2, 3]], TypeError, "list"),
])
def test_encode_frames_rejects_bad_input(frames, error, match):
  encoder = mnv2.MobileNetV2Encoder(_abstract_model())  # inputs are checked before any compute
  with pytest.raises(error, match=match):
    encoder.encode_frames(frames)
  with pytest.raises(ValueError, match="mode"):
    mnv2.MobileNetV2Encoder(encoder.model, mode="crop")


def test_params_carry_logical_axis_names():
  model = _abstract_model()
  flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
  assert len(flat) == 2 * (1 + 17 * 3 - 1 + 1 + 1)  # kernel + bias per conv (block 0 has no expand)
  for path, var in flat:
    names = var.get_metadata()["out_sharding"]
    assert len(names) == var.ndim and set(names) <= set(PARAM_AXES), (path, names)
  # torchvision lists 3,504,872 parameters; folding drops the 17,056 BatchNorm scales.
  assert sum(v.size for _, v in flat) == 3_504_872 - 17_056


def test_cached_and_flowav_safetensors_load_the_same(encoder, pth, cache_dir, tmp_path):
  cached = list(cache_dir.glob("mobilenet_v2-*.safetensors"))
  assert len(cached) == 1 and weights.file_digest(pth)[:12] in cached[0].name
  frames = np.random.default_rng(2).integers(0, 256, size=(2, 48, 64, 3), dtype=np.uint8)
  expected = np.asarray(encoder.encode_frames(frames))
  from_cache = mnv2.load_mobilenet_v2(cached[0], batch_size=4)
  np.testing.assert_array_equal(np.asarray(from_cache.encode_frames(frames)), expected)
  state = nnx.to_flat_state(nnx.state(encoder.model, nnx.Param))
  folded = tmp_path / "folded.safetensors"
  weights.save_safetensors({"/".join(map(str, p)): np.asarray(v[...]) for p, v in state}, folded)
  np.testing.assert_array_equal(
    np.asarray(mnv2.load_mobilenet_v2(folded, batch_size=4).encode_frames(frames)), expected)


def test_wrong_files_raise_naming_the_file(state_dict, tmp_path):
  torch = pytest.importorskip("torch", reason="writing .pth files needs torch")
  missing = tmp_path / "missing_key.pth"
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()
              if k != "features.5.conv.1.1.running_var"}, missing)
  with pytest.raises(weights.WeightsError, match=r"missing_key\.pth.*features\.5\.conv\.1\.1\.running_var"):
    mnv2.load_mobilenet_v2(missing, cache_dir=tmp_path / "c")

  extra = tmp_path / "extra_key.pth"
  torch.save({**{k: torch.from_numpy(v) for k, v in state_dict.items()}, "fc.weight": torch.ones(2)}, extra)
  with pytest.raises(weights.WeightsError, match=r"extra_key\.pth.*unexpected.*fc\.weight"):
    mnv2.load_mobilenet_v2(extra, cache_dir=tmp_path / "c")

  bad_bn = tmp_path / "bad_bn.pth"
  torch.save({**{k: torch.from_numpy(v) for k, v in state_dict.items()},
              "features.0.1.running_mean": torch.zeros(31)}, bad_bn)
  with pytest.raises(weights.WeightsError, match=r"bad_bn\.pth.*features\.0\.1\.running_mean.*\(31,\)"):
    mnv2.load_mobilenet_v2(bad_bn, cache_dir=tmp_path / "c")

  text = tmp_path / "notes.pth"
  text.write_text("not a checkpoint")
  with pytest.raises(weights.WeightsError, match=r"notes\.pth"):
    mnv2.load_mobilenet_v2(text, cache_dir=tmp_path / "c")

  partial = tmp_path / "partial.safetensors"
  weights.save_safetensors({"stem/kernel": np.zeros((3, 3, 3, 32), np.float32)}, partial)
  with pytest.raises(weights.WeightsError, match=r"partial\.safetensors.*missing"):
    mnv2.load_mobilenet_v2(partial)

  with pytest.raises(FileNotFoundError, match="nowhere"):
    mnv2.load_mobilenet_v2(tmp_path / "nowhere.pth")


def test_frame_encoder_registry_builds_mobilenet(encoder, pth, tmp_path, monkeypatch):
  from flowav.encoders import frame_encoders  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # its safetensors cache goes here
  enc = frame_encoders.make("mobilenet_v2", weights=str(pth))
  assert enc.dim == mnv2.FEATURE_DIM and enc.frame_size == mnv2.IMAGE_SIZE
  frames = np.random.default_rng(2).integers(0, 256, size=(3, 48, 64, 3), dtype=np.uint8)
  np.testing.assert_allclose(enc.encode_frames(frames), np.asarray(encoder.encode_frames(frames)),
                             atol=1e-5)
  assert list(tmp_path.glob("flowav/weights/*.safetensors"))
