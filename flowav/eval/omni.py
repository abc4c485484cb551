"""AudioGen-Omni's evaluation on flowav-demo: every task of one model, each against its control.

One checkpoint, five tasks (issue "AudioGen-Omni", spec §1), each sampled with ONLY its task's
conditions (every other condition masked, as when absent at training):

- video_to_sound (impacts, video only): onset P/R/F1 and DeSync offset vs another clip's video
  (`flowav.eval.demo.evaluate_impacts`); the codec arm is the upper bound.
- caption_to_sound (impacts, caption only): material accuracy of the classifier trained on real
  demo audio, vs the same model given ANOTHER clip's caption, scored against the original label.
- speech (flite speech, video + transcript): Whisper WER against the clip's transcript vs the same
  model given ANOTHER clip's transcript (same noise); the codec's own WER on the same clips comes
  first, the ceiling. Lip sync (mouth-envelope correlation) vs another clip's video. A
  `lyrics_aligned` model also gets `lip_sync_uniform_timing`: the same with the transcript's
  phones spread evenly over its speech frames, so only the video can place them.
- transcript_to_speech (flite speech, transcript only): WER, same control.
  A `lyrics_aligned` model reads the clip's phone timing with its transcript: flite's own timing
  here, as `sample --transcript` gets it from flite; the control swaps ids and timing together.
- song (video + lyrics): pYIN pitch accuracy against the clip's melody vs the SAME audio against
  another clip's melody. The melody reaches the model only through the video's pitch guide (the
  demo song clips' karaoke-style note display, `flowav.data.demo.face.draw_pitch_guide`).

`task_loss_gaps` measures, before any sampling, whether each task's conditions are read at all:
the velocity loss with the clip's own condition vs another clip's (`flowav.eval.reliance`).

`compare_dtypes` samples the headline measures with float32 at several seeds and with bfloat16
matmul inputs at the first seed: the bf16 path should fall within the float32 seeds' spread.
That check alone is a coin toss: a 4th draw of the same measure lies inside the [min, max] of 3
others with probability 1/2. So it also reports the paired shift, bf16 minus float32 at the same
seed (same noise, same clips: only the precision differs), against the float32 seeds' range.
`seed_spread` re-samples chosen tasks at several seeds: the sampling noise of each measure.
`render` (flowav/eval/omni_report.py) writes report.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from flowav import generate
from flowav.data import inputs, pipeline, records
from flowav.eval import classifier as classifier_lib
from flowav.eval import demo, demo_measures, lipsync, pitch, reliance
from flowav.eval.omni_report import render  # noqa: F401  (re-exported: omni.render)
from flowav.train import timing_dropout

# The model's batch keys that carry each user-facing condition (flowav-demo's streams).
CONDITION_MASKS = {"video": ("video_mask",), "caption": ("text_mask",),
                   "transcript": ("transcript_mask",), "lyrics": ("transcript_mask", "lyric_mask")}
CONDITION_KEYS = {"video": ("video_features", "video_mask"), "caption": ("text_ids", "text_mask"),
                  "transcript": ("transcript_ids", "transcript_mask", "phone_durations"),
                  "lyrics": ("transcript_ids", "transcript_mask", "phone_durations", "lyric_ids",
                             "lyric_mask")}
TASKS = {"video_to_sound": ("impacts", ("video",)), "caption_to_sound": ("impacts", ("caption",)),
         "speech": ("speech", ("video", "transcript")),
         "transcript_to_speech": ("speech", ("transcript",)), "song": ("song", ("video", "lyrics"))}

# The conditions each task's loss gap swaps for another clip's (the song's melody is in the video).
LOSS_GAP_SWAPS = {"video_to_sound": ("video",), "caption_to_sound": ("caption",),
                  "speech": ("transcript", "video"), "transcript_to_speech": ("transcript",),
                  "song": ("video", "lyrics")}


def keep_conditions(batch: Mapping[str, np.ndarray], keep: Sequence[str]) -> dict[str, np.ndarray]:
  """`batch` with every condition outside `keep` masked out (all-false masks)."""
  unknown = set(keep) - set(CONDITION_MASKS)
  if unknown:
    raise ValueError(f"unknown conditions {sorted(unknown)}; known: {sorted(CONDITION_MASKS)}")
  kept = {m for c in keep for m in CONDITION_MASKS[c]}
  out = dict(batch)
  for m in {m for masks in CONDITION_MASKS.values() for m in masks} - kept:
    if m in out:
      out[m] = np.zeros_like(out[m])
  return out


def swap_condition(batch: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray],
                   condition: str) -> dict[str, np.ndarray]:
  """`batch` with `condition`'s streams taken from `other` (the mismatched control)."""
  out = dict(batch)
  for k in CONDITION_KEYS[condition]:
    if k in other:
      out[k] = other[k]
  return out


