"""`preprocess`: a folder of user media -> a flowav dataset (ArrayRecord shards + dataset_info.json).

  python -m flowav.main preprocess --input=DIR --out=DATA [--config=configs/preprocess.py]

Steps (preprocess_scan: find media and text; preprocess_clip: one source -> examples;
preprocess_results: the per-source result files):
  1. every process scans the input the same way and takes sources i with i % count == index;
  2. each source becomes one result file `DATA/.work/<uid>.<key>.rec` (msgpack: its encoded
     records, or the reason it was skipped), written to a temporary name and renamed, by a pool of
     `config.num_workers` spawned processes. `key` hashes the settings, the encoder, the codec and
     the source's size, mtime and text, so a finished result is reused and a stale one redone;
  3. process 0 waits until every source has its result, then writes the shards of each split
     (each atomically), the per-channel latent statistics of the train split, and
     `dataset_info.json` last (removed first when it would change): a folder without it is
     incomplete. `preprocess_report.json` and a printed table give ok / skipped by reason /
     windows / seconds.
Killed at any point (SIGKILL) and rerun, it continues from the finished results and writes the
same bytes as an uninterrupted run. Several hosts share DATA on a shared file system and pass
--process_id / --num_processes; preprocess never needs jax.distributed.
A worker killed on its own (out of memory) stops the job with BrokenProcessPool; rerun to resume.
Records are ordered by source uid (a hash of the relative path), so the output does not depend on
workers or hosts. `.work/` is kept: rerunning after adding files only processes the new ones.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import pathlib
import re
import shutil
import time
from collections.abc import Iterator
from typing import Any

from flowav import progress as progress_lib
from flowav.audio import codec as codec_lib
from flowav.data import preprocess_clip as clip_lib
from flowav.data import preprocess_results as results
from flowav.data import preprocess_scan as scan_lib
from flowav.data import records
from flowav.data import workers as workers_lib
from flowav.encoders import frame_encoders

WORK_DIR = ".work"
REPORT_FILE = "preprocess_report.json"
# Test hook: "clip=SECONDS,shard=SECONDS" sleeps after each result / shard, so a test can kill the
# job at a chosen point.
TEST_DELAY_ENV = "FLOWAV_PREPROCESS_TEST_DELAY"
_SPEED_ONLY = ("num_workers", "wait_timeout_s")  # config keys the output does not depend on
_SHARD = re.compile(r"^[A-Za-z0-9_]+-\d{5}-of-\d{5}\.array_record(\.tmp)?$")
_log = logging.getLogger(__name__)


def _test_delay(point: str) -> None:
  spec = os.environ.get(TEST_DELAY_ENV, "")
  for item in filter(None, spec.split(",")):
    name, _, seconds = item.partition("=")
    if name == point:
      time.sleep(float(seconds))


def _hash(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _printable(rel: str) -> str:
  """A relative path as text (non-UTF-8 file names keep their bytes as escapes)."""
  return rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _run_job(processor: clip_lib.ClipProcessor, job: results.Job) -> dict[str, Any]:
  """Processes one source, writes its result file, returns its header (the summary)."""
  head: dict[str, Any] = {"format": results.FORMAT, "key": job.key, "rel": _printable(job.src.rel),
                          "status": "ok", "reason": None, "detail": None, "windows": 0,
                          "seconds": 0.0}
  recs: list[bytes] = []
  try:
    examples, seconds = processor.examples(job.src)
    recs = [records.encode_example(ex) for ex in examples]
    head.update(windows=len(recs), seconds=seconds)
  except clip_lib.Skip as e:
    head.update(status="skipped", reason=e.reason, detail=e.detail)
  except Exception as e:  # noqa: BLE001 -- one odd file must not stop a long job; it is reported
    _log.exception("preprocess: unexpected error on %s", job.src.path)
    head.update(status="skipped", reason="error", detail=f"{type(e).__name__}: {e}")
  results.write_result(job, head, recs)
  _test_delay("clip")
  return head


_WORKER: dict[str, Any] = {}


def _init_worker(settings: clip_lib.Settings) -> None:
  _WORKER["processor"] = clip_lib.ClipProcessor(settings)


def _worker_job(job: results.Job) -> dict[str, Any]:
  return _run_job(_WORKER["processor"], job)


def _process(jobs: list[results.Job], settings: clip_lib.Settings, workers: int, progress: bool,
             encoder: frame_encoders.FrameEncoder) -> Iterator[dict[str, Any]]:
  """Runs the jobs in this process (workers <= 1) or a spawn pool; yields summaries."""
  with progress_lib.bar(total=len(jobs), desc="preprocess", unit="clip",
                        disable=not progress) as bar:
    if workers <= 1 or len(jobs) <= 1:
      processor = clip_lib.ClipProcessor(settings, encoder)
      for job in jobs:
        yield _run_job(processor, job)
        bar.update(1)
      return
    with workers_lib.single_threaded_children():
      pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
        initargs=(settings,))
    with pool:
      for summary in pool.map(_worker_job, jobs):
        yield summary
        bar.update(1)


def _check_out(out: pathlib.Path) -> None:
  if (out / records.INFO_FILE).exists():
    info = records.DatasetInfo.load(out)
    if "preprocess" not in info.extra:
      raise ValueError(f"{out} holds the dataset {info.name!r}, not a preprocess output; refusing "
                       "to overwrite it: choose another --out")


def host_share(process_id: int | None = None, num_processes: int | None = None) -> tuple[int, int]:
  """(index, count) of this host: the arguments (flags), else FLOWAV_PROCESS_ID /
  FLOWAV_NUM_PROCESSES, else an `srun` step's SLURM_PROCID / SLURM_NTASKS, else (0, 1)."""
  env = os.environ
  for var_id, var_count in (("FLOWAV_PROCESS_ID", "FLOWAV_NUM_PROCESSES"),
                            ("SLURM_PROCID", "SLURM_NTASKS")):
    if process_id is None and num_processes is None and env.get(var_id) and env.get(var_count):
      process_id, num_processes = int(env[var_id]), int(env[var_count])
  count = 1 if num_processes is None else int(num_processes)
  index = 0 if process_id is None else int(process_id)
  if count < 1 or not 0 <= index < count:
    raise ValueError(f"preprocess: process id {index} is not in [0, {count}) (--process_id, "
                     "--num_processes)")
  return index, count


