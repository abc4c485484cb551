"""preprocess, step 1: find the media of an input folder, their text, clip ids and splits.

Media: video files with an audio track (VIDEO_EXTS) and audio-only files (AUDIO_EXTS), found
recursively (hidden folders and the output folder are skipped), ordered by relative path.
Text per clip, all optional:
  * `<stem>.txt` beside the media file: its caption (UTF-8; shared by media files with that stem);
  * manifests `*.csv` / `*.jsonl` in the input folder's root (or `config.manifests`): one row per
    clip with `path` (relative to the input folder) or `id` (relative path without extension, or a
    unique file stem) and any of `caption`, `transcript`, `lyrics`. A manifest value overrides the
    sidecar caption; a later row overrides an earlier one key by key.
Text that is not valid UTF-8 marks its clip (reason bad_text, reported, clip skipped); a manifest
row that names no media file, or cannot be parsed, is reported as a note.

Ids: a source's `uid` is a hash of its relative path only, so it is the same on every run and host;
record ids are `<stem>-<uid[:10]>-w<k>`. `split_of` hashes (salt, relative path) into [0, 1) and
cuts it by the configured fractions: adding or removing files never moves another clip.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

VIDEO_EXTS = (".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi")
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
MANIFEST_EXTS = (".csv", ".jsonl")
TEXT_KEYS = ("caption", "transcript", "lyrics")


@dataclasses.dataclass
class Source:
  """One media file and its text. `text_error` is set when some of its text is unreadable."""
  rel: str  # path relative to the input folder, '/'-separated
  path: str  # absolute path
  kind: str  # "video" | "audio"
  caption: str | None = None
  transcript: str | None = None
  lyrics: str | None = None
  text_error: str | None = None

  @property
  def uid(self) -> str:
    return hashlib.sha256(self.rel.encode("utf-8", "surrogateescape")).hexdigest()[:16]

  @property
  def base_id(self) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", pathlib.PurePosixPath(self.rel).stem)[:40] or "clip"
    return f"{stem}-{self.uid[:10]}"

  def record_id(self, window: int) -> str:
    return f"{self.base_id}-w{window:03d}"

  def fingerprint(self) -> str:
    """Changes when the file or its text changes (size, mtime, text): its result is redone."""
    st = os.stat(self.path)
    data = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "caption": self.caption,
            "transcript": self.transcript, "lyrics": self.lyrics, "text_error": self.text_error}
    text = json.dumps(data, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:20]


def split_of(rel: str, fractions: Mapping[str, float], salt: str) -> str:
  """The split of a source: a stable hash of (salt, rel) in [0, 1) cut by the fractions, in the
  order given (train, validation, test)."""
  digest = hashlib.sha256(f"{salt}\0{rel}".encode("utf-8", "surrogateescape")).digest()
  u = int.from_bytes(digest[:8], "big") / 2.0**64
  total = sum(fractions.values())
  edge = 0.0
  for name, frac in fractions.items():
    edge += frac / total
    if u < edge:
      return name
  return list(fractions)[-1]


def check_fractions(fractions: Mapping[str, float]) -> None:
  if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
    raise ValueError(f"config.splits={dict(fractions)} needs non-negative fractions with a "
                     "positive sum")
  if "train" not in fractions:
    raise ValueError(f"config.splits={dict(fractions)} needs a 'train' split (latent statistics)")


def find_media(root: pathlib.Path, exclude: list[pathlib.Path]) -> list[Source]:
  """Media files under `root` (recursively), sorted by relative path."""
  excluded = {p.resolve() for p in exclude}
  out = []
  for folder, dirs, files in os.walk(root):
    here = pathlib.Path(folder)
    dirs[:] = sorted(d for d in dirs
                     if not d.startswith(".") and (here / d).resolve() not in excluded)
    for name in files:
      ext = os.path.splitext(name)[1].lower()
      if name.startswith(".") or ext not in VIDEO_EXTS + AUDIO_EXTS:
        continue
      rel = (here / name).relative_to(root).as_posix()
      out.append(Source(rel=rel, path=str((here / name).resolve()),
                        kind="video" if ext in VIDEO_EXTS else "audio"))
  return sorted(out, key=lambda s: s.rel)


def _decode_utf8(data: bytes, where: str) -> tuple[str | None, str | None]:
  """(text, None) or (None, error message)."""
  try:
    return data.decode("utf-8-sig"), None
  except UnicodeDecodeError as e:
    return None, f"{where} is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})"


def _read_sidecars(sources: list[Source]) -> None:
  for src in sources:
    txt = pathlib.Path(src.path).with_suffix(".txt")
    if txt.is_file():
      text, err = _decode_utf8(txt.read_bytes(), txt.name)
      if err:
        src.text_error = err
      elif text.strip():
        src.caption = " ".join(text.split())


def _rows(path: pathlib.Path) -> list[tuple[str, dict[str, Any] | None, str | None]]:
  """(where, row or None, parse error) per manifest row. Invalid UTF-8 stays in the values as
  surrogate escapes, so the row (and its clip) is still found and the clip can be reported."""
  text = path.read_bytes().decode("utf-8-sig", "surrogateescape")
  rows: list[tuple[str, dict[str, Any] | None, str | None]] = []
  if path.suffix.lower() == ".jsonl":
    for i, line in enumerate(text.splitlines(), 1):
      if not line.strip():
        continue
      where = f"{path.name} line {i}"
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        rows.append((where, None, f"not valid JSON ({e.msg})"))
        continue
      rows.append((where, row, None) if isinstance(row, dict)
                  else (where, None, "not a JSON object"))
  else:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = set(reader.fieldnames or ())
    if not fields & {"path", "id"}:
      return [(path.name, None, f"CSV header {sorted(fields)} has neither 'path' nor 'id'")]
    for row in reader:
      rows.append((f"{path.name} line {reader.line_num}", dict(row), None))
  return rows


def _is_utf8(value: str) -> bool:
  try:
    value.encode("utf-8")
    return True
  except UnicodeEncodeError:
    return False


def _apply_manifest(path: pathlib.Path, root: pathlib.Path, sources: list[Source],
                    notes: list[str]) -> None:
  by_rel = {s.rel: s for s in sources}
  by_id: dict[str, list[Source]] = {}
  for s in sources:
    by_id.setdefault(s.rel.rsplit(".", 1)[0], []).append(s)
    stem = pathlib.PurePosixPath(s.rel).stem
    if stem != s.rel.rsplit(".", 1)[0]:
      by_id.setdefault(stem, []).append(s)
  for where, row, error in _rows(path):
    if row is None:
      notes.append(f"{where}: {error}; row ignored")
      continue
    src = None
    if row.get("path"):
      p = pathlib.Path(str(row["path"]))
      rel = (p.resolve().relative_to(root).as_posix() if p.is_absolute()
             and p.resolve().is_relative_to(root) else pathlib.PurePosixPath(str(row["path"])).as_posix())
      src = by_rel.get(rel)
      if src is None:
        notes.append(f"{where}: no media file {row['path']!r} in the input folder; row ignored")
        continue
    elif row.get("id"):
      found = by_id.get(str(row["id"]), [])
      if len(found) != 1:
        notes.append(f"{where}: id {row['id']!r} matches {len(found)} media files; row ignored")
        continue
      src = found[0]
    else:
      notes.append(f"{where}: neither 'path' nor 'id' given; row ignored")
      continue
    for key in TEXT_KEYS:
      value = row.get(key)
      if value is None or value == "":
        continue
      if not isinstance(value, str):
        notes.append(f"{where}: {key} is {type(value).__name__}, not text; value ignored")
        continue
      if not _is_utf8(value):
        src.text_error = f"{where}: {key} is not valid UTF-8"
        continue
      setattr(src, key, " ".join(value.split()) or None)


def scan(input_dir: str | os.PathLike, *, exclude: list[pathlib.Path] = (),
         manifests: list[str] | None = None) -> tuple[list[Source], list[str]]:
  """Finds the media, captions and manifest text of `input_dir`.

  Args:
    input_dir: the folder of media.
    exclude: folders not to scan (the output folder when it lies inside the input).
    manifests: manifest files (relative to input_dir or absolute); None = every *.csv / *.jsonl
      in input_dir's root.
  Returns:
    (sources sorted by relative path, notes about manifest rows that were ignored).
  Raises:
    FileNotFoundError if `input_dir` or a named manifest does not exist.
  """
  root = pathlib.Path(input_dir).resolve()
  if not root.is_dir():
    raise FileNotFoundError(f"preprocess: --input={input_dir} is not a folder")
  sources = find_media(root, list(exclude))
  _read_sidecars(sources)
  if manifests is None:
    paths = sorted(p for p in root.iterdir()
                   if p.is_file() and p.suffix.lower() in MANIFEST_EXTS and not p.name.startswith("."))
  else:
    paths = [(root / m) if not os.path.isabs(m) else pathlib.Path(m) for m in manifests]
    for p in paths:
      if not p.is_file():
        raise FileNotFoundError(f"preprocess: manifest {p} does not exist (config.manifests)")
  notes: list[str] = []
  for p in paths:
    _apply_manifest(p, root, sources, notes)
  return sources, notes