def _masked(clips: Sequence[inputs.Clip], keep: Sequence[str]) -> list[inputs.Clip]:
  return [dataclasses.replace(c, prepared=keep_conditions(c.prepared, keep)) for c in clips]


def _arm_wavs(run: generate.Run, clips: Sequence[inputs.Clip], keep: Sequence[str],
              swap: str | None, seed: int, batch_size: int) -> dict[str, list[np.ndarray]]:
  """Waveforms of the `model` arm (own conditions) and, when `swap` is set, the `control` arm
  (the next clip's `swap` condition, same noise); `codec` is the real audio through the codec."""
  out: dict[str, list[np.ndarray]] = {"model": [], "codec": [], **({"control": []} if swap else {})}
  rotated = [c.prepared for c in list(clips[1:]) + list(clips[:1])]
  for start in range(0, len(clips), batch_size):
    group = clips[start:start + batch_size]
    batch = keep_conditions(inputs.stack([c.prepared for c in group]), keep)
    key = jax.random.key(seed + start)
    out["model"] += run.decode(run.sample(batch, key), batch, vocoder=demo.EVAL_VOCODER)
    if swap:
      other = inputs.stack(rotated[start:start + len(group)])
      control = keep_conditions(swap_condition(batch, other, swap), keep)
      out["control"] += run.decode(run.sample(control, key), batch, vocoder=demo.EVAL_VOCODER)
    out["codec"] += [run.codec.decode(np.asarray(c.example["audio_latents"])[
      :int(c.prepared["audio_mask"].sum())], vocoder=demo.EVAL_VOCODER) for c in group]
  return out


def uniform_phone_durations(batch: Mapping[str, np.ndarray]) -> np.ndarray:
  """`[B, L_p]` durations that keep each row's total speech frames but spread them evenly over its
  valid phones (the first ones get the remainder): the transcript's order without its timing."""
  return np.asarray(timing_dropout.uniform_durations(np.asarray(batch["phone_durations"]),
                                                     np.asarray(batch["transcript_mask"], bool)))


def caption_to_sound(run: generate.Run, clips: Sequence[inputs.Clip], workdir: pathlib.Path,
                     seed: int, batch_size: int) -> dict[str, Any]:
  clf = classifier_lib.train_classifier(run.config.data.dir, classifier_lib.impact_material,
                                        cache_dir=workdir / classifier_lib.CACHE_SUBDIR)
  wavs = _arm_wavs(run, clips, ("caption",), "caption", seed, batch_size)
  labels = [demo._truth(c)["material"] for c in clips]  # noqa: SLF001 -- the demo's truth files
  res = demo_measures.class_accuracy(clf, wavs, labels, run.codec)
  res["control_is"] = "another clip's caption, scored against this clip's material"
  return res


