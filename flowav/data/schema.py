"""The canonical example schema: one key set for all four systems (DESIGN.md, "Contracts").

An example is a flat dict of numpy arrays (and a few strings). Every stream has a boolean mask of its
length; a modality that is absent is stored with length 0 (or padded later) and an all-false mask.
Rates are dataset-level facts stored in `dataset_info.json` (`flowav.data.records.DatasetInfo`), not
per example: the audio latent frame rate comes from the codec, the video/sync feature rates from the
encoders that produced them.

Symbolic dimensions: T_a audio latent frames, C_a latent channels, T_v video feature frames, D_v
video feature width, T_s sync frames, D_s sync width, L_t text tokens, D_t text width, L_p transcript
(phoneme) tokens, L_l lyric tokens, D_spk speaker embedding width, H/W/C video latent grid.

Phone timing is stored compactly as `phone_durations[L_p]`: frames of the audio latent grid spent
on each phone. The duration matrix D[T_a, L_p] of VSSFlow (spec §1, §2.1) is derived from it by
`duration_matrix` (one-hot rows; rows past the speech are all zero).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

SCHEMA_VERSION = 1

# Task ids: used for logging, per-task metrics and per-task data weights; models infer the task from
# which conditions are present (AudioGen-Omni spec §1) or use it explicitly.
TASKS = {"sound": 0, "speech": 1, "song": 2, "music": 3, "t2av": 4}
TASK_NAMES = {v: k for k, v in TASKS.items()}


@dataclasses.dataclass(frozen=True)
class Field:
  """One schema key: dtype kind ('f' float32, 'i' int32, 'b' bool, 's' string), symbolic shape."""
  name: str
  kind: str
  dims: tuple[str, ...]
  doc: str
  mask: str | None = None  # name of the boolean mask field covering dims[0]
  required: bool = False


FIELDS: tuple[Field, ...] = (
  Field("clip_id", "s", (), "stable unique id of the clip", required=True),
  Field("task_id", "i", (), f"task id, one of {TASKS}", required=True),
  Field("start_s", "f", (), "start of this crop within the source clip, seconds", required=True),
  Field("duration_s", "f", (), "duration of the source clip in seconds", required=True),
  Field("audio_latents", "f", ("T_a", "C_a"), "codec latents (unnormalised)", "audio_mask", True),
  Field("audio_mask", "b", ("T_a",), "false on padded audio frames", required=True),
  Field("video_features", "f", ("T_v", "D_v"), "frozen per-frame video features", "video_mask"),
  Field("video_mask", "b", ("T_v",), "false on padded / missing video frames"),
  Field("video_latents", "f", ("T_v", "H", "W", "C"), "video latents (T2AV)", "video_latent_mask"),
  Field("video_latent_mask", "b", ("T_v",), "false on padded video latent frames"),
  Field("sync_features", "f", ("T_s", "D_s"), "frame-aligned sync features", "sync_mask"),
  Field("sync_mask", "b", ("T_s",), "false on padded / missing sync frames"),
  Field("text_embeddings", "f", ("L_t", "D_t"), "frozen text-encoder states", "text_mask"),
  Field("text_ids", "i", ("L_t",), "caption token ids (0 = pad)", "text_mask"),
  Field("text_mask", "b", ("L_t",), "false on padded / missing caption tokens"),
  Field("transcript_ids", "i", ("L_p",), "phoneme ids (0 = pad)", "transcript_mask"),
  Field("transcript_mask", "b", ("L_p",), "false on padded / missing phonemes"),
  Field("phone_durations", "i", ("L_p",), "audio latent frames per phoneme", "transcript_mask"),
  Field("lyric_ids", "i", ("L_l",), "lyric token ids (0 = pad)", "lyric_mask"),
  Field("lyric_mask", "b", ("L_l",), "false on padded / missing lyric tokens"),
  Field("speaker_embedding", "f", ("D_spk",), "speaker embedding of a reference utterance"),
  Field("speaker_mask", "b", (), "false if there is no speaker reference"),
  Field("caption", "s", (), "free-text caption (text-to-audio)"),
  Field("transcript", "s", (), "spoken or sung text, plain"),
)
FIELDS_BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
REQUIRED = tuple(f.name for f in FIELDS if f.required)

# How each system's spec names its inputs, mapped to schema keys (specs/*.md, §1 of each).
SPEC_NAMES: dict[str, dict[str, str]] = {
  "vssflow": {
    "lat_mean/lat_std (z)": "audio_latents", "clip": "video_features", "spk": "speaker_embedding",
    "phone_ids": "transcript_ids", "dur (D matrix)": "phone_durations", "task": "task_id",
    "n_valid": "audio_mask",
  },
  "flowley": {
    "lat_mean/lat_std": "audio_latents", "video": "video_features", "text": "text_embeddings",
    "text_len": "text_mask", "caption": "caption",
  },
  "audiogen_omni": {
    "audio_latents": "audio_latents", "audio_mask": "audio_mask", "video_feats": "video_features",
    "sync_feats": "sync_features", "text_emb": "text_embeddings", "text_mask": "text_mask",
    "lyric_ids": "lyric_ids", "lyric_mask": "lyric_mask", "seconds_start": "start_s",
    "seconds_total": "duration_s", "video_mask": "video_mask", "sync_mask": "sync_mask",
  },
  "syncflow": {
    "audio latents": "audio_latents", "video latents": "video_latents",
    "text embeddings": "text_embeddings", "caption": "caption",
  },
}

def byte_tokens(text: str) -> np.ndarray:
  """Caption / lyric token ids: the text's UTF-8 bytes + 1 (0 is padding), int32 `[L]`."""
  return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + 1


