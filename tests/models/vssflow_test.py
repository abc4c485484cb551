"""VSSFlow DiT: spec §7 acceptance checks 1-11 and 13, sharding names, golden parameter paths."""

from __future__ import annotations

import pathlib

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.data import schema
from flowav.models import vssflow
from flowav.nn import Constant
from flowav.train.state import count_params, param_paths
from tests.models.vssflow_testlib import (
  NUM_FRAMES,
  VIDEO_FRAMES,
  jit_method,
  make_batch,
  tiny_model,
)
from tests.param_checks import check_golden_paths, check_param_names

GOLDEN = pathlib.Path(__file__).parent / "golden" / "vssflow.txt"
T3 = np.array([0.1, 0.5, 0.9], np.float32)


IDENTITY = np.arange(NUM_FRAMES + 1)


def _forward_permuted(model, x, t, cond, perm):
  """`forward_full` with the 1 + T cross-attention tokens (and their mask) reordered by `perm`."""
  ctx, mask = model.context(cond)
  return model.backbone(model.input_channels(x, cond), t, ctx[:, perm], mask[:, perm])


def _full_from_cond(model):
  """Jitted `(x, t, cond, perm=IDENTITY) -> [B, T, C_in]`; one compile per model structure."""
  forward = jit_method(model, _forward_permuted)
  return lambda x, t, cond, perm=IDENTITY: forward(x, t, cond, perm)


def _full(model):
  forward = _full_from_cond(model)
  return lambda batch, x, t: forward(x, t, model.conditions(batch))


def _both_outputs(model, batch, x, t):
  cond = model.conditions(batch)
  return model.forward_full(x, t, cond), model(x, t, cond)


def _input_channels(model, x, cond):
  return model.input_channels(x, cond)


def test_shapes_and_time_token_is_stripped():  # §7.1
  model = tiny_model()
  batch = make_batch(model.cfg)
  full, velocity = jit_method(model, _both_outputs)(batch, batch["audio_latents"], T3)
  assert model.cfg.in_channels == 25  # spec §6 tiny: 16 + 8 + 1
  assert full.shape == (3, NUM_FRAMES, 25)  # T frames, not T + 1
  assert velocity.shape == (3, NUM_FRAMES, 16)
  np.testing.assert_array_equal(velocity, full[..., :16])
  assert np.all(np.isfinite(full))


def test_condition_channels_are_constant_along_the_path():  # §7.2
  model = tiny_model()
  cond = model.conditions(make_batch(model.cfg))
  channels = jit_method(model, _input_channels)
  x1 = make_batch(model.cfg)["audio_latents"]
  x0 = np.random.default_rng(1).standard_normal(x1.shape).astype(np.float32)
  h0, h1 = np.asarray(channels(x0, cond)), np.asarray(channels(x1, cond))
  np.testing.assert_array_equal((h1 - h0)[..., 16:], 0.0)
  for t in (0.0, 0.37, 1.0):
    x_t = (t * x1 + (1 - t) * x0).astype(np.float32)
    h_t = np.asarray(channels(x_t, cond))
    np.testing.assert_array_equal(h_t[..., :16], x_t)
    np.testing.assert_array_equal(h_t[..., 16:], h0[..., 16:])
  phones = model.phone_channels(cond["phone_ids"], cond["durations"])
  np.testing.assert_allclose(h0[..., 16:24], phones, atol=1e-6)
  np.testing.assert_allclose(h0[..., 24:], model.temporal_scalar(cond), atol=1e-6)


