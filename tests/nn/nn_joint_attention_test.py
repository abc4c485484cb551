from __future__ import annotations

import flax.nnx as nnx
import jax.numpy as jnp
import numpy as np
import pytest

from flowav.nn import Attention, JointAttention, RopeConfig, time_positions


def _normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.fixture(scope="module")
def joint():
  # Streams: audio [B, 6, 16], video [B, 3, 12], caption [B, 4, 8].
  return JointAttention([16, 12, 8], num_heads=2, head_dim=8, rngs=nnx.Rngs(0))


def _streams(seed=1):
  return [_normal(seed, (2, 6, 16)), _normal(seed + 1, (2, 3, 12)), _normal(seed + 2, (2, 4, 8))]


def test_keeps_per_stream_shapes_and_param_paths(joint, jit_call):
  outs = jit_call(joint, _streams(), masks=[None, None, None])
  assert [o.shape for o in outs] == [(2, 6, 16), (2, 3, 12), (2, 4, 8)]
  paths = {"/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(joint, nnx.Param))}
  assert {"streams/0/q/kernel", "streams/1/k/bias", "streams/2/out/kernel",
          "streams/0/q_norm/scale", "streams/2/k_norm/scale"} <= paths


def test_masked_stream_has_no_effect_on_other_streams(joint, jit_call):
  audio, video, caption = _streams()
  masks = [None, jnp.zeros((2, 3), bool), jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1]], bool)]
  out = jit_call(joint, [audio, video, caption], masks=masks)
  video2 = _normal(9, video.shape) * 10
  caption2 = caption.at[0, 2:].set(-7.0)
  out2 = jit_call(joint, [audio, video2, caption2], masks=masks)
  np.testing.assert_allclose(out2[0], out[0], atol=1e-5)
  np.testing.assert_allclose(out2[2][0, :2], out[2][0, :2], atol=1e-5)
  # Control: with the video mask on, new video values change the audio output.
  on = [None, None, masks[2]]
  assert not np.allclose(jit_call(joint, [audio, video2, caption2], masks=on)[0],
                         jit_call(joint, [audio, video, caption2], masks=on)[0], atol=1e-4)


def test_equals_self_attention_over_concatenation_when_weights_are_shared(jit_call):
  joint = JointAttention([16, 16], num_heads=2, head_dim=8, qk_norm="rms", rngs=nnx.Rngs(0))
  nnx.update(joint.streams[1], nnx.state(joint.streams[0]))
  single = Attention(16, 2, 8, use_bias=True, qk_norm="rms", rngs=nnx.Rngs(5))
  nnx.update(single, nnx.state(joint.streams[0]))
  a, b = _normal(1, (2, 5, 16)), _normal(2, (2, 3, 16))
  mask_b = jnp.asarray([[1, 0, 1], [1, 1, 1]], bool)
  rope = RopeConfig(rot_dim=4, layout="interleaved")
  pos_a, pos_b = jnp.arange(5.0), jnp.arange(3.0) * 1.5
  outs = jit_call(joint, [a, b], masks=[None, mask_b], rope=rope, positions=[pos_a, pos_b])
  x = jnp.concatenate([a, b], axis=1)
  mask = jnp.concatenate([jnp.ones((2, 5), bool), mask_b], axis=1)
  pos = jnp.concatenate([pos_a, pos_b])
  ref = jit_call(single, x, key_mask=mask, rope=rope, q_positions=pos, k_positions=pos)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), ref, atol=1e-5)


def test_stream_without_positions_gets_no_rope(joint, jit_call):
  audio, video, caption = _streams()
  rope = RopeConfig(rot_dim=8, layout="interleaved")
  positions = [jnp.arange(6.0), time_positions(3, 8.0, 16.0), None]
  out = jit_call(joint, [audio, video, caption], rope=rope, positions=positions)
  perm = np.array([2, 0, 3, 1])
  permuted = jit_call(joint, [audio, video, caption[:, perm]], rope=rope, positions=positions)
  np.testing.assert_allclose(permuted[0], out[0], atol=1e-5)
  # Control: permuting a rotated stream (video) changes the audio output.
  shuffled = jit_call(joint, [audio, video[:, ::-1], caption], rope=rope, positions=positions)
  assert not np.allclose(shuffled[0], out[0], atol=1e-4)


