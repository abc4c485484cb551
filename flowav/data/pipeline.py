"""grain input pipeline: shuffle, crop/pad with masks, normalise, batch, shard per process.

Data are indexed globally: the k-th element of the global stream is record `order[k]` of an
epoch-wise shuffled, endlessly repeated dataset (records of up-weighted tasks repeated within
each epoch, `epoch_records`). A stream that starts at element s has global batch
b = elements [s + b*G, s + (b+1)*G); process p of n reads the contiguous slice
[s + b*G + p*L, s + b*G + (p+1)*L) with L = G/n. So the data a run sees depends only on (seed,
global position), not on how many processes read it. The position is a `DataPosition` (global
units, saved in every checkpoint), and a resumed run restarts the stream at its next element, on
any number of processes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

from flowav.audio.codec import LatentStats
from flowav.data import records, schema


@dataclasses.dataclass(frozen=True)
class Lengths:
  """Fixed per-batch lengths of each stream (frames / tokens)."""
  audio: int
  video: int
  phones: int
  speaker_dim: int
  video_dim: int
  audio_dim: int
  # Caption / lyric token streams (`text_ids`, `lyric_ids`): emitted only when > 0, for models that
  # read text as tokens (AudioGen-Omni's demo variant); 0 leaves them out of the batch.
  text: int = 0
  lyrics: int = 0
  # Streams of datasets that store them (AudioGen-Omni `paper` / `mmaudio_s` inputs): frame-aligned
  # sync features (`rates['sync']`, `dims['sync']`), cropped with the audio window; and frozen
  # text-encoder states (`dims['text']`): with text_dim > 0 the caption stream is
  # `text_embeddings [text, text_dim]` instead of `text_ids`.
  sync: int = 0
  sync_dim: int = 0
  text_dim: int = 0


def lengths_for(info: records.DatasetInfo, seconds: float, max_phones: int,
                max_text_tokens: int = 0, max_lyric_tokens: int = 0) -> Lengths:
  """Stream lengths of a `seconds`-long window under the dataset's rates."""
  return Lengths(
    audio=int(math.floor(seconds * info.rates["audio"] + 1e-6)),
    video=int(math.ceil(seconds * info.rates["video"] - 1e-6)),
    phones=max_phones,
    speaker_dim=int(info.dims.get("speaker", 0)),
    video_dim=int(info.dims["video"]),
    audio_dim=int(info.dims["audio"]),
    text=max_text_tokens, lyrics=max_lyric_tokens,
    sync=int(math.ceil(seconds * info.rates["sync"] - 1e-6)) if "sync" in info.rates else 0,
    sync_dim=int(info.dims.get("sync", 0)), text_dim=int(info.dims.get("text", 0)),
  )


def config_lengths(info: records.DatasetInfo, data: Any) -> Lengths:
  """`lengths_for` from a config's data section (clip_seconds, max_phones, max_text_tokens,
  max_lyric_tokens)."""
  return lengths_for(info, float(data.clip_seconds), int(data.max_phones),
                     int(data.get("max_text_tokens", 0)), int(data.get("max_lyric_tokens", 0)))


def _tokens(ex: Mapping[str, Any], ids_key: str, text_key: str | None, n: int
            ) -> tuple[np.ndarray, np.ndarray]:
  """Token ids `[n]` and mask: the example's ids, else its text as UTF-8 byte tokens, else none.
  Text streams are not cropped with the audio window (they describe the whole clip)."""
  if ids_key in ex:
    ids = np.asarray(ex[ids_key], np.int32)[np.asarray(ex[ids_key.replace("_ids", "_mask")], bool)]
  elif text_key and ex.get(text_key):
    ids = schema.byte_tokens(str(ex[text_key]))
  else:
    ids = np.zeros((0,), np.int32)
  ids = ids[:n]
  return _fit(ids, n), _fit(np.ones(len(ids), bool), n)


