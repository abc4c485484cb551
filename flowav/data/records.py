"""Examples on disk: msgpack records in ArrayRecord shards, plus `dataset_info.json`.

Layout of a dataset directory:
  dataset_info.json                      written last: a directory without it is incomplete
  {split}-{k:05d}-of-{n:05d}.array_record  shards, each written to a temporary name then renamed
Records are msgpack (flax.serialization), never pickle: reading a dataset cannot execute code.
Keys are sorted before encoding so the same example always gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
from array_record.python import array_record_module
from flax import serialization

from flowav.data import schema

INFO_FILE = "dataset_info.json"


def encode_example(example: Mapping[str, Any]) -> bytes:
  """Serialises one example (numpy arrays, ints, floats, strings) to msgpack bytes."""
  out = {}
  for key in sorted(example):
    value = example[key]
    if isinstance(value, str):
      value = value.encode("utf-8")
    elif isinstance(value, (bool, int, float, np.generic)):
      value = np.asarray(value)
    out[key] = value
  return serialization.msgpack_serialize(out)


def decode_example(data: bytes, *, source: str = "<record>") -> dict[str, Any]:
  """Inverse of `encode_example`; strings come back as `str`."""
  try:
    raw = serialization.msgpack_restore(data)
  except Exception as e:  # msgpack raises several unrelated types on corrupt input
    raise schema.SchemaError(f"{source}: record is not a valid flowav example ({e})") from e
  out = {}
  for key, value in raw.items():
    field = schema.FIELDS_BY_NAME.get(key)
    if field is not None and field.kind == "s" and isinstance(value, (bytes, np.ndarray)):
      value = bytes(value).decode("utf-8") if isinstance(value, bytes) else str(value)
    out[key] = value
  return out


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}.array_record"


def write_shard(path: str | os.PathLike, records: Iterable[bytes]) -> int:
  """Writes records to `path` atomically (temporary file, then rename). Returns the count."""
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp")
  writer = array_record_module.ArrayRecordWriter(str(tmp), "group_size:1")
  n = 0
  try:
    for rec in records:
      writer.write(rec)
      n += 1
  finally:
    writer.close()
  os.replace(tmp, path)
  return n


def read_shard(path: str | os.PathLike) -> Iterator[bytes]:
  reader = array_record_module.ArrayRecordReader(str(path))
  try:
    for i in range(reader.num_records()):
      yield reader.read([i])[0]
  finally:
    reader.close()


@dataclasses.dataclass
class DatasetInfo:
  """Dataset-level facts: codec, latent statistics, stream rates/widths, splits and counts."""
  name: str
  codec: dict[str, Any]
  latent_stats: dict[str, list[float]]
  rates: dict[str, float]  # frames per second: audio, video, sync
  dims: dict[str, int]  # widths: audio (C_a), video (D_v), speaker, vocab sizes
  splits: dict[str, dict[str, Any]]  # split -> {"num_examples": n, "shards": [file names]}
  vocab: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # e.g. phonemes, id order
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)
  schema_version: int = schema.SCHEMA_VERSION

  def shard_paths(self, root: str | os.PathLike, split: str) -> list[str]:
    if split not in self.splits:
      raise KeyError(f"{root}/{INFO_FILE}: no split {split!r}; have {sorted(self.splits)}")
    return [str(pathlib.Path(root) / f) for f in self.splits[split]["shards"]]

  def save(self, root: str | os.PathLike) -> None:
    path = pathlib.Path(root) / INFO_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)

  @classmethod
  def load(cls, root: str | os.PathLike) -> "DatasetInfo":
    path = pathlib.Path(root) / INFO_FILE
    if not path.exists():
      raise FileNotFoundError(
        f"{path} not found: {root} is not a (complete) flowav dataset. Build one with "
        "`python -m flowav.main build_demo_data --out=DIR` or `preprocess`.")
    try:
      data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
      raise ValueError(f"{path} is not valid JSON: {e}") from e
    if data.get("schema_version") != schema.SCHEMA_VERSION:
      raise ValueError(f"{path}: schema_version {data.get('schema_version')} but this flowav "
                       f"reads version {schema.SCHEMA_VERSION}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
      raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
    return cls(**data)
