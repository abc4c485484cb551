"""The per-source result files of `preprocess` (step 2 in flowav.data.preprocess).

`DATA/.work/<uid>.<key>.rec` holds a msgpack header (format, key, the source, its windows or the
reason it was skipped), then one msgpack bytes object per encoded record. It is written under a
temporary name, fsynced and renamed, so a killed worker leaves either no result or a whole one.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator
from typing import Any

import msgpack

from flowav.data import preprocess_scan as scan_lib

FORMAT = 1  # of the result files; part of every key


@dataclasses.dataclass
class Job:
  """What a worker needs for one source."""
  src: scan_lib.Source
  key: str
  work: str

  @property
  def result_path(self) -> pathlib.Path:
    return pathlib.Path(self.work) / f"{self.src.uid}.{self.key}.rec"


def write_result(job: Job, header: dict[str, Any], recs: list[bytes]) -> None:
  """The result file: a msgpack header, then one msgpack bytes object per record."""
  path = job.result_path
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  with open(tmp, "wb") as f:
    f.write(msgpack.packb(header, use_bin_type=True))
    for rec in recs:
      f.write(msgpack.packb(rec, use_bin_type=True))
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  for old in path.parent.glob(f"{job.src.uid}.*.rec"):  # results of older settings / file versions
    if old != path:
      old.unlink(missing_ok=True)


def _unpacker(f: Any) -> msgpack.Unpacker:
  return msgpack.Unpacker(f, raw=False, max_buffer_size=2**31 - 1)


def read_header(path: pathlib.Path) -> dict[str, Any]:
  try:
    with open(path, "rb") as f:
      head = next(_unpacker(f))
  except Exception as e:  # msgpack raises several unrelated types on corrupt input
    raise ValueError(f"{path}: unreadable result file ({e!r}); delete it and rerun") from e
  if not isinstance(head, dict) or head.get("format") != FORMAT:
    raise ValueError(f"{path}: not a preprocess result file of format {FORMAT}; delete it and rerun")
  return head


def read_records(path: pathlib.Path) -> Iterator[bytes]:
  """The records of a result file, one at a time."""
  with open(path, "rb") as f:
    unpacker = _unpacker(f)
    head = next(unpacker)
    count = 0
    for rec in unpacker:
      count += 1
      yield rec
  if count != head["windows"]:
    raise ValueError(f"{path}: {count} records, the header says {head['windows']}; delete it and "
                     "rerun")
