"""grain pipeline: global indexing, crop/pad with masks, resumable position, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from flowav.audio.codec import LatentStats
from flowav.data import pipeline, records, schema

RATES = {"audio": 20.0, "video": 5.0}


def _example(i: int, frames: int, speech: bool) -> dict:
  rng = np.random.default_rng(i)
  ex = {
    "clip_id": f"clip-{i}", "task_id": np.int32(schema.TASKS["speech" if speech else "sound"]),
    "start_s": np.float32(0), "duration_s": np.float32(frames / RATES["audio"]),
    "audio_latents": rng.standard_normal((frames, 3)).astype(np.float32) + i,
    "audio_mask": np.ones((frames,), bool),
    "video_features": np.full((frames // 4, 2), i, np.float32),
    "video_mask": np.ones((frames // 4,), bool),
  }
  if speech:
    ex.update(transcript_ids=np.array([1, 2, 3], np.int32), transcript_mask=np.ones(3, bool),
              phone_durations=np.array([4, 8, frames - 12], np.int32),
              speaker_embedding=np.ones(4, np.float32), speaker_mask=np.asarray(True))
  return ex


def _dataset(tmp_path, n=10, frames=40):
  names = []
  for k in range(2):
    recs = [records.encode_example(_example(i, frames, i % 2 == 1)) for i in range(k, n, 2)]
    name = records.shard_name("train", k, 2)
    records.write_shard(tmp_path / name, recs)
    names.append(name)
  stats = LatentStats(np.zeros(3, np.float32), np.ones(3, np.float32))
  records.DatasetInfo(name="t", codec={"name": "mel"}, latent_stats=stats.to_dict(), rates=RATES,
                      dims={"audio": 3, "video": 2, "speaker": 4},
                      splits={"train": {"num_examples": n, "shards": names}}).save(tmp_path)
  return records.DatasetInfo.load(tmp_path)


def test_crop_and_pad_keeps_streams_aligned_and_masks_padding():
  ex = _example(1, 40, speech=True)
  lengths = pipeline.Lengths(audio=48, video=12, phones=5, speaker_dim=4, video_dim=2, audio_dim=3)
  out = pipeline.crop_and_pad(ex, lengths, RATES)
  assert out["audio_latents"].shape == (48, 3) and out["audio_mask"].sum() == 40
  assert not out["audio_latents"][40:].any()
  assert out["video_mask"].sum() == 10 and out["transcript_mask"].tolist() == [1, 1, 1, 0, 0]
  # A crop starting 8 audio frames in moves video by 2 frames and trims the first phones.
  lengths = pipeline.Lengths(audio=20, video=5, phones=5, speaker_dim=4, video_dim=2, audio_dim=3)
  out = pipeline.crop_and_pad(ex, lengths, RATES, offset_frames=8)
  assert out["phone_durations"].tolist() == [4, 16, 0, 0, 0]
  assert out["transcript_ids"].tolist() == [2, 3, 0, 0, 0]
  assert out["phone_durations"].sum() == 20
  np.testing.assert_allclose(out["start_s"], 8 / RATES["audio"])


def test_absent_streams_are_zero_with_false_masks():
  lengths = pipeline.Lengths(audio=40, video=10, phones=4, speaker_dim=4, video_dim=2, audio_dim=3)
  out = pipeline.crop_and_pad(_example(0, 40, speech=False), lengths, RATES)
  assert not out["transcript_mask"].any() and not out["speaker_mask"]
  assert out["transcript_ids"].shape == (4,) and out["speaker_embedding"].shape == (4,)


def test_text_streams_only_when_asked_caption_as_bytes_lyrics_as_stored():
  ex = {**_example(2, 40, speech=False), "caption": "a bé",
        "lyric_ids": np.array([5, 6, 7, 9], np.int32), "lyric_mask": np.array([1, 1, 1, 0], bool)}
  base = dict(audio=40, video=10, phones=4, speaker_dim=4, video_dim=2, audio_dim=3)
  assert "text_ids" not in pipeline.crop_and_pad(ex, pipeline.Lengths(**base), RATES)
  out = pipeline.crop_and_pad(ex, pipeline.Lengths(**base, text=6, lyrics=2), RATES)
  assert out["text_ids"].tolist() == [ord("a") + 1, ord(" ") + 1, 0x62 + 1, 0xC3 + 1, 0xA9 + 1, 0]
  assert out["text_mask"].tolist() == [1, 1, 1, 1, 1, 0]
  assert out["lyric_ids"].tolist() == [5, 6] and out["lyric_mask"].all()  # truncated to 2
  out = pipeline.crop_and_pad(_example(3, 40, speech=False), pipeline.Lengths(**base, text=3), RATES)
  assert not out["text_mask"].any() and out["text_ids"].shape == (3,)  # no caption: empty


def test_global_indexing_is_independent_of_process_count(tmp_path):
  _dataset(tmp_path)
  lengths = pipeline.Lengths(audio=40, video=10, phones=4, speaker_dim=4, video_dim=2, audio_dim=3)
  one = pipeline.make_dataset(str(tmp_path), "train", lengths=lengths, global_batch=4, seed=3)
  parts = [pipeline.make_dataset(str(tmp_path), "train", lengths=lengths, global_batch=4, seed=3,
                                 process_index=p, process_count=2) for p in range(2)]
  for b in range(6):  # crosses an epoch boundary (10 records, 4 per batch)
    whole = one[b]["record_index"]
    split = np.concatenate([parts[0][b]["record_index"], parts[1][b]["record_index"]])
    np.testing.assert_array_equal(whole, split)
  epoch0 = np.concatenate([one[b]["record_index"] for b in range(2)]).tolist() + \
    one[2]["record_index"][:2].tolist()
  assert sorted(epoch0) == list(range(10)), "each epoch visits every record once"


def test_task_weights_repeat_a_tasks_records_per_epoch_on_any_process_count(tmp_path):
  _dataset(tmp_path)  # records 0-4 (the first shard) are sound, 5-9 speech
  lengths = pipeline.Lengths(audio=40, video=10, phones=4, speaker_dim=4, video_dim=2, audio_dim=3)
  make = lambda **kw: pipeline.make_dataset(str(tmp_path), "train", lengths=lengths, seed=3,
                                            global_batch=5, **kw)
  weights = {"speech": 3, "sound": 1}
  one = make(task_weights=weights)
  epoch = np.concatenate([one[b]["record_index"] for b in range(4)])  # 5 sound + 3 x 5 speech
  counts = np.bincount(epoch, minlength=10)
  assert counts.tolist() == [1] * 5 + [3] * 5
  parts = [make(task_weights=weights, process_index=p, process_count=5) for p in range(5)]
  np.testing.assert_array_equal(np.concatenate([p[6]["record_index"] for p in parts]),
                                one[6]["record_index"])
  only_sound = make(task_weights={"speech": 0})
  assert all(sorted(only_sound[b]["record_index"]) == list(range(5)) for b in range(3))
  # All weights 1 is the unweighted stream.
  np.testing.assert_array_equal(make(task_weights={"speech": 1})[3]["record_index"],
                                make()[3]["record_index"])
  with pytest.raises(ValueError, match="unknown task 'speeech'"):
    make(task_weights={"speeech": 2})
  with pytest.raises(ValueError, match=r"task_weights\['song'\]=1.5"):
    make(task_weights={"song": 1.5})
  with pytest.raises(ValueError, match="leaves no record"):
    make(task_weights={"speech": 0, "sound": 0})


def test_stream_restarts_at_a_global_element_on_any_process_count(tmp_path):
  _dataset(tmp_path)
  lengths = pipeline.Lengths(audio=40, video=10, phones=4, speaker_dim=4, video_dim=2, audio_dim=3)
  make = lambda **kw: pipeline.make_dataset(str(tmp_path), "train", lengths=lengths, seed=3, **kw)
  whole = np.concatenate([make(global_batch=4)[b]["record_index"] for b in range(8)])
  # Resumed after 3 steps of 4 on 2 processes: the iterators read on exactly where it stopped.
  its = [pipeline.to_iterator(make(global_batch=4, start_element=12, process_index=p,
                                   process_count=2), num_threads=1) for p in range(2)]
  for b in range(3):
    got = np.concatenate([next(it)["record_index"] for it in its])
    np.testing.assert_array_equal(got, whole[12 + 4 * b:16 + 4 * b])
  # A changed batch size (resume with --allow_config_change) continues the same element stream.
  ds = make(global_batch=2, start_element=12)
  np.testing.assert_array_equal(ds[1]["record_index"], whole[14:16])
  with pytest.raises(ValueError, match="repeating"):
    make(global_batch=2, start_element=2, repeat=False)


def test_data_position_advances_in_global_units():
  pos = pipeline.DataPosition(step=3, next_element=12, global_batch=4, seed=0, num_records=10)
  assert pos.advance(5).next_element == 20
  assert pos.advance(5, global_batch=8) == pipeline.DataPosition(5, 28, 8, 0, 10)
  assert pipeline.DataPosition.from_json(pos.to_json()) == pos
  with pytest.raises(ValueError, match=r"ckpt/data: data position lacks \['seed'\]"):
    pipeline.DataPosition.from_json({k: v for k, v in pos.to_json().items() if k != "seed"},
                                    source="ckpt/data")


def test_missing_required_key_names_key_and_file(tmp_path):
  ex = _example(0, 40, speech=False)
  del ex["audio_mask"]
  records.write_shard(tmp_path / records.shard_name("train", 0, 1), [records.encode_example(ex)])
  stats = LatentStats(np.zeros(3, np.float32), np.ones(3, np.float32))
  records.DatasetInfo(name="t", codec={}, latent_stats=stats.to_dict(), rates=RATES,
                      dims={"audio": 3, "video": 2},
                      splits={"train": {"num_examples": 1,
                                        "shards": [records.shard_name("train", 0, 1)]}}
                      ).save(tmp_path)
  lengths = pipeline.Lengths(audio=40, video=10, phones=4, speaker_dim=0, video_dim=2, audio_dim=3)
  ds = pipeline.make_dataset(str(tmp_path), "train", lengths=lengths, global_batch=1, seed=0)
  with pytest.raises(schema.SchemaError, match=r"record 0: missing required key 'audio_mask'"):
    ds[0]


def test_wrong_shape_and_unknown_key_are_named():
  ex = _example(0, 40, speech=False)
  ex["audio_latents"] = ex["audio_latents"][0]
  with pytest.raises(schema.SchemaError, match="'audio_latents' has shape"):
    schema.validate_example(ex, source="f.array_record record 3")
  ex = _example(0, 40, speech=False)
  ex["audio_latent"] = ex.pop("audio_latents")
  with pytest.raises(schema.SchemaError, match="audio_latent"):
    schema.validate_example(ex)


def test_missing_dataset_info_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="dataset_info.json"):
    records.DatasetInfo.load(tmp_path)


def test_duration_matrix_one_hot_rows():
  d = schema.duration_matrix(np.array([2, 0, 3]), 6)
  assert d.shape == (6, 3)
  assert d.sum(1).tolist() == [1, 1, 1, 1, 1, 0]
  assert d[:, 1].sum() == 0
  frames = np.array([0, 0, 2, 2, 2, -1])
  np.testing.assert_array_equal(schema.durations_from_frame_phones(frames, 3), [2, 0, 3])


def _paper_streams_example(frames: int = 40) -> dict:
  rng = np.random.default_rng(7)
  ex = _example(4, frames, speech=False)
  sync = frames * 24 // 20  # RATES_SYNC["sync"] frames over the clip
  ex.update(sync_features=np.arange(sync, dtype=np.float32)[:, None] * np.ones((1, 6), np.float32),
            sync_mask=np.ones((sync,), bool),
            text_embeddings=rng.standard_normal((5, 8)).astype(np.float32),
            text_mask=np.array([1, 1, 1, 0, 0], bool))
  return ex


RATES_SYNC = {**RATES, "sync": 24.0}


def test_sync_features_crop_with_the_audio_and_text_embeddings_replace_tokens():
  ex = _paper_streams_example()
  base = dict(audio=20, video=5, phones=4, speaker_dim=4, video_dim=2, audio_dim=3)
  out = pipeline.crop_and_pad(ex, pipeline.Lengths(**base, text=4, sync=24, sync_dim=6, text_dim=8),
                              RATES_SYNC, offset_frames=10)
  # 10 audio frames at 20/s = 0.5 s = 12 sync frames at 24/s: the window starts at sync frame 12.
  assert out["sync_features"][:, 0].tolist() == list(range(12, 36))
  assert out["sync_mask"].sum() == 24
  np.testing.assert_array_equal(out["text_embeddings"][:3], ex["text_embeddings"][:3])
  assert out["text_mask"].tolist() == [1, 1, 1, 0] and "text_ids" not in out
  assert not out["text_embeddings"][3:].any()
  # A dataset without them: zeros with false masks, same shapes.
  out = pipeline.crop_and_pad(_example(0, 40, speech=False),
                              pipeline.Lengths(**base, text=4, sync=24, sync_dim=6, text_dim=8),
                              RATES_SYNC)
  assert out["sync_features"].shape == (24, 6) and not out["sync_mask"].any()
  assert out["text_embeddings"].shape == (4, 8) and not out["text_mask"].any()


def test_lengths_read_sync_and_text_widths_from_the_dataset_info():
  info = records.DatasetInfo(name="t", codec={}, latent_stats={}, rates=RATES_SYNC,
                             dims={"audio": 3, "video": 2, "sync": 6, "text": 8}, splits={})
  lengths = pipeline.lengths_for(info, 2.0, 4, max_text_tokens=77)
  assert (lengths.sync, lengths.sync_dim, lengths.text, lengths.text_dim) == (48, 6, 77, 8)
  assert pipeline.lengths_for(records.DatasetInfo(
    name="t", codec={}, latent_stats={}, rates=RATES, dims={"audio": 3, "video": 2},
    splits={}), 2.0, 4).sync == 0


@pytest.mark.slow  # ~20 s; `make test` stays under 10 minutes
def test_audiogen_omni_reads_the_sync_and_text_embedding_streams():
  """The model's paper-style inputs (sync features, T5 states) arrive from the pipeline: changing
  the sync features inside the window changes the velocity."""
  import jax.numpy as jnp  # noqa: PLC0415
  from flax import nnx  # noqa: PLC0415

  from flowav import models  # noqa: PLC0415

  spec = {"name": "audiogen_omni", "variant": "tiny", "audio_channels": 3, "audio_rate": 20.0,
          "video_dim": 2, "video_rate": 5.0, "sync_dim": 6, "text_dim": 8, "lyrics_key": "none"}
  model = models.build_model(spec, rngs=nnx.Rngs(0))
  for _, p in nnx.iter_graph(model):  # zero-initialised gates and outputs would hide the inputs
    if isinstance(p, nnx.Param):
      p[...] = p[...] + 0.05
  lengths = pipeline.Lengths(audio=20, video=5, phones=4, speaker_dim=4, video_dim=2, audio_dim=3,
                             text=4, sync=24, sync_dim=6, text_dim=8)
  ex = _paper_streams_example()
  batch = {k: jnp.asarray(v)[None] for k, v in pipeline.crop_and_pad(ex, lengths, RATES_SYNC).items()}
  x, t = jnp.ones((1, 20, 3)), jnp.full((1,), 0.5)
  v0 = model(x, t, model.conditions(batch))
  batch["sync_features"] = batch["sync_features"] * -1.0
  assert float(jnp.abs(model(x, t, model.conditions(batch)) - v0).max()) > 1e-4
  batch["text_embeddings"] = batch["text_embeddings"] + 1.0
  v1 = model(x, t, model.conditions(batch))
  batch["text_embeddings"] = batch["text_embeddings"].at[:, 3:].set(7.0)  # masked: no effect
  np.testing.assert_allclose(model(x, t, model.conditions(batch)), v1, atol=1e-6)


def test_feature_stats_match_numpy_over_the_valid_frames(tiny_demo):
  info = records.DatasetInfo.load(str(tiny_demo))
  frames = []
  for path in info.shard_paths(str(tiny_demo), "train"):
    for data in records.read_shard(path):
      ex = records.decode_example(data, source="test")
      frames.append(np.asarray(ex["video_features"])[np.asarray(ex["video_mask"], bool)])
  want = np.concatenate(frames).astype(np.float64)
  mean, std, count = pipeline.feature_stats(str(tiny_demo), "train", "video_features")
  assert count == want.shape[0] and mean.shape == (want.shape[1],)
  np.testing.assert_allclose(mean, want.mean(0), atol=1e-6)
  np.testing.assert_allclose(std, want.std(0), atol=1e-5)
  _, _, first = pipeline.feature_stats(str(tiny_demo), "train", "video_features", max_examples=1)
  assert first == frames[0].shape[0]
  with pytest.raises(ValueError, match="not a schema field with a mask"):
    pipeline.feature_stats(str(tiny_demo), "train", "no_such_key")
  with pytest.raises(ValueError, match="sync_features"):  # the demo has no sync features
    pipeline.feature_stats(str(tiny_demo), "train", "sync_features")
