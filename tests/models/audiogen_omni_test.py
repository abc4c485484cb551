"""AudioGen-Omni: spec §7 acceptance checks 1-7, CFG masking, options (§7.10: audiogen_omni_params_test).

Unless a test says otherwise the tiny model has its zero-initialised parameters perturbed to random
values first (spec §7), so "no effect" checks cannot pass because a gate or a conv is 0.
"""

from __future__ import annotations

import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowav import nn
from flowav.models import audiogen_omni as ag
from flowav.models import audiogen_omni_blocks as blocks
from tests.models.audiogen_omni_testlib import (
  CAPTION_TOKENS,
  NUM_FRAMES,
  SYNC_FRAMES,
  VIDEO_FRAMES,
  jit_method,
  make_batch,
  tiny_config,
  tiny_model,
  velocity,
  velocity_from_cond,
)

T3 = np.array([0.1, 0.5, 0.9], np.float32)


def _conditions(model, batch):
  return model.conditions(batch)


def _fns(model):
  """Jitted (conditions, velocity_from_cond, velocity) of one model structure."""
  return (jit_method(model, _conditions), jit_method(model, velocity_from_cond),
          jit_method(model, velocity))


def _global(model, t, cond):
  return model.global_condition(t, cond)


def _differs(a, b, atol=1e-4):
  return not np.allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=atol)


# --- §7.1 shapes -------------------------------------------------------------------------------


def _block_shapes(model, streams, c_a, c_g, cond):
  _, masks, positions, rope_masks = model.streams(cond)
  pre_only = model.last_joint  # a full block: the first layer of the joint stack
  block = nnx.merge(*_first_layer(model.joint_blocks))
  args = (c_a, c_g, masks, positions, rope_masks)
  single = nnx.merge(*_first_layer(model.single_blocks))
  return (block(streams, *args), pre_only(streams, *args),
          single(streams[0], c_a, cond["audio_mask"], positions[0]))


def _first_layer(stack):
  graphdef, state = nnx.split(stack.layers)
  return graphdef, jax.tree.map(lambda x: x[0], state)


def test_shapes_blocks_and_zero_output_at_init():  # §7.1
  model = tiny_model()
  batch = make_batch(model.cfg)
  cond = _fns(model)[0](batch)
  d, lx = 64, CAPTION_TOKENS + NUM_FRAMES
  rng = np.random.default_rng(0)
  streams = tuple(jnp.asarray(rng.standard_normal((3, n, d)), jnp.float32)
                  for n in (NUM_FRAMES, VIDEO_FRAMES, lx))
  c_g, c_a = jit_method(model, _global)(T3, cond)
  joint, pre_only, single = jit_method(model, _block_shapes)(streams, c_a, c_g, cond)
  assert [x.shape for x in joint] == [(3, NUM_FRAMES, d), (3, VIDEO_FRAMES, d), (3, lx, d)]
  assert [x.shape for x in pre_only] == [x.shape for x in joint]
  for kept, given in zip(pre_only[1:], streams[1:], strict=True):  # video/text pass through
    np.testing.assert_array_equal(kept, given)
  assert all(_differs(a, b) for a, b in zip(joint, streams, strict=True))
  assert single.shape == (3, NUM_FRAMES, d)
  assert model.last_joint.video.ffn is None and model.last_joint.text.ffn is None
  assert model.last_joint.attn.streams[2].out is None  # pre-only: no text output Linear
  fresh = tiny_model(perturb=False)
  out = jit_method(fresh, velocity)(batch, batch["audio_latents"], T3)
  assert out.shape == (3, NUM_FRAMES, 8)
  np.testing.assert_array_equal(out, 0.0)  # zero-init AdaLN outputs and final conv


# --- §7.2 missing streams and padding -------------------------------------------------------


