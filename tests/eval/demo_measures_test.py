"""flowav.eval.demo_measures and the report: each arm against its controls, on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from flowav.audio.codec import MelCodec
from flowav.eval import demo_measures, embedders, plots, report

SR = 22050


def _tones(rng: np.random.Generator, n: int, low: float, high: float) -> list[np.ndarray]:
  t = np.arange(int(0.5 * SR)) / SR
  return [(0.3 * np.sin(2 * np.pi * rng.uniform(low, high) * t)).astype(np.float32)
          for _ in range(n)]


def test_distribution_orders_arms_by_closeness_to_real():
  rng = np.random.default_rng(0)
  real = _tones(rng, 12, 300, 500)
  arms = {"model": _tones(rng, 12, 300, 500),  # same distribution as the real set
          "null": [0.1 * rng.standard_normal(int(0.5 * SR)).astype(np.float32) for _ in range(12)],
          "codec": real}
  res = demo_measures.distribution(embedders.get("mel_stats"), arms, real, SR)
  assert res["codec"]["fd"] < 1e-6 < res["model"]["fd"] < res["null"]["fd"]
  assert res["model"]["kd"] < res["null"]["kd"]
  assert res["num_real"] == 12 and res["model"]["num_clips"] == 12


def test_too_few_clips_is_skipped_with_a_reason():
  rng = np.random.default_rng(1)
  out = demo_measures.optional(lambda: demo_measures.distribution(
    embedders.get("mel_stats"), {"model": _tones(rng, 1, 300, 500)}, _tones(rng, 3, 300, 500), SR))
  assert "skipped" in out and "'model': 1" in out["skipped"]
  # Other errors are not swallowed.
  with pytest.raises(ZeroDivisionError):
    demo_measures.optional(lambda: 1 / 0)


class _PitchClassifier:
  """Labels a clip 'low' or 'high' by its strongest mel channel (a stand-in with known answers)."""
  labels = ("high", "low")

  def label_ids(self, labels):
    return np.asarray([self.labels.index(x) for x in labels])

  def predict(self, latents, mask=None):
    del mask
    return np.asarray([0 if np.argmax(z.mean(0)) > 20 else 1 for z in latents])


def test_class_accuracy_scores_controls_against_the_original_labels():
  rng = np.random.default_rng(2)
  low, high = _tones(rng, 4, 200, 300), _tones(rng, 4, 3000, 4000)
  labels = ["low"] * 4 + ["high"] * 4
  arms = {"model": low + high, "control": high + low}  # control: another clip's condition
  res = demo_measures.class_accuracy(_PitchClassifier(), arms, labels, MelCodec())
  assert res["model"] == 1.0 and res["control"] == 0.0
  assert res["chance"] == 0.5 and res["majority"] == 0.5 and res["num_clips"] == 8


def test_report_and_plots_render_measures_and_skips(tmp_path):
  result = {
    "step": 3, "weights": "ema", "sampler": {}, "impacts": {
      "num_clips": 2, "tolerance_s": 0.04, "f1_ratio_model_over_control": 3.0,
      "bootstrap_model_minus_control": {"diff": 0.5, "ci_low": 0.1, "ci_high": 0.9},
      **{arm: {"precision": 1.0, "recall": 1.0, "f1": 1.0, "median_error_ms": 1.0}
         for arm in ("model", "control", "codec")}},
    "measures": {
      "impacts": {"class_accuracy": {"model": 0.75, "control": 0.125, "codec": 1.0, "null": 0.25,
                                     "chance": 0.25, "majority": 0.3, "labels": ["a"],
                                     "num_clips": 16},
                  "distribution": {"embedder": "e", "num_real": 4,
                                   "model": {"fd": 1.5, "kd": 0.1, "num_clips": 4}}},
      "speech": {"intelligibility": {"skipped": "ImportError: no whisper"},
                 "dnsmos": {"model": {"ovrl": 2.5, "sig": 3.0, "bak": float("nan")}},
                 "speaker_similarity": {"skipped": "x"}}},
  }
  text = report.render(result)
  assert "| model (own conditions) | 0.750 |" in text
  assert "| control (another clip's video) | 0.125 |" in text
  assert "| model (own conditions) | 1.500 | 0.1000 | 4 |" in text
  assert "intelligibility: skipped (ImportError: no whisper)" in text
  assert "| model (own conditions) | 2.500 | 3.000 | n/a |" in text
  assert "PASS" in text
  titles = dict(plots.panels(result))
  assert titles["impacts: material accuracy"] == {"model": 0.75, "control": 0.125, "null": 0.25,
                                                  "codec": 1.0}
  assert "speech: WER" not in titles  # skipped measures have no panel
  plots.metric_bars(tmp_path / "m.png", result)
  assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
