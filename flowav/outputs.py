"""Writes what sampling makes: a wav, an mp4 of the video with the generated audio, a PNG.

Every file is written under a temporary name and renamed, so an interrupted run never leaves a
half-written sample that looks complete.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from flowav.audio import io as audio_io  # noqa: E402
from flowav.data import media  # noqa: E402


def save_spectrogram_png(path: str | os.PathLike, panels: Sequence[tuple[str, np.ndarray]], *,
                         frame_rate: float, marks: dict[str, Sequence[float]] | None = None) -> None:
  """One row per (title, log-mel [T, C]) panel; `marks` draws vertical lines (seconds)."""
  path = pathlib.Path(path)
  fig, axes = plt.subplots(len(panels), 1, figsize=(7, 2.0 * len(panels)), squeeze=False)
  colors = ["white", "red", "cyan", "yellow"]
  for ax, (title, mel) in zip(axes[:, 0], panels):
    t_max = mel.shape[0] / frame_rate
    ax.imshow(np.asarray(mel).T, origin="lower", aspect="auto", cmap="magma",
              extent=(0, t_max, 0, mel.shape[1]))
    ax.set_title(title, fontsize=9)
    ax.set_ylabel("mel band")
    for (label, times), color in zip((marks or {}).items(), colors):
      for i, t in enumerate(times):
        ax.axvline(t, color=color, lw=1.0, ls="--", label=label if i == 0 else None)
    if marks and any(len(v) for v in marks.values()):
      ax.legend(loc="upper right", fontsize=7)
  axes[-1, 0].set_xlabel("seconds")
  fig.tight_layout()
  tmp = path.with_name(path.stem + ".tmp.png")
  fig.savefig(tmp, dpi=80)
  plt.close(fig)
  os.replace(tmp, path)


def spectrogram_image(mel: np.ndarray) -> np.ndarray:
  """[C, T] uint8 image of a log-mel for TensorBoard (low bands at the bottom)."""
  m = np.asarray(mel, np.float32).T[::-1]
  lo, hi = np.percentile(m, 1), np.percentile(m, 99.5)
  return (255 * np.clip((m - lo) / max(hi - lo, 1e-6), 0, 1)).astype(np.uint8)


def write_sample(out_dir: str | os.PathLike, name: str, wav: np.ndarray, sample_rate: int, *,
                 frames: np.ndarray | None, fps: float, mel: np.ndarray, frame_rate: float,
                 reference_mel: np.ndarray | None = None,
                 marks: dict[str, Sequence[float]] | None = None) -> dict[str, str]:
  """Writes name.wav, name.mp4 (if frames are given) and name.png. Returns the paths."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  paths = {"wav": str(out_dir / f"{name}.wav"), "png": str(out_dir / f"{name}.png")}
  audio_io.write_wav(paths["wav"], wav, sample_rate)
  if frames is not None:
    n = min(len(frames), int(np.ceil(len(wav) / sample_rate * fps)))
    paths["mp4"] = str(out_dir / f"{name}.mp4")
    media.write_mp4(paths["mp4"], frames[:n], fps, wav, sample_rate)
  panels = [("generated", mel)]
  if reference_mel is not None:
    panels.append(("original", reference_mel))
  save_spectrogram_png(paths["png"], panels, frame_rate=frame_rate, marks=marks)
  return paths