def test_missing_and_padded_inputs_have_no_effect_and_masks_control_it():  # §7.2
  model = tiny_model()
  batch = make_batch(model.cfg)
  forward = jit_method(model, velocity)
  x = batch["audio_latents"]
  out = np.asarray(forward(batch, x, T3))
  rng = np.random.default_rng(7)
  noisy = {k: v.copy() for k, v in batch.items()}
  # Row 2 has no video / sync: random features there.
  noisy["video_features"][2] = rng.standard_normal(noisy["video_features"][2].shape)
  noisy["sync_features"][2] = rng.standard_normal(noisy["sync_features"][2].shape)
  # Row 1 has no caption / lyrics: random tokens there.
  noisy["text_embeddings"][1] = rng.standard_normal(noisy["text_embeddings"][1].shape)
  noisy["lyric_ids"][1] = rng.integers(1, 65, noisy["lyric_ids"][1].shape)
  # Row 2's padded caption tokens, lyric tokens and audio frames.
  noisy["text_embeddings"][2, -3:] = 9.0
  noisy["lyric_ids"][2, -4:] = 5
  x_noisy = x.copy()
  x_noisy[2, -6:] = rng.standard_normal((6, 8)) * 5
  changed = np.asarray(forward(noisy, x_noisy, T3))
  np.testing.assert_allclose(changed[:2], out[:2], atol=1e-6)
  np.testing.assert_allclose(changed[2, :-6], out[2, :-6], atol=1e-6)  # valid frames only
  # Controls: the same values with the mask turned on change the output.
  controls = {"video_mask": (2, "video"), "sync_mask": (2, "sync"), "text_mask": (1, "caption"),
              "lyric_mask": (1, "lyrics"), "audio_mask": (2, "audio")}
  for mask_key, (row, what) in controls.items():
    on = {**noisy, mask_key: noisy[mask_key].copy()}
    on[mask_key][row] = True
    assert _differs(forward(on, x_noisy, T3)[row, :-6], changed[row, :-6]), what


def test_absent_keys_equal_all_false_masks():  # DESIGN: missing modality = masks false
  model = tiny_model()
  batch = make_batch(model.cfg)
  optional = ("video_features", "video_mask", "sync_features", "sync_mask", "text_embeddings",
              "text_ids", "text_mask", "lyric_ids", "lyric_mask")
  masked = dict(batch)
  for key in ("video_mask", "sync_mask", "text_mask", "lyric_mask"):
    masked[key] = np.zeros_like(batch[key])
  absent = {k: v for k, v in batch.items() if k not in optional}
  forward = jit_method(model, velocity)
  np.testing.assert_allclose(forward(absent, batch["audio_latents"], T3),
                             forward(masked, batch["audio_latents"], T3), atol=1e-6)


def _null(model, cond):
  return model.null_conditions(cond)


def _drop_everything(model, cond, key):
  return model.drop_conditions(cond, key, p_video=1.0, p_caption=1.0, p_lyrics=1.0)


def test_null_and_fully_dropped_conditions_equal_absent_modalities():  # spec §3, §4 (CFG)
  """The CFG null branch and a training row with every condition dropped see exactly what a batch
  without video, sync, caption and lyrics gives, sync kept at its own rate included."""
  model = tiny_model()
  batch = make_batch(model.cfg)
  conditions, from_cond, forward = _fns(model)
  cond = conditions(batch)
  assert cond["sync_rows"].shape[1] == SYNC_FRAMES and cond["sync_row_mask"].any()
  x = batch["audio_latents"]
  kept = ("audio_latents", "audio_mask", "start_s", "duration_s", "task_id")
  want = forward({k: batch[k] for k in kept}, x, T3)
  assert _differs(from_cond(x, T3, cond), want)  # the conditions do steer this model
  null = jit_method(model, _null)(cond)
  assert not null["sync_row_mask"].any()
  np.testing.assert_allclose(from_cond(x, T3, null), want, atol=1e-6)
  dropped = jit_method(model, _drop_everything)(cond, jax.random.key(0))
  np.testing.assert_allclose(from_cond(x, T3, dropped), want, atol=1e-6)


# --- §7.3 RoPE only on temporal streams -------------------------------------------------------