def _embeddings(ex: Mapping[str, Any], n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
  """Text-encoder states `[n, dim]` and mask (valid tokens first), zeros when absent."""
  if "text_embeddings" not in ex:
    return np.zeros((n, dim), np.float32), np.zeros((n,), bool)
  emb = np.asarray(ex["text_embeddings"], np.float32)[np.asarray(ex["text_mask"], bool)][:n]
  return _fit(emb, n), _fit(np.ones(len(emb), bool), n)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
  """Truncates or zero-pads axis 0 to length n."""
  if x.shape[0] >= n:
    return x[:n]
  pad = np.zeros((n - x.shape[0],) + x.shape[1:], x.dtype)
  return np.concatenate([x, pad], axis=0)


def crop_and_pad(ex: Mapping[str, Any], lengths: Lengths, rates: Mapping[str, float],
                 offset_frames: int = 0) -> dict[str, np.ndarray]:
  """Cuts a window of `lengths.audio` latent frames starting at `offset_frames` from every stream,
  keeping them aligned in time, pads to fixed lengths and returns masks.

  Absent optional streams (no key) come back as zeros with all-false masks.
  Returns a dict of fixed-shape numpy arrays (schema keys; strings dropped).
  """
  ta = lengths.audio
  lat = np.asarray(ex["audio_latents"], np.float32)
  amask = np.asarray(ex["audio_mask"], bool)
  out: dict[str, np.ndarray] = {
    "audio_latents": _fit(lat[offset_frames:], ta),
    "audio_mask": _fit(amask[offset_frames:], ta),
    "task_id": np.int32(ex["task_id"]),
    "start_s": np.float32(float(ex["start_s"]) + offset_frames / rates["audio"]),
    "duration_s": np.float32(ex["duration_s"]),
  }
  if "video_features" in ex:
    v0 = int(math.floor(offset_frames * rates["video"] / rates["audio"] + 1e-6))
    out["video_features"] = _fit(np.asarray(ex["video_features"], np.float32)[v0:], lengths.video)
    out["video_mask"] = _fit(np.asarray(ex["video_mask"], bool)[v0:], lengths.video)
  else:
    out["video_features"] = np.zeros((lengths.video, lengths.video_dim), np.float32)
    out["video_mask"] = np.zeros((lengths.video,), bool)
  if "transcript_ids" in ex:
    ids = np.asarray(ex["transcript_ids"], np.int32)
    tmask = np.asarray(ex["transcript_mask"], bool)
    dur = np.asarray(ex["phone_durations"], np.int32)
    # Shift phone boundaries by the crop offset; phones entirely outside the window are dropped.
    ends = np.cumsum(dur) - offset_frames
    starts = ends - dur
    ends, starts = np.clip(ends, 0, ta), np.clip(starts, 0, ta)
    keep = (ends > starts) & tmask
    ids, dur = ids[keep], (ends - starts)[keep].astype(np.int32)
    if ids.shape[0] > lengths.phones:
      raise ValueError(f"clip {ex.get('clip_id')!r} has {ids.shape[0]} phones in a window, more "
                       f"than config.data.max_phones={lengths.phones}")
    out["transcript_ids"] = _fit(ids, lengths.phones)
    out["transcript_mask"] = _fit(np.ones_like(ids, bool), lengths.phones)
    out["phone_durations"] = _fit(dur, lengths.phones)
  else:
    out["transcript_ids"] = np.zeros((lengths.phones,), np.int32)
    out["transcript_mask"] = np.zeros((lengths.phones,), bool)
    out["phone_durations"] = np.zeros((lengths.phones,), np.int32)
  if "speaker_embedding" in ex and lengths.speaker_dim:
    out["speaker_embedding"] = np.asarray(ex["speaker_embedding"], np.float32)
    out["speaker_mask"] = np.asarray(ex["speaker_mask"], bool)
  else:
    out["speaker_embedding"] = np.zeros((lengths.speaker_dim,), np.float32)
    out["speaker_mask"] = np.asarray(False)
  if lengths.sync:
    s0 = int(math.floor(offset_frames * rates["sync"] / rates["audio"] + 1e-6))
    if "sync_features" in ex:
      out["sync_features"] = _fit(np.asarray(ex["sync_features"], np.float32)[s0:], lengths.sync)
      out["sync_mask"] = _fit(np.asarray(ex["sync_mask"], bool)[s0:], lengths.sync)
    else:
      out["sync_features"] = np.zeros((lengths.sync, lengths.sync_dim), np.float32)
      out["sync_mask"] = np.zeros((lengths.sync,), bool)
  if lengths.text and lengths.text_dim:
    out["text_embeddings"], out["text_mask"] = _embeddings(ex, lengths.text, lengths.text_dim)
  elif lengths.text:
    out["text_ids"], out["text_mask"] = _tokens(ex, "text_ids", "caption", lengths.text)
  if lengths.lyrics:
    out["lyric_ids"], out["lyric_mask"] = _tokens(ex, "lyric_ids", None, lengths.lyrics)
  return out


def epoch_records(source, task_weights: Mapping[str, int] | None, *, where: str) -> np.ndarray:
  """Record ids of one training epoch: each record `task_weights[task]` times (default 1; 0 leaves
  the task out), by its `task_id`, in record order. Without weights, every record once.

  Raises ValueError naming `where` and the key for an unknown task or a weight that is not a
  non-negative integer, and when the weights leave no record.
  """
  n = len(source)
  weights = {}
  for task, w in (task_weights or {}).items():
    if task not in schema.TASKS:
      raise ValueError(f"config.data.task_weights: unknown task {task!r}; "
                       f"valid: {sorted(schema.TASKS)}")
    if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 0:
      raise ValueError(f"config.data.task_weights[{task!r}]={w!r}: must be a non-negative integer "
                       "(repeats per epoch)")
    weights[schema.TASKS[task]] = int(w)
  if all(w == 1 for w in weights.values()):
    return np.arange(n)
  repeats = np.ones((n,), np.int64)
  for i in range(n):  # the task id only; ~0.1 ms per record
    task_id = int(records.decode_example(source[i], source=f"{where} record {i}")["task_id"])
    repeats[i] = weights.get(task_id, 1)
  if not repeats.sum():
    raise ValueError(f"{where}: config.data.task_weights={dict(task_weights)} leaves no record")
  return np.repeat(np.arange(n), repeats)


class _ReadExample:
  """Maps a global element id to a prepared example (picklable, for grain workers)."""

  def __init__(self, source, epoch: np.ndarray, data_dir: str, split: str, lengths: Lengths,
               rates: dict[str, float], stats: LatentStats, seed: int, random_crop: bool,
               require: tuple[str, ...]):
    self.source, self.epoch, self.data_dir, self.split = source, epoch, data_dir, split
    self.lengths, self.rates, self.stats = lengths, rates, stats
    self.seed, self.random_crop, self.require = seed, random_crop, require

  def record_index(self, element: int) -> int:
    """Epoch-wise shuffled order: element k of epoch e is a fixed permutation of the epoch's
    record ids (`epoch_records`)."""
    epoch, k = divmod(int(element), len(self.epoch))
    perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.epoch))
    return int(self.epoch[perm[k]])

  def __call__(self, element: int) -> dict[str, np.ndarray]:
    index = self.record_index(element) if self.seed >= 0 else int(element) % len(self.source)
    where = f"{self.data_dir} split {self.split!r} record {index}"
    ex = records.decode_example(self.source[index], source=where)
    schema.validate_example(ex, source=where, require=self.require)
    total = np.asarray(ex["audio_latents"]).shape[0]
    offset = 0
    if self.random_crop and total > self.lengths.audio:
      rng = np.random.default_rng([self.seed, int(element), 1])
      offset = int(rng.integers(0, total - self.lengths.audio + 1))
    out = crop_and_pad(ex, self.lengths, self.rates, offset)
    out["audio_latents"] = self.stats.normalize(out["audio_latents"]) * out["audio_mask"][:, None]
    out["record_index"] = np.int32(index)
    return out