def speech_wer(run: generate.Run, clips: Sequence[inputs.Clip], keep: Sequence[str], seed: int,
               batch_size: int) -> dict[str, Any]:
  """WER/CER of the codec (first: the ceiling), the model, and the model given another clip's
  transcript, all against each clip's own transcript."""
  from flowav.eval import asr  # noqa: PLC0415 -- optional eval dependency

  wavs = _arm_wavs(run, clips, keep, "transcript", seed, batch_size)
  recognizer = asr.load_whisper()
  transcripts = [c.example["transcript"] for c in clips]
  sr = int(run.codec.sample_rate)
  out: dict[str, Any] = {"recognizer": recognizer.name, "num_clips": len(clips)}
  per_clip = {}
  for arm in ("codec", "model", "control"):
    r = asr.speech_intelligibility(wavs[arm], transcripts, sr, recognizer)
    out[arm] = {k: r[k] for k in ("wer", "cer")}
    out[arm]["examples"] = [{"ref": row["ref"], "hyp": row["hyp"]} for row in r["rows"][:3]]
    per_clip[arm] = r["rows"]
  # Whether the model beats its control by more than the clip-to-clip spread: mean per-clip rate,
  # model minus control (negative = fewer errors), with a paired bootstrap 95 % interval.
  for rate in ("wer", "cer"):
    model, control = ([row[rate] for row in per_clip[arm]] for arm in ("model", "control"))
    out[f"{rate}_model_minus_control"] = lipsync.paired_mean_difference(np.array(model),
                                                                        np.array(control))
  out["control_is"] = "another clip's transcript, scored against this clip's transcript"
  return out


def song_pitch(run: generate.Run, clips: Sequence[inputs.Clip], seed: int, batch_size: int
               ) -> dict[str, Any]:
  """Pitch accuracy of each clip's song against its own melody, and of the same audio against
  the next clip's melody (the control); the codec arm bounds it from above."""
  wavs = _arm_wavs(run, clips, TASKS["song"][1], None, seed, batch_size)
  notes = [demo._truth(c)["notes"] for c in clips]  # noqa: SLF001
  others = notes[1:] + notes[:1]
  sr = int(run.codec.sample_rate)
  keys = ("raw_pitch_accuracy", "raw_chroma_accuracy", "voicing_recall", "median_abs_cents")
  rows: dict[str, list[dict[str, float]]] = {"model": [], "control": [], "codec": []}
  for i in range(len(clips)):
    times, f0, voiced = pitch.track_f0(wavs["model"][i], sr)
    rows["model"].append(pitch.score_f0(times, f0, voiced, notes[i]))
    rows["control"].append(pitch.score_f0(times, f0, voiced, others[i]))
    rows["codec"].append(pitch.pitch_accuracy(wavs["codec"][i], sr, notes[i]))
  out: dict[str, Any] = {arm: {k: float(np.nanmean([r[k] for r in rs])) for k in keys}
                         for arm, rs in rows.items()}
  out["num_clips"] = len(clips)
  out["control_is"] = "the model's audio scored against another clip's melody"
  return out


def heldout_by_subset(run: generate.Run, limit: int) -> dict[str, list[inputs.Clip]]:
  """Up to `limit` held-out clips of each subset (by clip-id prefix), from one read of the split."""
  c = run.config
  lengths = pipeline.config_lengths(records.DatasetInfo.load(c.data.dir), c.data)
  out: dict[str, list[inputs.Clip]] = {}
  for clip in inputs.heldout_clips(c.data.dir, c.data.test_split, lengths):
    subset, dash, _ = str(clip.example["clip_id"]).partition("-")  # flowav-demo: subset-split-i
    if dash and len(out.setdefault(subset, [])) < limit:
      out[subset].append(clip)
  return out