def test_rope_only_on_temporal_streams():  # §7.3
  model = tiny_model()
  batch = make_batch(model.cfg)
  cond = _fns(model)[0](batch)
  _, _, positions, rope_masks = model.streams(cond)
  assert rope_masks[0] is None and rope_masks[1] is None  # audio, video: every token rotated
  np.testing.assert_array_equal(rope_masks[2], np.arange(CAPTION_TOKENS + NUM_FRAMES)
                                >= CAPTION_TOKENS)  # false exactly on the caption tokens
  np.testing.assert_array_equal(positions[2][CAPTION_TOKENS:], np.arange(NUM_FRAMES))
  forward = jit_method(model, velocity)
  x = batch["audio_latents"]
  out = forward(batch, x, T3)
  perm = np.array([5, 2, 7, 0, 3, 6, 1, 4])
  shuffled = {**batch, "text_embeddings": batch["text_embeddings"][:, perm],
              "text_mask": batch["text_mask"][:, perm]}
  np.testing.assert_allclose(forward(shuffled, x, T3), out, rtol=1e-5, atol=1e-5)
  video_perm = np.array([3, 1, 6, 0, 7, 2, 5, 4])
  moved = {**batch, "video_features": batch["video_features"][:, video_perm]}
  assert _differs(forward(moved, x, T3)[0], out[0])


# --- §7.4 phase alignment -----------------------------------------------------------------------


def _score(q_vec, k_vec, q_pos, k_pos, rope):
  q = nn.apply_rope(q_vec[None, None, None], jnp.asarray([q_pos], jnp.float32), rope)
  k = nn.apply_rope(k_vec[None, None, None], jnp.asarray([k_pos], jnp.float32), rope)
  return float(jnp.sum(q * k))


def test_phase_alignment_in_seconds():  # §7.4
  audio = nn.time_positions(250, 31.25, 31.25)
  sync_like = nn.time_positions(192, 24.0, 31.25)
  assert float(sync_like[96]) == float(audio[125]) == 125.0  # both at t = 4 s
  rope = nn.RopeConfig(16, 10000.0, "interleaved")
  vec = jnp.asarray(np.random.default_rng(0).standard_normal(16), jnp.float32)
  np.testing.assert_array_equal(
    nn.apply_rope(vec[None, None, None], sync_like[96:97], rope),
    nn.apply_rope(vec[None, None, None], audio[125:126], rope))
  paper = ag.AudioGenOmniConfig(**ag.VARIANTS["paper"])
  video = nn.time_positions(80, paper.video_rate, paper.audio_rate)
  np.testing.assert_allclose(video[:4], np.arange(4) * 5.3833, atol=1e-4)
  # The model's own positions: audio frame j at j, video frame i at i * r_a / r_v.
  model = tiny_model()
  cond = {"audio_mask": jnp.ones((1, 250), bool), "video": jnp.zeros((1, 64, 64)),
          "video_mask": jnp.ones((1, 64), bool), "caption": jnp.zeros((1, 4, 64)),
          "caption_mask": jnp.ones((1, 4), bool), "lyrics": jnp.zeros((1, 250, 64)),
          "lyric_mask": jnp.ones((1, 250), bool)}
  _, _, (pos_a, pos_v, pos_x), _ = model.streams(cond)
  np.testing.assert_allclose(pos_v, np.arange(64) * 3.90625)
  np.testing.assert_array_equal(pos_x[4:], pos_a)  # lyric frame j sits with audio frame j
  # A (video, audio) score depends only on the time difference: +4 s = +125 audio, +32 video.
  rope = model.last_joint.rope
  q_vec, k_vec = (jnp.asarray(np.random.default_rng(s).standard_normal(16), jnp.float32)
                  for s in (1, 2))
  base = _score(q_vec, k_vec, pos_a[10], pos_v[5], rope)
  np.testing.assert_allclose(_score(q_vec, k_vec, pos_a[135], pos_v[37], rope), base, rtol=1e-4)
  assert abs(_score(q_vec, k_vec, pos_a[135], pos_v[5], rope) - base) > 1e-3


