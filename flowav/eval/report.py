"""report.md: the evaluation's eval.json as tables, every arm beside its controls and bound."""

from __future__ import annotations

import math
from typing import Any

from flowav.eval import lipsync

_ARMS = {"model": "model (own conditions)", "control": "control (another clip's video)",
         "null": "control (no conditions)", "real_other_subset": "control (real audio, other subset)",
         "codec": "upper bound (real audio through the codec)"}


def _num(x: Any, fmt: str = ".3f") -> str:
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _measures(m: dict[str, Any]) -> list[str]:
  """Sections for `flowav.eval.demo_measures`' results (skipped parts say why)."""
  lines: list[str] = []
  imp = m.get("impacts")
  if imp:
    lines += ["", "## Impacts: class and distribution", ""]
    if "skipped" in imp:
      lines.append(f"Skipped: {imp['skipped']}")
    else:
      acc = imp["class_accuracy"]
      lines += [f"Material accuracy of a classifier trained on real demo audio ({acc['num_clips']} "
                f"clips; chance {acc['chance']:.2f}, majority {acc['majority']:.2f}):", "",
                "| arm | accuracy |", "|---|---|"]
      lines += [f"| {_ARMS[a]} | {acc[a]:.3f} |" for a in _ARMS if a in acc]
      lines += _distribution(imp["distribution"])
  sp = m.get("speech")
  if sp:
    lines += ["", "## Speech: intelligibility, quality, speaker", ""]
    parts = [("intelligibility", ("wer", "cer", "wer_shuffled")), ("dnsmos", ("ovrl", "sig", "bak")),
             ("speaker_similarity", ("cosine", "cosine_other_clip"))]
    for part, keys in parts:
      res = sp.get(part, {})
      if "skipped" in res:
        lines += [f"{part}: skipped ({res['skipped']})", ""]
        continue
      lines += [f"| {part} | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
      lines += [f"| {_ARMS[a]} | " + " | ".join(_num(res[a].get(k)) for k in keys) + " |"
                for a in _ARMS if a in res]
      lines.append("")
    lines.append("wer_shuffled: the same transcriptions against the next clip's transcript (the "
                 "paired control); cosine_other_clip: against the next clip's real audio.")
    lines += _distribution(sp.get("distribution", {}))
  return lines


def _distribution(d: dict[str, Any]) -> list[str]:
  if not d:
    return []
  if "skipped" in d:
    return ["", f"Distribution distances skipped: {d['skipped']}"]
  lines = ["", f"Distances to the same clips' real audio on `{d['embedder']}` features (FD with "
           "Ledoit-Wolf shrinkage; KD = unbiased MMD², cubic kernel; lower is closer):", "",
           "| set | FD | KD | clips |", "|---|---|---|---|"]
  lines += [f"| {_ARMS[a]} | {d[a]['fd']:.3f} | {d[a]['kd']:.4f} | {d[a]['num_clips']} |"
            for a in _ARMS if a in d]
  return lines


def render(result: dict[str, Any], timings: dict[str, float] | None = None) -> str:
  """report.md's markdown for an eval.json `result` (and the demo's stage `timings`)."""
  imp = result["impacts"]
  boot = imp["bootstrap_model_minus_control"]
  lines = [
    "# flowav demo report", "",
    f"VSSFlow `demo`, step {result['step']} ({result['weights']} weights), sampler "
    f"{result['sampler']}"
    + (f" (overrides {result['sample_overrides']})" if result.get("sample_overrides") else "")
    + ".", "",
    f"## Impacts (video-to-sound), {imp['num_clips']} held-out clips, tolerance "
    f"±{1000 * imp['tolerance_s']:.0f} ms", "",
    "| arm | precision | recall | F1 | median error (ms) |", "|---|---|---|---|---|",
  ]
  names = {"model": "model (own video)", "control": "control (another clip's video)",
           "codec": "upper bound (real audio through the codec)"}
  for arm in ("model", "control", "codec"):
    m = imp[arm]
    lines.append(f"| {names[arm]} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | "
                 f"{m['median_error_ms']:.1f} |")
  if "desync" in imp:
    lines += ["", "Audio-visual offset (DeSync-style: cross-correlation of the audio onset envelope "
              "with the video's contact train; positive = audio late):", "",
              "| arm | median abs offset (ms) | median signed (ms) | within tolerance | "
              "mean peak corr |", "|---|---|---|---|---|"]
    for arm in ("model", "control", "codec"):
      m = imp["desync"][arm]
      lines.append(f"| {names[arm]} | {m['median_abs_offset_ms']:.1f} | "
                   f"{m['median_signed_offset_ms']:.1f} | {m['frac_within_tol']:.2f} | "
                   f"{m['mean_peak_corr']:.2f} |")
  verdict = (imp["f1_ratio_model_over_control"] >= 2.0 and boot["ci_low"] > 0)
  lines += ["", f"F1 model / control = {imp['f1_ratio_model_over_control']:.2f}; "
            f"F1 difference {boot['diff']:.3f}, bootstrap 95 % CI [{boot['ci_low']:.3f}, "
            f"{boot['ci_high']:.3f}] -> {'PASS' if verdict else 'FAIL'} (needs ratio >= 2 and CI > 0)."]
  if "speech" in result:
    sp = result["speech"]
    lines += ["", f"## Speech (visual TTS), {sp['num_clips']} held-out clips", "",
              "Phone durations from the duration predictor on the video (median boundary error "
              f"{sp['boundary_error_frames_median']:.1f} latent frames).", "",
              "| arm | corr at lag 0 | corr at best lag | median abs lag (frames) | lag <= 1 |",
              "|---|---|---|---|---|"]
    for arm in ("model", "control", "codec"):
      m = sp[arm]
      label = {"model": "model (own video)", "control": "control (another clip's video)",
               "codec": "real audio through the codec"}[arm]
      lines.append(f"| {label} | {m['corr_at_zero_mean']:.3f} | {m['corr_at_best_mean']:.3f} | "
                   f"{m['median_abs_lag_frames']:.1f} | {m['frac_abs_lag_le_1']:.2f} |")
    if "corr_at_zero_model_minus_control" in sp:
      lines += ["", "Corr at lag 0, " + lipsync.describe_difference(sp["corr_at_zero_model_minus_control"])
                + "."]
  if "vocoder" in result:
    lines += ["", "## Vocoder: HiFi-GAN (the default, installed) vs Griffin-Lim on the held-out real "
              "audio", "", "Distances to the original wav after wav -> mel -> wav (lower is closer; "
              "gain = Griffin-Lim minus HiFi-GAN, so positive favours HiFi-GAN).", "",
              "| task | metric | Griffin-Lim | HiFi-GAN | gain |", "|---|---|---|---|---|"]
    for task in ("sound", "speech"):
      rows = result["vocoder"].get(task)
      for metric in ("mrstft", "lsd_low", "lsd_high", "mel_l1") if rows else ():
        lines.append(f"| {task} | {metric} | {rows[f'griffin_lim/{metric}']:.3f} | "
                     f"{rows[f'hifigan/{metric}']:.3f} | {rows[f'gain/{metric}']:+.3f} |")
  lines += _measures(result.get("measures", {}))
  if timings:
    lines += ["", "## Time (s)", "", " | ".join(f"{k} {v:.0f}" for k, v in timings.items())]
  return "\n".join(lines + [""])