def task_loss_gaps(run: generate.Run, heldout: Mapping[str, Sequence[inputs.Clip]], *,
                   num_clips: int, seed: int) -> dict[str, dict[str, Any]]:
  """`{task: {condition: reliance.loss_gap(...)}}`: each task's velocity loss with only its
  conditions, own vs the next clip's `condition` (the controls the sampled tasks use)."""
  out: dict[str, dict[str, Any]] = {}
  bs = int(run.config.sample.batch_size)
  for task, (subset, keep) in TASKS.items():
    clips = list(heldout.get(subset, ()))[:num_clips]
    if len(clips) < 2:
      continue
    rotated = clips[1:] + clips[:1]
    own: list[dict[str, np.ndarray]] = []
    other: dict[str, list[dict[str, np.ndarray]]] = {c: [] for c in LOSS_GAP_SWAPS[task]}
    for start in range(0, len(clips), bs):
      batch = keep_conditions(inputs.stack([c.prepared for c in clips[start:start + bs]]), keep)
      own.append(batch)
      swapped = inputs.stack([c.prepared for c in rotated[start:start + bs]])
      for condition, batches in other.items():
        batches.append(keep_conditions(swap_condition(batch, swapped, condition), keep))
    out[task] = {c: reliance.loss_gap((run.graphdef, run.params, run.rest), own, b, seed=seed)
                 for c, b in other.items()}
  return out


def evaluate_task(run: generate.Run, task: str, clips: Sequence[inputs.Clip],
                  workdir: pathlib.Path, seed: int) -> dict[str, Any]:
  """One task of `TASKS` on `clips` (its subset's held-out clips)."""
  c = run.config
  keep = TASKS[task][1]
  fps = float(records.DatasetInfo.load(c.data.dir).rates["video"])
  bs = int(c.sample.batch_size)
  if task == "video_to_sound":
    return demo.evaluate_impacts(run, _masked(clips, keep), batch_size=bs, seed=seed,
                                 tol_s=float(c.eval.onset_tolerance_frames) / fps,
                                 max_lag_s=float(c.eval.max_lag_frames) / fps)[0]
  if task == "caption_to_sound":
    return demo_measures.optional(lambda: caption_to_sound(run, clips, workdir, seed, bs))
  if task == "song":
    return demo_measures.optional(lambda: song_pitch(run, clips, seed, bs))
  res = demo_measures.optional(lambda: speech_wer(run, clips, keep, seed, bs))
  if task == "transcript_to_speech":
    return res
  def lip_sync(**kw: Any) -> dict[str, Any]:
    return demo.evaluate_speech(run, _masked(clips, keep), batch_size=bs, fps=fps,
                                max_lag=int(c.eval.max_lag_frames), seed=seed, with_null=False, **kw)[0]

  out = {"intelligibility": res, "lip_sync": lip_sync()}
  # The clip's own phone timing places the speech whatever the video (step 5051 of the demo: lip
  # corr 0.70 with its video vs 0.67 with another's, but 0.20 vs 0.19 with uniform timing; trained
  # with p_timing=0.5, step 5043: 0.68 vs 0.31 with uniform timing).
  if run.model.cfg.reads_phone_timing:
    out["lip_sync_uniform_timing"] = lip_sync(durations=uniform_phone_durations)
  return out


def evaluate_tasks(run: generate.Run, workdir: pathlib.Path, *, num_clips: int, seed: int,
                   tasks: Sequence[str] = tuple(TASKS),
                   heldout: Mapping[str, Sequence[inputs.Clip]] | None = None) -> dict[str, Any]:
  """Every task in `tasks` (see the module docstring) on up to `num_clips` held-out clips each;
  `heldout` (from `heldout_by_subset`) saves reading the split again."""
  if heldout is None:
    heldout = heldout_by_subset(run, num_clips)
  out: dict[str, Any] = {}
  for task in tasks:
    subset = TASKS[task][0]
    clips = list(heldout.get(subset, ()))[:num_clips]
    if len(clips) < 2:
      out[task] = {"skipped": f"fewer than 2 held-out {subset!r} clips in {run.config.data.dir}"}
    else:
      out[task] = evaluate_task(run, task, clips, workdir, seed)
  return out