def make_dataset(data_dir: str, split: str, *, lengths: Lengths, global_batch: int,
                 seed: int, shuffle: bool = True, repeat: bool = True, random_crop: bool = False,
                 process_index: int = 0, process_count: int = 1, start_element: int = 0,
                 require: tuple[str, ...] = (),
                 task_weights: Mapping[str, int] | None = None) -> grain.MapDataset:
  """A MapDataset of this process's batches (dicts of [L, ...] numpy arrays).

  Args:
    data_dir: dataset directory with dataset_info.json.
    split: 'train', 'validation', 'test', ...
    lengths: fixed stream lengths.
    global_batch: examples per step over all processes (must divide by process_count).
    seed: shuffle / crop seed.
    shuffle: epoch-wise shuffling (False = record order, for evaluation).
    repeat: endless (training) or one pass (evaluation; the last partial batch is dropped).
    start_element: global element id of the first batch's first row (`DataPosition.next_element`
      of a restored run); only for repeating streams.
    task_weights: training streams only: task name (`schema.TASKS`) -> times each of its records
      appears per epoch (`epoch_records`); unnamed tasks once.
  """
  info = records.DatasetInfo.load(data_dir)
  paths = info.shard_paths(data_dir, split)
  source = grain.sources.ArrayRecordDataSource(paths)
  n = len(source)
  if n == 0:
    raise ValueError(f"{data_dir}: split {split!r} has no records")
  if global_batch % process_count:
    raise ValueError(f"config.data.batch_size={global_batch} does not divide over "
                     f"{process_count} processes")
  if start_element and not repeat:
    raise ValueError("start_element is only meaningful for a repeating (training) stream")
  if task_weights and any(w != 1 for w in task_weights.values()) and not shuffle:
    raise ValueError("task_weights are only meaningful for a shuffled (training) stream")
  local = global_batch // process_count
  stats = LatentStats.from_dict(info.latent_stats)
  epoch = epoch_records(source, task_weights, where=f"{data_dir} split {split!r}")
  read = _ReadExample(source, epoch, data_dir, split, lengths, dict(info.rates), stats,
                      seed if shuffle else -1, random_crop, require)
  num_batches = ((2**62 - start_element) // global_batch) if repeat else n // global_batch
  if num_batches == 0:
    raise ValueError(f"{data_dir}: split {split!r} has {n} records, fewer than one batch of "
                     f"{global_batch}")

  def element_of(j: int) -> int:  # local element j -> global element id
    b, r = divmod(int(j), local)
    return start_element + b * global_batch + process_index * local + r

  ds = grain.MapDataset.range(num_batches * local).map(element_of).map(read)
  return ds.batch(local, drop_remainder=True)


def to_iterator(ds: grain.MapDataset, *, num_threads: int = 2,
                prefetch: int = 4) -> grain.DatasetIterator:
  """An iterator over `ds` with `num_threads` reader threads.

  Its own `get_state` counts this process's batches; training checkpoints record a global
  `DataPosition` instead and rebuild the stream with `make_dataset(start_element=...)`.
  """
  return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                   prefetch_buffer_size=prefetch)))


