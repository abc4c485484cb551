"""AudioGen-Omni's lyrics / transcript (LT) encoder: the spec's packed layout (§2.1, §7.7) and the
duration-aligned layout (`lyrics_aligned`, flowav's option for small models)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from flowav.models import audiogen_omni as ag
from tests.models.audiogen_omni_testlib import jit_method, make_batch, tiny_config, tiny_model, velocity

T3 = np.array([0.3, 0.6, 0.9], np.float32)


def test_lyrics_encoder_padding_invariance():  # §7.7
  model = tiny_model()
  encoder = model.lyrics
  ids = np.array([[5, 9, 2, 0, 0, 0], [7, 0, 3, 11, 0, 4]], np.int32)
  mask = np.array([[1, 1, 1, 0, 0, 0], [1, 0, 1, 1, 0, 1]], bool)
  run = {n: jax.jit(lambda i, m, n=n: encoder(i, m, n)) for n in (32, 48)}
  out, valid = run[32](ids, mask)
  assert out.shape == (2, 32, 32)
  np.testing.assert_array_equal(valid.sum(1), [3, 4])
  np.testing.assert_array_equal(np.asarray(out)[~np.asarray(valid)], 0.0)
  assert np.all(np.abs(np.asarray(out)[np.asarray(valid)]).max(-1) > 0)
  packed = np.array([[5, 9, 2, 0, 0, 0], [7, 3, 11, 4, 0, 0]], np.int32)  # frame i = token i
  np.testing.assert_allclose(run[32](packed, packed > 0)[0], out, atol=1e-6)
  noisy = np.where(mask, ids, 33)  # pad positions hold other ids
  np.testing.assert_allclose(run[32](noisy, mask)[0], out, atol=1e-6)
  longer, _ = run[48](ids, mask)  # a longer frame budget only adds padding
  np.testing.assert_allclose(longer[:, :32], out, atol=1e-5)
  np.testing.assert_array_equal(longer[:, 32:], 0.0)


def _aligned_model():
  return tiny_model(lyrics_key="transcript_ids", lyric_vocab=40, lyrics_aligned=True)


def test_aligned_lyrics_put_each_phone_on_its_own_frames():
  encoder = _aligned_model().lyrics
  ids = np.array([[5, 9, 2, 0], [7, 30, 3, 11]], np.int32)
  mask = np.array([[1, 1, 1, 0], [1, 0, 1, 1]], bool)
  durations = np.array([[3, 1, 4, 9], [2, 5, 6, 1]], np.int32)  # masked phones' frames ignored
  run = jax.jit(lambda i, m, d: encoder(i, m, 16, d))
  out, valid = run(ids, mask, durations)
  np.testing.assert_array_equal(valid.sum(1), [8, 9])
  frame_ids = np.zeros((2, 16), np.int32)
  frame_ids[0, :8] = [5, 5, 5, 9, 2, 2, 2, 2]
  frame_ids[1, :9] = [7, 7, 3, 3, 3, 3, 3, 3, 11]
  expected, expected_valid = jax.jit(encoder._encode)(frame_ids, frame_ids > 0)  # noqa: SLF001
  np.testing.assert_array_equal(valid, expected_valid)
  np.testing.assert_allclose(out, expected, atol=1e-6)
  np.testing.assert_array_equal(np.asarray(out)[~np.asarray(valid)], 0.0)
  noisy_pads = run(np.where(mask, ids, 33), mask, np.where(mask, durations, 2))[0]
  np.testing.assert_allclose(noisy_pads, out, atol=1e-6)
  moved = run(ids, mask, np.array([[2, 2, 4, 9], [2, 5, 6, 1]], np.int32))[0]
  assert np.abs(np.asarray(moved[0, 2]) - np.asarray(out[0, 2])).max() > 1e-3  # frame 2 is now '9'
  np.testing.assert_allclose(moved[1], out[1], atol=1e-6)
  with pytest.raises(ValueError, match="durations"):
    encoder(ids, mask, 16)


def test_aligned_model_reads_phone_durations_and_names_them_when_missing():
  model = _aligned_model()
  batch = make_batch(model.cfg)
  batch["transcript_ids"] = np.minimum(batch.pop("lyric_ids"), 40)
  batch["transcript_mask"] = batch.pop("lyric_mask")
  size, phones = batch["transcript_ids"].shape
  batch["phone_durations"] = np.full((size, phones), 2, np.int32)
  forward = jit_method(model, velocity)
  out = forward(batch, batch["audio_latents"], T3)
  slower = {**batch, "phone_durations": np.full((size, phones), 1, np.int32)}
  assert np.abs(np.asarray(forward(slower, batch["audio_latents"], T3)) - out).max() > 1e-4
  # A masked transcript has no effect through either path (joint attention, input addition).
  masked = {**batch, "transcript_mask": np.zeros_like(batch["transcript_mask"])}
  reference = forward(masked, batch["audio_latents"], T3)
  other = {**masked, "transcript_ids": np.roll(batch["transcript_ids"], 1, axis=0),
           "phone_durations": np.full((size, phones), 3, np.int32)}
  np.testing.assert_allclose(forward(other, batch["audio_latents"], T3), reference, atol=1e-6)
  assert np.abs(np.asarray(reference) - out).max() > 1e-4
  del batch["phone_durations"]
  with pytest.raises(KeyError, match="phone_durations"):
    model.conditions(batch)


def test_aligned_lyrics_need_phone_transcripts():
  with pytest.raises(ValueError, match="lyrics_aligned"):
    tiny_config(lyrics_aligned=True)  # tiny's lyric stream is byte lyrics, without durations
  assert not ag.AudioGenOmniConfig(**ag.VARIANTS["paper"]).lyrics_aligned  # the spec's layout
  assert ag.AudioGenOmniConfig(**ag.VARIANTS["demo"]).lyrics_aligned