def headline(tasks: Mapping[str, Any]) -> dict[str, float]:
  """One number per task and arm (model / control), for tables and the dtype comparison."""
  out: dict[str, float] = {}

  def put(name: str, res: Any, path: Sequence[str]) -> None:
    for arm in ("model", "control"):
      v: Any = res
      for k in (arm, *path):
        v = v.get(k) if isinstance(v, Mapping) else None
      if v is not None:
        out[f"{name}/{arm}"] = float(v)

  put("video_to_sound_f1", tasks.get("video_to_sound", {}), ("f1",))
  put("caption_to_sound_accuracy", tasks.get("caption_to_sound", {}), ())
  put("speech_wer", tasks.get("speech", {}).get("intelligibility", {}), ("wer",))
  put("speech_lip_corr", tasks.get("speech", {}).get("lip_sync", {}), ("corr_at_zero_mean",))
  put("speech_lip_corr_uniform_timing", tasks.get("speech", {}).get("lip_sync_uniform_timing", {}),
      ("corr_at_zero_mean",))
  put("transcript_to_speech_wer", tasks.get("transcript_to_speech", {}), ("wer",))
  put("song_pitch_accuracy", tasks.get("song", {}), ("raw_pitch_accuracy",))
  return out


def compare_dtypes(workdir: pathlib.Path, *, num_clips: int, seeds: Sequence[int],
                   tasks: Sequence[str],
                   heldout: Mapping[str, Sequence[inputs.Clip]] | None = None,
                   sample_overrides: Sequence[str] = ()) -> dict[str, Any]:
  """Headline numbers with float32 at every seed, and with bfloat16 matmul inputs at seeds[0].

  `within_spread[name]`: bf16 lies in [min, max] of the float32 seeds. `same_seed_shift[name]`:
  bf16 minus float32 at seeds[0]; `seed_range[name]`: max - min of the float32 seeds;
  `shift_within_seed_range[name]`: |shift| <= range, i.e. the precision moves the measure no
  more than a change of seed does."""
  f32 = generate.load_run(workdir, dtype="float32", sample_overrides=sample_overrides)
  if heldout is None:
    heldout = heldout_by_subset(f32, num_clips)
  kw = dict(num_clips=num_clips, tasks=tasks, heldout=heldout)
  runs = [headline(evaluate_tasks(f32, workdir, seed=s, **kw)) for s in seeds]
  bf16_run = generate.load_run(workdir, dtype="bfloat16", sample_overrides=sample_overrides)
  bf16 = headline(evaluate_tasks(bf16_run, workdir, seed=seeds[0], **kw))
  out: dict[str, Any] = {"seeds": list(seeds), "float32": runs, "bfloat16": bf16,
                         "within_spread": {}, "same_seed_shift": {}, "seed_range": {},
                         "shift_within_seed_range": {}}
  for name, v in bf16.items():
    vals = [r[name] for r in runs if name in r]
    out["within_spread"][name] = bool(vals) and min(vals) - 1e-9 <= v <= max(vals) + 1e-9
    if name in runs[0]:
      shift, spread = v - runs[0][name], max(vals) - min(vals)
      out["same_seed_shift"][name], out["seed_range"][name] = shift, spread
      out["shift_within_seed_range"][name] = abs(shift) <= spread + 1e-9
  return out