@dataclasses.dataclass(frozen=True)
class DataPosition:
  """Where the global training stream stands after `step` optimizer steps (checkpoint JSON).

  Everything is in global units, so it means the same on any process count. `next_element` is the
  first element the next step reads; it equals step * global_batch unless the batch size was
  changed on a resume (the stream then continues from this element with the new batch size).
  """
  step: int
  next_element: int
  global_batch: int
  seed: int
  num_records: int

  def advance(self, step: int, global_batch: int | None = None) -> DataPosition:
    """The position after training on to `step` with `global_batch` (default: unchanged)."""
    g = self.global_batch if global_batch is None else int(global_batch)
    return dataclasses.replace(self, step=int(step), global_batch=g,
                               next_element=self.next_element + (int(step) - self.step) * g)

  def to_json(self) -> dict[str, int]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: Mapping[str, Any], *, source: str = "") -> DataPosition:
    missing = sorted({f.name for f in dataclasses.fields(cls)} - set(d))
    if missing:
      raise ValueError(f"{source}: data position lacks {missing} (got {dict(d)})")
    return cls(**{f.name: int(d[f.name]) for f in dataclasses.fields(cls)})


def feature_stats(data_dir: str, split: str, key: str, *,
                  max_examples: int = 4096) -> tuple[np.ndarray, np.ndarray, int]:
  """Per-channel mean and std of `key` `[L, D]` over the valid frames (`<key>`'s mask field) of
  the first `max_examples` records of `split` holding it, in record order (so every process of a
  run gets the same numbers). Returns float32 `(mean [D], std [D], frames counted)`.

  Raises ValueError naming the dataset, split and key when no record has a valid frame of it.
  """
  field = schema.FIELDS_BY_NAME.get(key)
  if field is None or field.mask is None:
    raise ValueError(f"feature_stats: {key!r} is not a schema field with a mask")
  info = records.DatasetInfo.load(data_dir)
  total = total_sq = None
  count = seen = 0
  for path in info.shard_paths(data_dir, split):
    for i, data in enumerate(records.read_shard(path)):
      ex = records.decode_example(data, source=f"{path} record {i}")
      if key not in ex:
        continue
      x = np.asarray(ex[key], np.float64)[np.asarray(ex[field.mask], bool)]
      total = x.sum(0) if total is None else total + x.sum(0)
      total_sq = (x * x).sum(0) if total_sq is None else total_sq + (x * x).sum(0)
      count, seen = count + x.shape[0], seen + 1
      if seen >= max_examples:
        break
    if seen >= max_examples:
      break
  if not count:
    raise ValueError(f"{data_dir}: no record of split {split!r} has a valid frame of {key!r} "
                     f"(needed for its feature statistics)")
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - mean * mean, 0.0))
  return mean.astype(np.float32), std.astype(np.float32), count