# --- §7.5 sync resampling -----------------------------------------------------------------------


def test_sync_resampling_and_null():  # §7.5
  src = ag.sync_indices(192, 250, 24.0, 31.25)
  assert src[125] == 96
  np.testing.assert_array_equal(src, np.floor((np.arange(250) + 0.5) * 24 / 31.25))
  assert ag.sync_indices(24, 40, 24.0, 31.25)[-1] == 23  # clipped to the last token
  model = tiny_model()
  batch = make_batch(model.cfg)
  conditions, _, _ = _fns(model)
  cond = conditions(batch)
  rows = np.arange(SYNC_FRAMES) % 8
  sync = batch["sync_features"] + np.asarray(model.sync_pos[...])[rows]
  full = jax.jit(lambda s, m: model.sync_proj(s, m))(sync, batch["sync_mask"])
  idx = ag.sync_indices(SYNC_FRAMES, NUM_FRAMES, 24.0, 31.25)
  np.testing.assert_allclose(cond["sync"], np.asarray(full)[:, idx], atol=1e-5)
  c_g, c_a = jit_method(model, _global)(T3, cond)
  assert c_a.rows.shape[1] == SYNC_FRAMES < NUM_FRAMES  # AdaLN runs on the sync frames
  c_a = c_a.dense()
  np.testing.assert_allclose(c_a[2] - c_g[2], np.broadcast_to(model.null_sync[...], (32, 64)),
                             atol=1e-5)  # row 2 has no video: every frame gets n_s
  np.testing.assert_allclose(c_a[0] - c_g[0], cond["sync"][0], atol=1e-5)


# --- §7.6 AdaLN depends on duration and start ---------------------------------------------------


def _modulations(module, c):
  """Every AdaLN modulation output of `module` for conditioning c (stacked layers included)."""
  outs = []
  for _, sub in nnx.iter_graph(module):
    if isinstance(sub, nn.AdaLNModulation):
      kernel, bias = sub.proj.kernel[...], sub.proj.bias[...]
      h = jax.nn.silu(c.astype(jnp.float32))
      if kernel.ndim == 2:
        outs.append(h @ kernel + bias)
      else:  # [layers, D, k*D]
        outs.extend(h @ kernel[i] + bias[i] for i in range(kernel.shape[0]))
  return outs


def _adaln_view(model, x, t, cond):
  c_g, c_a = model.global_condition(t, cond)
  c_a = c_a.dense()
  return c_g, c_a, _modulations(model, c_g), _modulations(model, c_a), model(x, t, cond)


