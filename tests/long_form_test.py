"""Sound past the model's window: `Run.sample(known=...)` inpainting and `flowav.long_form`."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from configs import vssflow as vssflow_config
from flowav import generate, long_form
from flowav.audio.codec import LatentStats
from flowav.data import inputs, pipeline, records
from flowav.train import runtime
from flowav.train.state import split_model
from tests.models.audiogen_omni_testlib import perturb_zero_params


def test_plan_windows_cover_the_clip_with_full_windows():
  assert long_form.plan_windows(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
  # The last window is moved back to end at the clip's end: full length, a larger overlap.
  assert long_form.plan_windows(11, 4, 1) == [(0, 4), (3, 7), (6, 10), (7, 11)]
  assert long_form.plan_windows(8, 4, 0) == [(0, 4), (4, 8)]
  assert long_form.plan_windows(3, 4, 1) == [(0, 3)]
  for bad in ((10, 4, 4), (10, 4, -1), (0, 4, 1)):
    with pytest.raises(ValueError, match="overlap < window"):
      long_form.plan_windows(*bad)


def _tiny_run(data_dir, method: str = "euler") -> tuple[generate.Run, records.DatasetInfo]:
  """An untrained VSSFlow tiny whose zero-initialised layers are perturbed, so its velocity
  depends on the video (a zero output layer would make every sample the noise)."""
  config = vssflow_config.get_config("tiny")
  config.data.dir, config.sample.method = str(data_dir), method
  model = runtime.build_model(config)
  perturb_zero_params(model, seed=0)
  graphdef, params, rest = split_model(model)
  info = records.DatasetInfo.load(data_dir)
  run = generate.Run(config=config, graphdef=graphdef, params=params, rest=rest, weights="raw",
                     step=0, meta={}, codec=None, stats=LatentStats.from_dict(info.latent_stats))
  return run, info


def _video(info: records.DatasetInfo, seconds: float, seed: int) -> np.ndarray:
  """Random video features `[seconds * video rate, D]`."""
  frames = int(round(seconds * float(info.rates["video"])))
  dim = pipeline.config_lengths(info, vssflow_config.get_config("tiny").data).video_dim
  return np.random.default_rng(seed).normal(size=(frames, dim)).astype(np.float32)


def _window_batch(run, info, features, seconds):
  lengths = pipeline.config_lengths(info, run.config.data)
  clip = inputs.features_clip(info, lengths, float(run.config.data.clip_seconds),
                              video_features=features, duration=seconds)
  return inputs.stack([clip.prepared])


@pytest.mark.parametrize("method", ["euler", "heun", "dopri5"])
def test_known_frames_come_back_and_an_empty_mask_changes_nothing(tiny_demo, method):
  run, info = _tiny_run(tiny_demo, method)
  window = float(run.config.data.clip_seconds)
  batch = _window_batch(run, info, _video(info, window, seed=1), window)
  key = jax.random.key(3)
  shape = batch["audio_latents"].shape
  known = np.random.default_rng(2).normal(size=shape).astype(np.float32) * 2 + 1
  mask = np.zeros(shape[:2], bool)
  mask[:, :10] = True
  out = run.sample(batch, key, known=known, known_mask=mask)
  np.testing.assert_allclose(out[:, :10], known[:, :10], atol=1e-4)  # any solver lands on them
  plain = run.sample(batch, key)
  assert not np.allclose(out[:, 10:], plain[:, 10:], atol=1e-3)  # the rest continues them
  empty = run.sample(batch, key, known=known, known_mask=np.zeros_like(mask))
  np.testing.assert_allclose(empty, plain, atol=1e-5)
  with pytest.raises(ValueError, match="known_mask"):
    run.sample(batch, key, known=known[:, :5], known_mask=mask[:, :5])


def test_long_form_windows_continue_each_other_and_follow_their_own_video(tiny_demo):
  run, info = _tiny_run(tiny_demo)
  lengths = pipeline.config_lengths(info, run.config.data)
  audio_rate, video_rate = float(info.rates["audio"]), float(info.rates["video"])
  window = float(run.config.data.clip_seconds)  # 0.5 s
  seconds, key = 1.2, jax.random.key(7)
  video = _video(info, seconds, seed=4)
  lat, spans = long_form.sample_long(run, info, lengths, duration=seconds, key=key,
                                     video_features=video, overlap_s=0.1)
  assert lat.shape == (int(np.floor(seconds * audio_rate + 1e-6)), lengths.audio_dim)
  assert len(spans) == 3 and spans[-1][1] == lat.shape[0] and np.all(np.isfinite(lat))
  # Window 0 is a plain sample of the first 0.5 s of video with the first window's key.
  first = run.sample(_window_batch(run, info, video[:int(round(window * video_rate))], window),
                     jax.random.fold_in(key, 0))
  np.testing.assert_allclose(lat[:spans[0][1]], first[0, :spans[0][1]], atol=1e-5)
  # Another video after 0.9 s reaches only the last window's frames.
  changed = video.copy()
  changed[int(0.9 * video_rate):] = _video(info, seconds, seed=5)[int(0.9 * video_rate):]
  lat2, _ = long_form.sample_long(run, info, lengths, duration=seconds, key=key,
                                  video_features=changed, overlap_s=0.1)
  new_from = spans[1][1]  # the last window's first new frame
  np.testing.assert_array_equal(lat2[:new_from], lat[:new_from])
  assert not np.allclose(lat2[new_from:], lat[new_from:], atol=1e-3)
  with pytest.raises(ValueError, match="longer than the video"):
    long_form.sample_long(run, info, lengths, duration=2.0, key=key, video_features=video,
                          overlap_s=0.1)
  with pytest.raises(ValueError, match="--window_overlap"):
    long_form.sample_long(run, info, lengths, duration=seconds, key=key, video_features=video,
                          overlap_s=window)