def seed_spread(run: generate.Run, workdir: pathlib.Path, *, num_clips: int,
                seeds: Sequence[int], tasks: Sequence[str],
                heldout: Mapping[str, Sequence[inputs.Clip]] | None = None,
                first: Mapping[str, float] | None = None) -> dict[str, Any]:
  """Headline numbers of `tasks` re-sampled at every seed (same weights, same clips): how far
  sampling noise alone moves each measure and each model-minus-control gap, the yardstick for a
  difference between two checkpoints or options. `first`: seeds[0]'s headline, already measured."""
  unknown = sorted(set(tasks) - set(TASKS))
  if unknown:
    raise ValueError(f"unknown tasks {unknown}; known: {sorted(TASKS)}")
  if len(seeds) < 2:
    raise ValueError(f"a spread needs at least 2 seeds, got {list(seeds)}")
  kw = dict(num_clips=num_clips, tasks=tasks, heldout=heldout)
  runs = [dict(first) if first is not None and i == 0 else
          headline(evaluate_tasks(run, workdir, seed=s, **kw)) for i, s in enumerate(seeds)]

  def stats(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}

  names = [n for n in runs[0] if all(n in r for r in runs)]
  gaps = {n[: -len("/model")]: stats([r[n] - r[n.replace("/model", "/control")] for r in runs])
          for n in names if n.endswith("/model") and n.replace("/model", "/control") in names}
  return {"seeds": list(seeds), "tasks": list(tasks), "runs": runs,
          "summary": {n: stats([r[n] for r in runs]) for n in names},
          "model_minus_control": gaps}


def evaluate(workdir: str | os.PathLike, *, num_clips: int | None = None,
             dtype_seeds: int = 0, spread_seeds: int = 0,
             spread_tasks: Sequence[str] = tuple(TASKS),
             sample_overrides: Sequence[str] = ()) -> dict[str, Any]:
  """Writes `workdir`/eval.json: every task, with `dtype_seeds` > 1 the bf16 comparison, with
  `spread_seeds` > 1 `seed_spread` of `spread_tasks` (the eval's own seed first).
  `sample_overrides` ('sample.KEY=VALUE') change the sampler for this eval; eval.json lists them."""
  for name, value in (("dtype_seeds", dtype_seeds), ("spread_seeds", spread_seeds)):
    if value == 1 or value < 0:
      raise ValueError(f"{name}={value}: 0 skips it; a spread needs at least 2 seeds")
  unknown = sorted(set(spread_tasks) - set(TASKS))
  if unknown:
    raise ValueError(f"spread_tasks: unknown tasks {unknown}; known: {sorted(TASKS)}")
  workdir = pathlib.Path(workdir)
  run = generate.load_run(workdir, sample_overrides=sample_overrides)
  c = run.config
  n = int(c.sample.num_clips) if num_clips is None else int(num_clips)
  seed = int(c.sample.seed)
  result: dict[str, Any] = {"workdir": str(workdir), "model": "audiogen_omni", "step": run.step,
                            "weights": run.weights, "num_clips_per_task": n,
                            "sampler": {k: c.sample[k] for k in ("method", "num_steps",
                                                                 "cfg_scale", "cfg_scale_speech")},
                            "sample_overrides": list(sample_overrides)}
  heldout = heldout_by_subset(run, n)
  result["loss_gap"] = task_loss_gaps(run, heldout, num_clips=n, seed=seed)
  result["tasks"] = evaluate_tasks(run, workdir, num_clips=n, seed=seed, heldout=heldout)
  result["headline"] = headline(result["tasks"])
  if dtype_seeds > 1:
    result["dtype_comparison"] = compare_dtypes(
      workdir, num_clips=n, seeds=[seed + 1000 * i for i in range(dtype_seeds)],
      tasks=("video_to_sound", "caption_to_sound"), heldout=heldout,
      sample_overrides=sample_overrides)
  if spread_seeds > 1:
    first = headline({t: result["tasks"][t] for t in spread_tasks if t in result["tasks"]})
    result["seed_spread"] = seed_spread(
      run, workdir, num_clips=n, seeds=[seed + 1000 * i for i in range(spread_seeds)],
      tasks=tuple(spread_tasks), heldout=heldout, first=first)
  out = workdir / f"eval{generate.override_suffix(sample_overrides)}.json"  # eval.json if none
  tmp = out.with_name(out.name + ".tmp")
  tmp.write_text(json.dumps(result, indent=1, default=float) + "\n")
  os.replace(tmp, out)
  return result