def run(input_dir: str, out_dir: str, config: Any, *, process_index: int = 0,
        process_count: int = 1, progress: bool = True) -> dict[str, Any]:
  """Preprocesses `input_dir` into `out_dir` (see the module docstring).

  Args:
    config: configs/preprocess.py's ConfigDict.
    process_index, process_count: this host's share of the sources; process 0 assembles.
  Returns:
    The report (also in out_dir/preprocess_report.json on process 0); other processes return the
    summary of their share.
  """
  t0 = time.time()
  if not 0 <= process_index < process_count:
    raise ValueError(f"process index {process_index} is not in [0, {process_count})")
  settings = clip_lib.Settings.from_config(config)
  fractions = {k: float(v) for k, v in config.splits.items()}
  scan_lib.check_fractions(fractions)
  if int(config.examples_per_shard) < 1:
    raise ValueError(f"config.examples_per_shard={config.examples_per_shard} must be >= 1")
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  _check_out(out)
  work = out / WORK_DIR
  work.mkdir(exist_ok=True)
  manifests = [m.strip() for m in str(config.manifests).split(",") if m.strip()] or None
  sources, notes = scan_lib.scan(input_dir, exclude=[out], manifests=manifests)
  if not sources:
    raise ValueError(f"preprocess: no media files in {input_dir} (extensions "
                     f"{scan_lib.VIDEO_EXTS + scan_lib.AUDIO_EXTS})")
  if any(s.transcript for s in sources) and shutil.which("flite") is None:
    raise RuntimeError("transcripts need the `flite` program (apt-get install -y flite)")
  # Built here too: a bad encoder name or missing weights fail before any work, and the key and
  # dataset_info need its description.
  encoder = frame_encoders.make(settings.video_encoder,
                                weights=settings.video_encoder_weights or None,
                                frame_size=settings.frame_size)
  codec = codec_lib.MelCodec()
  settings_key = _hash([results.FORMAT, dataclasses.asdict(settings), encoder.describe(),
                        codec.to_dict()])
  jobs = [results.Job(s, _hash([settings_key, s.fingerprint()])[:16], str(work)) for s in sources]
  mine = [j for i, j in enumerate(jobs) if i % process_count == process_index]
  todo = [j for j in mine if not j.result_path.exists()]
  _log.info("preprocess: %d sources, %d for process %d/%d, %d still to do", len(jobs), len(mine),
            process_index, process_count, len(todo))
  done = list(_process(todo, settings, int(config.num_workers), progress, encoder))
  if process_index != 0:
    summary = {"process_index": process_index, "sources": len(mine), "processed_now": len(done),
               "skipped": sum(d["status"] != "ok" for d in done)}
    print(json.dumps(summary))
    return summary
  _wait_for(jobs, float(config.wait_timeout_s))
  for tmp in work.glob(".*.tmp"):  # left by killed runs; every process has finished by now
    tmp.unlink(missing_ok=True)
  report = _assemble(out, jobs, config, fractions, encoder, codec, settings)
  report.update(input=str(input_dir), out=str(out), notes=notes, processed_now=len(done),
                reused=len(jobs) - len(done), process_count=process_count,
                wall_seconds=round(time.time() - t0, 2))
  tmp = out / f".{REPORT_FILE}.tmp"
  tmp.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
  os.replace(tmp, out / REPORT_FILE)
  print(format_report(report))
  if not report["windows"]:
    raise ValueError(f"preprocess: no usable clips in {input_dir}; see {out / REPORT_FILE}")
  return report