def test_streams_share_one_time_axis(jit_call):
  # Audio at 16 Hz and video at 4 fps; shifting both by 2 s leaves every output unchanged.
  joint = JointAttention([16, 12], num_heads=2, head_dim=8, rngs=nnx.Rngs(0))
  audio, video = _normal(1, (1, 8, 16)), _normal(2, (1, 2, 12))
  rope = RopeConfig(rot_dim=8, layout="interleaved")

  def run(seconds):
    positions = [time_positions(8, 16.0, 16.0, offset=16.0 * seconds),
                 time_positions(2, 4.0, 16.0, offset=16.0 * seconds)]
    return jit_call(joint, [audio, video], rope=rope, positions=positions)

  base, shifted = run(0.0), run(2.0)
  for a, b in zip(base, shifted, strict=True):
    np.testing.assert_allclose(a, b, atol=1e-4)
  wrong_rate = jit_call(joint, [audio, video], rope=rope,
                        positions=[jnp.arange(8.0), jnp.arange(2.0)])
  assert not np.allclose(wrong_rate[0], base[0], atol=1e-4)


def test_rope_masks_turn_rope_off_per_token(jit_call):
  joint = JointAttention([16], num_heads=2, head_dim=8, rngs=nnx.Rngs(0))
  x = _normal(1, (1, 5, 16))
  rope = RopeConfig(rot_dim=8)
  off = jit_call(joint, [x], rope=rope, positions=[jnp.arange(5.0) * 3],
                 rope_masks=[jnp.zeros((1, 5), bool)])
  np.testing.assert_allclose(off[0], jit_call(joint, [x])[0], atol=1e-6)


def test_heads_only_streams_and_errors():
  joint = JointAttention([16, 8], num_heads=2, head_dim=4, use_out_proj=[True, False],
                         rngs=nnx.Rngs(0))
  outs = joint([_normal(1, (1, 3, 16)), _normal(2, (1, 2, 8))])
  assert outs[0].shape == (1, 3, 16) and outs[1].shape == (1, 2, 8)  # 2 heads x 4 = 8.
  assert joint.streams[1].out is None
  with pytest.raises(ValueError, match="streams"):
    joint([_normal(1, (1, 3, 16))])
  with pytest.raises(ValueError, match="mask"):
    joint([_normal(1, (1, 3, 16)), _normal(2, (1, 2, 8))], masks=[None, jnp.ones((1, 3), bool)])
  with pytest.raises(ValueError, match="use_out_proj"):
    JointAttention([16, 8], 2, 4, use_out_proj=[True], rngs=nnx.Rngs(0))


def test_key_value_only_streams_give_the_same_outputs(joint, jit_call):
  # audiogen_omni §2.4 pre-only block: video and caption give keys and values but no queries.
  streams = _streams()
  masks = [None, jnp.asarray([[1, 1, 0], [1, 1, 1]], bool), None]
  rope = RopeConfig(rot_dim=8, layout="interleaved")
  positions = [jnp.arange(6.0), time_positions(3, 8.0, 16.0), None]
  full = jit_call(joint, streams, masks=masks, rope=rope, positions=positions)
  kv_only = jit_call(joint, streams, masks=masks, rope=rope, positions=positions,
                     query_streams=[True, False, False])
  assert kv_only[1] is None and kv_only[2] is None
  np.testing.assert_allclose(kv_only[0], full[0], atol=1e-6)
  with pytest.raises(ValueError, match="query_streams"):
    joint(streams, query_streams=[False, False, False])