def test_adaln_depends_on_duration_and_start_and_tables_clip():  # §7.6
  model = tiny_model()
  batch = make_batch(model.cfg)
  conditions, _, _ = _fns(model)
  view = jit_method(model, _adaln_view)
  x = batch["audio_latents"]
  base = view(x, T3, conditions(batch))
  for key in ("duration_s", "start_s"):
    other = view(x, T3, conditions({**batch, key: batch[key] + 2.0}))
    assert np.all(np.abs(other[0] - base[0]).max(-1) > 1e-5), key  # c_g, every row
    assert np.all(np.abs(other[1] - base[1]).max(-1) > 1e-5), key  # c_a, every frame
    for mods_new, mods_old in ((other[2], base[2]), (other[3], base[3])):
      assert len(mods_new) == 3 * 1 + 3 + 1 * 2 + 1  # joint stack (1 layer), last, singles, final
      for new, old in zip(mods_new, mods_old, strict=True):
        for chunk_new, chunk_old in zip(np.split(new, new.shape[-1] // 64, -1),
                                        np.split(old, old.shape[-1] // 64, -1), strict=True):
          assert _differs(chunk_new, chunk_old, 1e-6), key  # shift, scale and gate
    assert _differs(other[4], base[4]), key
  table = model.cfg.time_table - 1  # 15 for tiny; 511 for the paper table
  assert ag.VARIANTS["paper"].get("time_table", 512) == 512
  clipped = conditions({**batch, "duration_s": np.array([table, table + 0.9, 600.0], np.float32),
                        "start_s": np.array([-3.0, 0.0, 0.5], np.float32)})
  np.testing.assert_array_equal(clipped["total"], np.repeat(
    np.asarray(model.total_embed.embedding[...])[table][None], 3, 0))
  np.testing.assert_array_equal(clipped["start"], np.repeat(
    np.asarray(model.start_embed.embedding[...])[0][None], 3, 0))


# --- options: the demo's sources, no sync / lyrics, sum fusion, bfloat16 -------------------------


def test_demo_sources_and_options_run_and_ignore_absent_inputs():
  model = tiny_model(sync_source="video_features", caption_source="text_ids",
                     lyrics_key="transcript_ids", lyric_vocab=40)
  batch = make_batch(model.cfg)
  batch["transcript_ids"] = np.minimum(batch.pop("lyric_ids"), 40)
  batch["transcript_mask"] = batch.pop("lyric_mask")
  assert model.sync_pos is None and model.caption_embed is not None
  forward = jit_method(model, velocity)
  out = forward(batch, batch["audio_latents"], T3)
  noisy = {**batch, "text_ids": batch["text_ids"].copy(), "video_features":
           batch["video_features"].copy(), "transcript_ids": batch["transcript_ids"].copy()}
  noisy["text_ids"][1] = 77
  noisy["video_features"][2] = 3.0
  noisy["transcript_ids"][1] = 9
  np.testing.assert_allclose(forward(noisy, batch["audio_latents"], T3), out, atol=1e-6)
  on = {**noisy, "video_mask": np.ones_like(batch["video_mask"])}  # video also drives sync
  assert _differs(forward(on, batch["audio_latents"], T3)[2, :-6], out[2, :-6])
  bare = tiny_model(sync_source="none", lyrics_key="none", global_fusion="sum")
  assert bare.sync_proj is None and bare.lyrics is None
  batch = make_batch(bare.cfg)
  out = jit_method(bare, velocity)(batch, batch["audio_latents"], T3)
  assert out.shape == (3, NUM_FRAMES, 8) and np.all(np.isfinite(out))


def test_bfloat16_compute_stays_close():
  batch = make_batch(tiny_config())
  f32 = jit_method(tiny_model(), velocity)(batch, batch["audio_latents"], T3)
  bf16 = jit_method(tiny_model(dtype="bfloat16"), velocity)(batch, batch["audio_latents"], T3)
  assert bf16.dtype == jnp.bfloat16
  err = np.abs(np.asarray(bf16, np.float32) - f32).max() / np.abs(f32).max()
  assert err < 0.05, err


def test_masked_mean_and_ffn_hidden():
  x = jnp.asarray([[[1.0], [3.0], [100.0]], [[2.0], [0.0], [0.0]]])
  mask = jnp.asarray([[True, True, False], [False, False, False]])
  np.testing.assert_allclose(blocks.masked_mean(x, mask), [[2.0], [0.0]])
  assert blocks.ffn_hidden(1024, 256) == 2816 and blocks.ffn_hidden(448, 256) == 1280


def test_sync_to_input_adds_the_sync_frames_to_the_audio_tokens():
  on, off = tiny_model(sync_to_input=True), tiny_model()  # the option adds no parameters
  batch = make_batch(on.cfg)
  x = batch["audio_latents"]
  forward = jit_method(on, velocity)
  out_on, out_off = forward(batch, x, T3), jit_method(off, velocity)(batch, x, T3)
  np.testing.assert_allclose(out_on[2], out_off[2], atol=1e-6)  # row 2 has no sync
  assert _differs(out_on[0], out_off[0]) and _differs(out_on[1], out_off[1])
  noisy = {**batch, "sync_features": batch["sync_features"].copy()}
  noisy["sync_features"][2] = 5.0  # masked: adds nothing at the input either
  np.testing.assert_allclose(forward(noisy, x, T3), out_on, atol=1e-6)
  with pytest.raises(ValueError, match="sync_to_input"):
    tiny_config(sync_source="none", sync_to_input=True)
