"""`make demo`: build flowav-demo, train VSSFlow-demo, sample held-out clips, evaluate, report.

Everything lands under one workdir (default runs/demo/): data/, checkpoints/, tb/, samples/,
eval.json, eval_plots/, report.md. Each stage resumes or skips what is already done, so rerunning
the command continues where a killed run stopped.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import ml_collections as mlc
from absl import logging

from flowav import sampling
from flowav.data.demo import build
from flowav.eval import demo as demo_eval
from flowav.train import loop


def _report(result: dict[str, Any], timings: dict[str, float]) -> str:
  imp = result["impacts"]
  boot = imp["bootstrap_model_minus_control"]
  lines = [
    "# flowav demo report", "",
    f"VSSFlow `demo`, step {result['step']} ({result['weights']} weights), sampler "
    f"{result['sampler']}.", "",
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
              f"{sp['duration_predictor_boundary_error_frames_median']:.1f} latent frames).", "",
              "| arm | corr at lag 0 | corr at best lag | median abs lag (frames) | lag <= 1 |",
              "|---|---|---|---|---|"]
    for arm in ("model", "control", "codec"):
      m = sp[arm]
      label = {"model": "model (own video)", "control": "control (another clip's video)",
               "codec": "real audio through the codec"}[arm]
      lines.append(f"| {label} | {m['corr_at_zero_mean']:.3f} | {m['corr_at_best_mean']:.3f} | "
                   f"{m['median_abs_lag_frames']:.1f} | {m['frac_abs_lag_le_1']:.2f} |")
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
  lines += ["", "## Time (s)", "", " | ".join(f"{k} {v:.0f}" for k, v in timings.items()), ""]
  return "\n".join(lines)


def run(config: mlc.ConfigDict, workdir: str, *, demo_size: str = "default",
        progress: bool = True) -> dict[str, Any]:
  workdir_path = pathlib.Path(workdir)
  data_dir = workdir_path / "data"
  with config.unlocked():
    config.data.dir = str(data_dir)
  timings: dict[str, float] = {}
  t0 = time.time()
  build.build_demo(str(data_dir), build.preset(demo_size))
  timings["build data"] = time.time() - t0
  t0 = time.time()
  loop.train(config, workdir, progress=progress)
  timings["train"] = time.time() - t0
  t0 = time.time()
  sampling.sample_heldout(workdir, workdir_path / "samples")
  timings["sample"] = time.time() - t0
  t0 = time.time()
  result = demo_eval.evaluate(workdir)
  timings["eval"] = time.time() - t0
  report = _report(result, timings)
  (workdir_path / "report.md").write_text(report)
  print(report)
  print(f"\nEverything is in {workdir_path.absolute()} (report.md, eval.json, samples/, tb/).")
  logging.info("demo timings: %s", json.dumps(timings))
  return result
