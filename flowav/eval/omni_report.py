"""report.md for an AudioGen-Omni eval.json (`flowav.eval.omni.evaluate`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowav.eval import lipsync


def _noisiest_ratio(gap: Mapping[str, Any]) -> str:
  """Control / model loss at the smallest t of a `reliance.loss_gap` result ("n/a" without by_t)."""
  by_t = gap.get("by_t") or {}
  if not by_t:
    return "n/a"
  model, control = by_t[min(by_t, key=float)]
  return f"{control / max(model, 1e-12):.3f}"


def render(result: Mapping[str, Any]) -> str:
  """report.md for an AudioGen-Omni eval.json: one row per task, model beside its control."""
  lines = [f"# AudioGen-Omni evaluation: {result['workdir']} (step {result['step']}, "
           f"{result['weights']} weights, {result['num_clips_per_task']} clips per task, "
           f"sampler {result.get('sampler')}"
           + (f", overrides {result['sample_overrides']}" if result.get("sample_overrides") else "")
           + ")", "",
           "| task: measure | model | control | upper bound (codec) | control is |",
           "|---|---|---|---|---|"]
  t = result["tasks"]
  rows = [("video_to_sound: onset F1", t.get("video_to_sound"), ("f1",), "another clip's video"),
          ("caption_to_sound: material accuracy", t.get("caption_to_sound"), (),
           "another clip's caption"),
          ("speech: WER (lower is better)", t.get("speech", {}).get("intelligibility"), ("wer",),
           "another clip's transcript"),
          ("speech: lip corr at lag 0", t.get("speech", {}).get("lip_sync"),
           ("corr_at_zero_mean",), "another clip's video"),
          ("speech: lip corr at lag 0, uniform phone timing",
           t.get("speech", {}).get("lip_sync_uniform_timing"), ("corr_at_zero_mean",),
           "another clip's video"),
          ("transcript_to_speech: WER", t.get("transcript_to_speech"), ("wer",),
           "another clip's transcript"),
          ("song: pitch accuracy (50 cents)", t.get("song"), ("raw_pitch_accuracy",),
           "another clip's melody")]
  for name, res, path, control in rows:
    if not res:
      continue
    if "skipped" in res:
      lines.append(f"| {name} | skipped: {res['skipped']} | | | |")
      continue
    vals = []
    for arm in ("model", "control", "codec"):
      v: Any = res.get(arm)
      for k in path:
        v = v.get(k) if isinstance(v, Mapping) else None
      vals.append("n/a" if v is None else f"{float(v):.3f}")
    lines.append(f"| {name} | " + " | ".join(vals) + f" | {control} |")
  for arm in ("lip_sync", "lip_sync_uniform_timing"):
    d = (t.get("speech", {}).get(arm) or {}).get("corr_at_zero_model_minus_control")
    if d:
      lines.append(f"\nspeech {arm}, corr at lag 0, {lipsync.describe_difference(d)}.")
  for task, res in (("speech", t.get("speech", {}).get("intelligibility")),
                    ("transcript_to_speech", t.get("transcript_to_speech"))):
    for rate in ("wer", "cer"):
      d = (res or {}).get(f"{rate}_model_minus_control")
      if d:
        lines.append(f"\n{task} per-clip {rate.upper()} (negative: fewer errors than the "
                     f"control), {lipsync.describe_difference(d)}.")
  gaps = result.get("loss_gap")
  if gaps:
    # A class-level condition (the caption's material, the song's melody) sets the coarse sound,
    # so its gap shows at the noisiest t and is diluted by the pooled ratio.
    lines += ["", "Velocity loss (t = 0.1 ... 0.9, same noise) with each clip's own condition vs "
              "another clip's: a ratio near 1 means the condition is not read. The last column is "
              "the ratio at the noisiest t alone.", "",
              "| task | condition swapped | own | another clip's | ratio | ratio at noisiest t |",
              "|---|---|---|---|---|---|"]
    for task, by_condition in gaps.items():
      for condition, g in by_condition.items():
        lines.append(f"| {task} | {condition} | {g['model']:.4f} | {g['control']:.4f} | "
                     f"{g['ratio']:.3f} | {_noisiest_ratio(g)} |")
  dc = result.get("dtype_comparison")
  if dc:
    lines += ["", f"bfloat16 matmul inputs vs float32 at seeds {dc['seeds']} (bfloat16 at the "
              "first seed; shift: bfloat16 minus float32 at that seed, against the range of the "
              "float32 seeds; a 4th draw lies within the range of 3 only half the time):", "",
              "| measure | float32 seeds | bfloat16 | within spread | same-seed shift | "
              "float32 range | shift within range |", "|---|---|---|---|---|---|---|"]
    for name, v in dc["bfloat16"].items():
      f32 = ", ".join(f"{r[name]:.3f}" for r in dc["float32"] if name in r)
      shift = dc.get("same_seed_shift", {}).get(name)
      paired = (f"{shift:+.3f} | {dc['seed_range'][name]:.3f} | "
                f"{dc['shift_within_seed_range'][name]}" if shift is not None else "n/a | n/a | n/a")
      lines.append(f"| {name} | {f32} | {v:.3f} | {dc['within_spread'][name]} | {paired} |")
  lines += _spread_lines(result.get("seed_spread"))
  return "\n".join(lines) + "\n"


def _spread_lines(spread: Mapping[str, Any] | None) -> list[str]:
  """The seed-spread table: each measure and each model-minus-control gap over the seeds."""
  if not spread:
    return []
  lines = ["", f"Sampling noise: {', '.join(spread['tasks'])} re-sampled at seeds {spread['seeds']} "
           "(same weights and clips):", "",
           "| measure | per seed | mean | std | min | max |", "|---|---|---|---|---|---|"]
  rows = [(n, [r[n] for r in spread["runs"]], s) for n, s in spread["summary"].items()]
  for base, s in spread["model_minus_control"].items():
    rows.append((f"{base}: model - control",
                 [r[f"{base}/model"] - r[f"{base}/control"] for r in spread["runs"]], s))
  for name, values, s in rows:
    per_seed = ", ".join(f"{v:.3f}" for v in values)
    lines.append(f"| {name} | {per_seed} | {s['mean']:.3f} | {s['std']:.3f} | {s['min']:.3f} | "
                 f"{s['max']:.3f} |")
  return lines