def _wait_for(jobs: list[results.Job], timeout_s: float) -> None:
  """Blocks until every job has its result file (other hosts' share), or raises TimeoutError."""
  start, last_log = time.time(), 0.0
  while True:
    missing = [j for j in jobs if not j.result_path.exists()]
    if not missing:
      return
    if time.time() - start > timeout_s:
      raise TimeoutError(f"preprocess: {len(missing)} sources have no result after {timeout_s:.0f} "
                         f"s (e.g. {[_printable(j.src.rel) for j in missing[:5]]}); are the other "
                         "processes running? Rerun to finish them.")
    if time.time() - last_log > 60:
      _log.info("preprocess: waiting for %d sources from other processes", len(missing))
      last_log = time.time()
    time.sleep(1.0)


def _assemble(out: pathlib.Path, jobs: list[results.Job], config: Any, fractions: dict[str, float],
              encoder: frame_encoders.FrameEncoder, codec: codec_lib.MelCodec,
              settings: clip_lib.Settings) -> dict[str, Any]:
  """Writes the shards and dataset_info.json (unless identical ones exist); returns the report.

  Streams: one result file's records are in memory at a time, so any dataset size fits.
  """
  per_split: dict[str, list[results.Job]] = {name: [] for name in fractions}
  windows = {name: 0 for name in fractions}
  skipped, seconds = [], 0.0
  for job in jobs:
    head = results.read_header(job.result_path)
    if head["status"] != "ok":
      skipped.append({"path": head["rel"], "reason": head["reason"], "detail": head["detail"]})
      continue
    split = scan_lib.split_of(job.src.rel, fractions, str(config.split_salt))
    per_split[split].append(job)
    windows[split] += int(head["windows"])
    seconds += float(head["seconds"])
  eps = int(config.examples_per_shard)
  shards = {split: [records.shard_name(split, k, math.ceil(n / eps))
                    for k in range(math.ceil(n / eps))] for split, n in windows.items()}
  fingerprint = _hash([[j.key for j in jobs], fractions, str(config.split_salt), eps,
                       str(config.name)])
  report = {"sources": len(jobs), "ok": len(jobs) - len(skipped), "skipped_files": skipped,
            "skipped": {r: sum(s["reason"] == r for s in skipped)
                        for r in sorted({s["reason"] for s in skipped})},
            "windows": sum(windows.values()), "windows_by_split": windows,
            "sources_by_split": {split: len(js) for split, js in per_split.items()},
            "audio_seconds": round(seconds, 3)}
  if not report["windows"]:
    return report
  if (out / records.INFO_FILE).exists():
    old = records.DatasetInfo.load(out)
    if (old.extra.get("preprocess", {}).get("fingerprint") == fingerprint
        and all((out / n).exists() for names in shards.values() for n in names)):
      _log.info("preprocess: %s is already up to date", out)
      return report
    (out / records.INFO_FILE).unlink()  # the shards change next: mark the folder incomplete first
  for split, names in shards.items():
    stream = itertools.chain.from_iterable(
      results.read_records(j.result_path) for j in sorted(per_split[split], key=lambda j: j.src.uid))
    for name in names:
      records.write_shard(out / name, itertools.islice(stream, eps))
      _test_delay("shard")
    if next(stream, None) is not None:  # also runs the last file's record-count check
      raise ValueError(f"preprocess: the result files of split {split!r} hold more records than "
                       f"their headers say; delete {out / WORK_DIR} and rerun")
  written = {n for names in shards.values() for n in names}
  for path in out.iterdir():  # shards of an earlier, different layout
    if _SHARD.match(path.name) and path.name not in written:
      path.unlink()
  stats_split = "train" if windows["train"] else "all"
  stats = codec_lib.compute_stats(
    records.decode_example(data, source=name)["audio_latents"]
    for split, names in shards.items() if stats_split == "all" or split == "train"
    for name in names for data in records.read_shard(out / name))
  info = _info(shards, windows, report["sources_by_split"], stats, stats_split, fractions,
               config, encoder, codec, settings, fingerprint)
  info.save(out)
  return report