def test_nearest_indices_follow_torch_nearest():  # §7.3
  src = vssflow.nearest_indices(100, 250, 10.0, 25.0)
  assert src[[0, 1, 2, 3, 249]].tolist() == [0, 0, 0, 1, 99]
  np.testing.assert_array_equal(src, 2 * np.arange(250) // 5)  # floor(0.4 i)
  np.testing.assert_array_equal(vssflow.nearest_indices(13, 32, 6.5, 16.0),
                                13 * np.arange(32) // 32)  # floor(i F / T)
  demo = vssflow.VARIANTS["demo"]  # 25 fps video on 22050/256 fps mel frames: i * 128 / 441
  np.testing.assert_array_equal(
    vssflow.nearest_indices(50, 172, demo["video_rate"], demo["audio_rate"]),
    128 * np.arange(172) // 441)
  assert vssflow.nearest_indices(5, 32, 6.5, 16.0)[-3:].tolist() == [4, 4, 4]  # clipped
  with pytest.raises(ValueError, match="num_src"):
    vssflow.nearest_indices(0, 32, 6.5, 16.0)


def test_conditions_resample_video_and_build_rows():
  model = tiny_model()
  batch = make_batch(model.cfg)
  batch["video_features"][..., 0] = np.arange(1, VIDEO_FRAMES + 1) * batch["video_mask"]
  cond = model.conditions(batch)
  src = 13 * np.arange(NUM_FRAMES) // 32
  np.testing.assert_array_equal(cond["video_mask"], batch["video_mask"][:, src])
  np.testing.assert_array_equal(cond["video"][..., 0], (src + 1) * cond["video_mask"])
  np.testing.assert_array_equal(cond["durations"][0],
                                schema.duration_matrix(batch["phone_durations"][0], NUM_FRAMES))
  np.testing.assert_array_equal(cond["phone_ids"][1], 0)  # V2S row (spec §1)
  np.testing.assert_array_equal(cond["durations"][1, :, 0], 1.0)
  np.testing.assert_array_equal(cond["durations"][1, :, 1:], 0.0)
  np.testing.assert_array_equal(cond["speaker"][0], batch["speaker_embedding"][0])
  np.testing.assert_array_equal(cond["speaker"][1], 0.0)  # speaker_mask false


def test_conditions_name_bad_keys_and_shapes():
  model = tiny_model()
  batch = make_batch(model.cfg)
  with pytest.raises(KeyError, match="speaker_mask"):
    model.conditions({k: v for k, v in batch.items() if k != "speaker_mask"})
  with pytest.raises(ValueError, match="video_features"):
    model.conditions({**batch, "video_features": batch["video_features"][..., :5]})
  with pytest.raises(ValueError, match="max_phones"):
    model.phone_channels(jnp.zeros((1, 65), jnp.int32), jnp.zeros((1, 4, 65)))


def test_phone_channels_known_answer():  # §7.4
  model = tiny_model()
  batch = make_batch(model.cfg)
  cond = model.conditions(batch)
  ph = np.asarray(model.phone_channels(cond["phone_ids"], cond["durations"]))
  table, phone_pos = model.phone_embed.embedding[...], model.phone_pos.embedding[...]
  frame_pos, s = model.frame_pos.embedding[...], 32 ** -0.5  # s = ctx_dim^-1/2
  for b in range(3):
    ends = np.cumsum(batch["phone_durations"][b])
    for t in range(NUM_FRAMES):
      expected = s * frame_pos[t]
      if b == 1 or t < ends[-1]:  # V2S rows sit on column 0 at every frame
        p = 0 if b == 1 else int(np.searchsorted(ends, t, side="right"))
        expected = expected + table[cond["phone_ids"][b, p]] + s * phone_pos[p]
      np.testing.assert_allclose(ph[b, t], expected, atol=1e-5)


def test_pad_columns_do_not_change_the_output():  # §7.4
  model = tiny_model()
  batch = make_batch(model.cfg)
  cond = model.conditions(batch)
  full = _full_from_cond(model)
  before = np.asarray(full(batch["audio_latents"], T3, cond))
  ids = np.asarray(cond["phone_ids"]).copy()
  ids[:, 5:] = np.random.default_rng(3).integers(1, 80, ids[:, 5:].shape)  # all-zero D columns
  model.phone_pos.embedding[...] = model.phone_pos.embedding[...].at[5:10].add(3.0)
  after = full(batch["audio_latents"], T3, {**cond, "phone_ids": jnp.asarray(ids)})
  np.testing.assert_array_equal(after, before)


def test_cross_attention_keys_carry_no_position():  # §7.6
  batch = make_batch(vssflow.VSSFlowConfig(**vssflow.VARIANTS["tiny"]))
  perm = np.random.default_rng(0).permutation(NUM_FRAMES + 1)
  changes = {}
  for q_only in (True, False):
    model = tiny_model(temporal_channel=False, xattn_rope_q_only=q_only)
    cond = model.conditions(batch)
    forward = _full_from_cond(model)
    out = forward(batch["audio_latents"], T3, cond)
    permuted = forward(batch["audio_latents"], T3, cond, perm)
    changes[q_only] = float(jnp.max(jnp.abs(out - permuted)) / jnp.max(jnp.abs(out)))
  assert changes[True] < 1e-5, changes
  assert changes[False] > 1e-4, changes  # Control: rotated keys make the order matter.


def _with_kv_heads(source_state: dict, target_state: nnx.State, mapping) -> nnx.State:
  """Copies `source_state` into `target_state`, expanding cross-attention K/V heads by `mapping`."""
  def expand(path, value):
    names = [str(getattr(k, "key", k)) for k in path]
    if names[0] == "blocks" and "cross_attn" in names and names[-2] in ("k", "v"):
      depth, ctx, _ = value.shape
      return mapping(value.reshape(depth, ctx, 2, 16)).reshape(depth, ctx, 64)
    return value
  return jax.tree_util.tree_map_with_path(expand, source_state)


def test_gqa_equals_mha_with_duplicated_kv_heads():  # §7.7
  gqa, mha = tiny_model(), tiny_model(seed=1, num_kv_heads=4)
  batch = make_batch(gqa.cfg)
  expected = _full(gqa)(batch, batch["audio_latents"], T3)
  source = nnx.to_pure_dict(nnx.state(gqa, nnx.Param))
  outs = {}
  for name, mapping in (("repeat_interleave", lambda w: np.repeat(w, 2, axis=2)),
                        ("tile", lambda w: np.tile(w, (1, 1, 2, 1)))):
    target = nnx.state(mha, nnx.Param)
    nnx.replace_by_pure_dict(target, _with_kv_heads(source, target, mapping))
    nnx.update(mha, target)
    outs[name] = _full(mha)(batch, batch["audio_latents"], T3)
  np.testing.assert_allclose(outs["repeat_interleave"], expected, atol=1e-5, rtol=1e-5)
  assert not np.allclose(outs["tile"], expected, atol=1e-3)  # Head h reads KV head h // 2.


def test_time_enters_as_a_token_not_adaln():  # §7.8
  model = tiny_model()
  batch = make_batch(model.cfg)
  full = _full(model)
  x = batch["audio_latents"]
  early, late = np.full(3, 0.2, np.float32), np.full(3, 0.8, np.float32)
  assert not np.allclose(full(batch, x, early), full(batch, x, late), atol=1e-4)
  model.time_embed.fc2.kernel[...] = jnp.zeros_like(model.time_embed.fc2.kernel[...])
  model.time_embed.fc2.bias[...] = jnp.zeros_like(model.time_embed.fc2.bias[...])
  np.testing.assert_array_equal(full(batch, x, early), full(batch, x, late))
  assert not any("features" in p for p in param_paths(nnx.state(model, nnx.Param)))
  constants = nnx.to_flat_state(nnx.state(model, Constant))
  assert [("/".join(map(str, p)), v.shape) for p, v in constants] == [
    ("time_embed/features/weight", (16,))]


def test_null_conditions():  # §7.9 (the builder; CFG arithmetic belongs to the sampler)
  model = tiny_model()
  null = model.null_conditions(model.conditions(make_batch(model.cfg)))
  for key in ("video", "speaker", "phone_ids"):
    np.testing.assert_array_equal(null[key], 0)
  np.testing.assert_array_equal(null["durations"][..., 0], 1.0)
  np.testing.assert_array_equal(null["durations"][..., 1:], 0.0)
  np.testing.assert_array_equal(model.temporal_scalar(null), 0.0)  # tau = 0
  np.testing.assert_array_equal(model.context(null)[0], 0.0)  # ctx = 0, speaker slot included


def test_drop_conditions_per_sample():  # spec §3
  model = tiny_model()
  cond = model.conditions(make_batch(model.cfg))
  cond = jax.tree.map(lambda x: jnp.concatenate([x] * 22)[:64], cond)
  null = model.null_conditions(cond)
  drop = jax.jit(lambda c, k, ps, pa: model.drop_conditions(c, k, p_speaker=ps, p_all=pa))
  key = jax.random.key(0)
  same = lambda a, b: all(jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)),
                                                       a, b)))
  assert same(drop(cond, key, 0.0, 0.0), cond)
  assert same(drop(cond, key, 1.0, 1.0), null) and same(drop(cond, key, 0.0, 1.0), null)
  speaker_only = drop(cond, key, 1.0, 0.0)
  assert same(speaker_only, {**cond, "speaker": null["speaker"]})
  half = drop(cond, key, 0.0, 0.5)
  nulled = np.all(np.asarray(half["video"]) == 0, axis=(1, 2))
  assert 10 < nulled.sum() < 54  # drawn per sample
  for key_name in ("speaker", "phone_ids", "durations"):
    np.testing.assert_array_equal(half[key_name][nulled], null[key_name][nulled])
    np.testing.assert_array_equal(half[key_name][~nulled], cond[key_name][~nulled])
  with pytest.raises(ValueError, match="p_all"):
    model.drop_conditions(cond, key, p_all=1.5)