_KIND_CHECK = {
  "f": lambda a: np.issubdtype(a.dtype, np.floating),
  "i": lambda a: np.issubdtype(a.dtype, np.integer),
  "b": lambda a: a.dtype == np.bool_,
}


class SchemaError(ValueError):
  """A record does not follow the schema; the message names the key and the source."""


def validate_example(example: Mapping[str, Any], *, source: str = "<example>",
                     require: tuple[str, ...] = ()) -> None:
  """Checks keys, dtypes, ranks and mask lengths of one example.

  Args:
    example: the record as a dict.
    source: where it came from (file and record index), used in error messages.
    require: extra keys this consumer needs beyond the always-required ones.
  Raises:
    SchemaError naming the key and `source`.
  """
  for name in REQUIRED + tuple(require):
    if name not in example:
      raise SchemaError(f"{source}: missing required key {name!r}")
  for name, value in example.items():
    field = FIELDS_BY_NAME.get(name)
    if field is None:
      raise SchemaError(f"{source}: unknown key {name!r}; schema keys: {sorted(FIELDS_BY_NAME)}")
    if field.kind == "s":
      if not isinstance(value, (str, bytes)):
        raise SchemaError(f"{source}: key {name!r} must be a string, got {type(value).__name__}")
      continue
    arr = np.asarray(value)
    if arr.ndim != len(field.dims):
      raise SchemaError(f"{source}: key {name!r} has shape {arr.shape}, expected rank "
                        f"{len(field.dims)} {list(field.dims)}")
    if not _KIND_CHECK[field.kind](arr):
      raise SchemaError(f"{source}: key {name!r} has dtype {arr.dtype}, expected "
                        f"{ {'f': 'float', 'i': 'integer', 'b': 'bool'}[field.kind]}")
    if field.kind == "f" and arr.size and not np.all(np.isfinite(arr)):
      raise SchemaError(f"{source}: key {name!r} contains NaN or Inf")
  for field in FIELDS:
    if field.mask and field.name in example:
      if field.mask not in example:
        raise SchemaError(f"{source}: key {field.name!r} present without its mask {field.mask!r}")
      n, m = np.shape(example[field.name])[0], np.shape(example[field.mask])[0]
      if n != m:
        raise SchemaError(f"{source}: key {field.name!r} has {n} frames but {field.mask!r} has {m}")
  if "task_id" in example and int(example["task_id"]) not in TASK_NAMES:
    raise SchemaError(f"{source}: task_id={int(example['task_id'])} is not one of {TASKS}")


def duration_matrix(durations: np.ndarray, num_frames: int) -> np.ndarray:
  """Expands per-phone frame counts into VSSFlow's one-hot duration matrix (spec §1).

  Works on numpy or jax arrays.

  Args:
    durations: [..., L_p] integer frames per phone (0 for padding).
    num_frames: T_a.
  Returns:
    [..., T_a, L_p] float32: D[t, p] = 1 iff frame t lies within phone p; rows past the total
    duration (and beyond `num_frames`) are all zero.
  """
  xp = _namespace(durations)
  ends = xp.cumsum(durations, axis=-1)  # [..., L_p]
  starts = ends - durations
  t = xp.arange(num_frames)[:, None]  # [T, 1]
  inside = (t >= starts[..., None, :]) & (t < ends[..., None, :])
  return inside.astype(xp.float32)


def durations_from_frame_phones(frame_phone: np.ndarray, num_phones: int) -> np.ndarray:
  """Inverse of `duration_matrix` for monotonic alignments: counts frames per phone.

  Args:
    frame_phone: [..., T_a] int, the phone index of each frame, -1 for frames with no phone.
    num_phones: L_p.
  Returns:
    [..., L_p] int32 frame counts.
  """
  xp = _namespace(frame_phone)
  onehot = frame_phone[..., :, None] == xp.arange(num_phones)
  return onehot.sum(axis=-2).astype(xp.int32)


def _namespace(x: Any) -> Any:
  if isinstance(x, np.ndarray):
    return np
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jnp