def _info(shards: dict[str, list[str]], windows: dict[str, int], sources: dict[str, int],
          stats: codec_lib.LatentStats, stats_split: str, fractions: dict[str, float],
          config: Any, encoder: frame_encoders.FrameEncoder, codec: codec_lib.MelCodec,
          settings: clip_lib.Settings, fingerprint: str) -> records.DatasetInfo:
  from flowav.data.demo import speech  # pylint: disable=g-import-not-at-top
  sr = codec.sample_rate
  return records.DatasetInfo(
    name=str(config.name), codec=codec.to_dict(), latent_stats=stats.to_dict(),
    rates={"audio": codec.frame_rate, "video": settings.video_fps},
    dims={"audio": codec.latent_dim, "video": encoder.dim, "speaker": codec.latent_dim,
          "phone_vocab": len(speech.PHONES) + 1,
          "text_vocab": clip_lib.TEXT_TOKENIZER["vocab_size"],
          "lyric_vocab": clip_lib.TEXT_TOKENIZER["vocab_size"]},
    splits={split: {"num_examples": windows[split], "shards": names, "num_sources": sources[split]}
            for split, names in shards.items()},
    vocab={"phones": ["<pad>", *speech.PHONES]},
    extra={
      # `config` keeps the keys that inputs.video_clip reads (frame_size) in the demo's place.
      "config": {"frame_size": encoder.frame_size, "video_fps": settings.video_fps,
                 "clip_seconds": settings.clip_seconds},
      "clip_frames": codec.num_frames(int(round(settings.clip_seconds * sr))),
      "video_frames": int(math.ceil(settings.clip_seconds * settings.video_fps - 1e-6)),
      "sample_rate": sr,
      "video_encoder": encoder.describe(),
      "text_tokenizer": clip_lib.TEXT_TOKENIZER,
      "phone_durations": {"method": settings.phone_durations,
                          "note": clip_lib.PHONE_DURATION_METHODS[settings.phone_durations]},
      "speaker_embedding": "none: speaker_mask is absent (false); the pipeline feeds zeros",
      "latent_stats_split": stats_split,
      "preprocess": {"fingerprint": fingerprint, "split_fractions": fractions,
                     "config": {k: v for k, v in config.to_dict().items() if k not in _SPEED_ONLY}},
    })


def format_report(report: dict[str, Any]) -> str:
  """The summary table printed at the end of a run."""
  lines = [f"preprocess: {report['sources']} sources: {report['ok']} ok, "
           f"{report['sources'] - report['ok']} skipped; {report['windows']} windows written "
           f"({report['audio_seconds']:.1f} s of audio); {report.get('processed_now', 0)} "
           f"processed now, {report.get('reused', 0)} reused; {report.get('wall_seconds', 0):.1f} s",
           f"  {'split':<12}{'sources':>8}{'windows':>9}"]
  for split, n in report["windows_by_split"].items():
    lines.append(f"  {split:<12}{report['sources_by_split'][split]:>8}{n:>9}")
  if report["skipped"]:
    lines.append(f"  {'skipped':<20}{'count':>6}")
    lines += [f"  {reason:<20}{n:>6}" for reason, n in report["skipped"].items()]
    lines += [f"    {s['path']}: {s['reason']}: {s['detail']}" for s in report["skipped_files"]]
  lines += [f"  note: {n}" for n in report.get("notes", [])]
  return "\n".join(lines)