@pytest.mark.parametrize("temporal", [False, True])
def test_zeroing_video_changes_every_frame(temporal):  # §7.10
  model = tiny_model(temporal_channel=temporal)
  batch = make_batch(model.cfg)
  cond = model.conditions(batch)
  full = _full_from_cond(model)
  out = full(batch["audio_latents"], T3, cond)
  zeroed = full(batch["audio_latents"], T3, {**cond, "video": jnp.zeros_like(cond["video"])})
  assert np.all(np.max(np.abs(out - zeroed), axis=-1) > 1e-6)


@pytest.mark.parametrize("depth", [2, 0])
def test_a_phoneme_change_at_one_frame_spreads_only_through_blocks(depth):  # §7.10
  model = tiny_model(depth=depth)
  batch = make_batch(model.cfg)
  cond = model.conditions(batch)
  t0 = 10  # row 0: frames 4..12 are phone 1 (id 17); move frame t0 to phone 3 (id 42)
  durations = np.asarray(cond["durations"]).copy()
  durations[0, t0] = np.eye(10)[3]
  full = _full_from_cond(model)
  out = np.asarray(full(batch["audio_latents"], T3, cond))
  changed = np.asarray(full(batch["audio_latents"], T3, {**cond, "durations": durations}))
  frames = np.flatnonzero(np.max(np.abs(out[0] - changed[0]), axis=-1) > 0)
  np.testing.assert_array_equal(changed[1:], out[1:])
  if depth:
    assert len(frames) == NUM_FRAMES  # self-attention mixes the change into every frame
  else:
    assert frames.tolist() == [t0]  # input/output convs only: stays at t0


