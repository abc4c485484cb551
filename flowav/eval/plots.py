"""eval_plots/metrics.png: every measure of eval.json as bars, one colour per arm."""

from __future__ import annotations

import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ARMS = ("model", "control", "null", "real_other_subset", "codec")
_COLOURS = {"model": "C0", "control": "C3", "null": "C1", "real_other_subset": "C4", "codec": "C2"}
_SHORT = {"real_other_subset": "other\nsubset"}


def panels(result: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
  """(title, {arm: value}) for each measure present in `result` (skipped measures are left out)."""
  out = []

  def add(title: str, table: dict[str, Any] | None, key: str | None = None) -> None:
    if not table or "skipped" in table:
      return
    values = {a: float(table[a] if key is None else table[a][key]) for a in ARMS
              if a in table and (key is None or key in table[a])}
    if values:
      out.append((title, values))

  add("impacts: onset F1", result.get("impacts"), "f1")
  add("speech: mouth/envelope corr (lag 0)", result.get("speech"), "corr_at_zero_mean")
  m = result.get("measures", {})
  imp, sp = m.get("impacts", {}), m.get("speech", {})
  if "skipped" not in imp:
    add("impacts: material accuracy", imp.get("class_accuracy"))
    add("impacts: FD (classifier features)", imp.get("distribution"), "fd")
  add("speech: WER", sp.get("intelligibility"), "wer")
  add("speech: DNSMOS overall", sp.get("dnsmos"), "ovrl")
  add("speech: speaker cosine", sp.get("speaker_similarity"), "cosine")
  add("speech: FD (Whisper encoder)", sp.get("distribution"), "fd")
  return out


def metric_bars(path: pathlib.Path, result: dict[str, Any]) -> None:
  """One bar chart per measure of `result` (eval.json), arms side by side."""
  items = panels(result)
  cols = min(4, len(items))
  rows = (len(items) + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
  for ax, (title, values) in zip(axes.flat, items):
    ax.bar([_SHORT.get(a, a) for a in values], list(values.values()),
           color=[_COLOURS[a] for a in values])
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
  for ax in list(axes.flat)[len(items):]:
    ax.axis("off")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)