def test_loss_gradient_is_zero_on_condition_channels():  # §7.11
  model = tiny_model()
  batch = make_batch(model.cfg)
  cond = model.conditions(batch)
  # Differentiate w.r.t. the output 1x1 conv only (the last layer): its columns are the C_in output
  # channels, so columns >= C_a are exactly the condition-channel outputs.
  graphdef, conv, rest = nnx.split(model, nnx.All(nnx.Param, nnx.PathContains("out_conv")), ...)
  target = jnp.asarray(batch["audio_latents"])

  def loss(conv):
    velocity = nnx.merge(graphdef, conv, rest)(target * 0.5, T3, cond)  # [..., :C_a]
    return jnp.mean((velocity - target) ** 2)

  kernel = np.asarray(jax.jit(jax.grad(loss))(conv)["out_conv"]["kernel"][...])
  assert kernel.shape == (25, 25)
  np.testing.assert_array_equal(kernel[:, 16:], 0.0)
  assert np.all(np.any(kernel[:, :16] != 0, axis=0))


def test_bfloat16_compute_stays_close():
  batch = make_batch(vssflow.VSSFlowConfig(**vssflow.VARIANTS["tiny"]))
  f32 = _full(tiny_model())(batch, batch["audio_latents"], T3)
  bf16 = _full(tiny_model(dtype="bfloat16"))(batch, batch["audio_latents"], T3)
  assert bf16.dtype == jnp.bfloat16
  err = np.abs(np.asarray(bf16, np.float32) - f32).max() / np.abs(f32).max()
  assert err < 0.05, err


def _dit_params(model) -> int:
  params = nnx.state(model, nnx.Param)
  return count_params(params) - count_params(nnx.state(model.duration_predictor, nnx.Param))


def test_paper_parameter_count():  # §7.13, via eval_shape (nothing allocated)
  build = lambda **kw: nnx.eval_shape(lambda: vssflow.VSSFlow(
    vssflow.VSSFlowConfig(**{**vssflow.VARIANTS["paper"], **kw}), rngs=nnx.Rngs(0)))
  paper = build()
  leaves = jax.tree.leaves(nnx.state(paper, nnx.Param))
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
  assert paper.cfg.in_channels == 161
  assert _dit_params(paper) == 443_283_074  # spec §2.6 arithmetic
  assert abs(_dit_params(paper) - 443.28e6) < 0.01e6
  assert count_params(nnx.state(paper.blocks, nnx.Param)) == 10 * 43_670_016  # 436.70 M
  assert abs(_dit_params(build(temporal_channel=False)) - 442.10e6) < 0.01e6
  assert 0.16e6 < _dit_params(tiny_model()) < 0.18e6  # spec §6: tiny DiT ~0.17 M


@pytest.mark.parametrize("variant", ["tiny", "paper"])
def test_every_parameter_has_one_logical_name_per_dim(variant):
  cfg = vssflow.VSSFlowConfig(**vssflow.VARIANTS[variant])
  model = nnx.eval_shape(lambda: vssflow.VSSFlow(cfg, rngs=nnx.Rngs(0)))
  assert check_param_names(model, (nnx.Param, Constant)) > 0


def test_golden_parameter_paths():
  check_golden_paths(param_paths(nnx.state(tiny_model(), nnx.Param)), GOLDEN, "VSSFlow")
