"""The `basic_pitch` embedder: Spotify's basic-pitch note / onset / contour posteriorgrams, pooled.

basic-pitch (Bittner et al., ICASSP 2022) ships its model as `nmp.onnx` inside its wheel; installing
the package itself pulls in TensorFlow, so `make` unpacks the wheel under `EXTRACTED_DIR` and
onnxruntime runs the graph. Registered in flowav.eval.embedders as "basic_pitch".
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

# Where `make` unpacks weight wheels it does not install (as flowav.encoders.mobilenet_v2 does).
EXTRACTED_DIR = pathlib.Path(sys.prefix) / "share" / "flowav"

# basic-pitch 0.4.0's constants.py and inference.run_inference: the model sees 2 s windows less one
# hop (AUDIO_N_SAMPLES) and emits 172 frames at 22050 // 256 = 86 frames/s; windows overlap by 30
# frames, half of which are dropped at each window end when the outputs are concatenated.
BP_SAMPLE_RATE = 22050
BP_FFT_HOP = 256
BP_WINDOW = 2 * BP_SAMPLE_RATE - BP_FFT_HOP  # 43844 samples
BP_FPS = BP_SAMPLE_RATE // BP_FFT_HOP  # 86
BP_OVERLAP_FRAMES = 30
BP_HOP = BP_WINDOW - BP_OVERLAP_FRAMES * BP_FFT_HOP  # 36164 samples
BP_WHEEL = "basic-pitch==0.4.0"
BP_MODEL = pathlib.Path("basic_pitch", "saved_models", "icassp_2022", "nmp.onnx")
# The ONNX graph's tensor names, as basic_pitch.inference.Model.predict maps them.
_BP_INPUT = "serving_default_input_2:0"
_BP_OUTPUTS = {"note": "StatefulPartitionedCall:1", "onset": "StatefulPartitionedCall:2",
               "contour": "StatefulPartitionedCall:0"}
_BP_HINT = (f"run `make` (it unpacks the wheel of {BP_WHEEL} into {EXTRACTED_DIR}: installing "
            "basic-pitch itself pulls in TensorFlow), or pass model_path= to its nmp.onnx")
_ONNX_HINT = "pip install -e '.[eval]' (or: pip install 'onnxruntime>=1.32,<2')"


def basic_pitch_model_path() -> pathlib.Path:
  """basic-pitch's `nmp.onnx` from an installed `basic_pitch` package (found without importing it:
  its import loads TensorFlow), else from its wheel unpacked under `EXTRACTED_DIR`."""
  candidates = []
  spec = importlib.util.find_spec("basic_pitch")
  if spec is not None and spec.submodule_search_locations:
    candidates.append(pathlib.Path(next(iter(spec.submodule_search_locations))).parent / BP_MODEL)
  candidates.append(EXTRACTED_DIR / BP_MODEL)
  for path in candidates:
    if path.is_file():
      return path
  raise FileNotFoundError(f"basic-pitch model: nmp.onnx not found in "
                          f"{[os.fspath(c) for c in candidates]}; {_BP_HINT}")


def basic_pitch_windows(wav: np.ndarray) -> np.ndarray:
  """Mono audio `[N]` at 22050 Hz -> model input windows `[W, 43844]` float32, as
  basic_pitch.inference.get_audio_input: half the overlap (3840 zeros) is prepended, then a window
  starts every 36164 samples while any audio is left; the last one is zero-padded."""
  audio = np.concatenate([np.zeros((BP_WINDOW - BP_HOP) // 2, np.float32), np.asarray(wav, np.float32)])
  starts = range(0, len(audio), BP_HOP)
  out = np.zeros((len(starts), BP_WINDOW), np.float32)
  for w, i in enumerate(starts):
    chunk = audio[i:i + BP_WINDOW]
    out[w, :len(chunk)] = chunk
  return out


def unwrap_basic_pitch(frames: np.ndarray, n_samples: int) -> np.ndarray:
  """One clip's window outputs `[W, 172, F]` -> `[T, F]`, as basic_pitch.inference.unwrap_output:
  15 frames cut from both ends of every window, the windows concatenated, and the result cut to
  the clip's floor(n_samples * 86 / 22050) frames (its float expression, for identical T)."""
  frames = frames[:, BP_OVERLAP_FRAMES // 2:-(BP_OVERLAP_FRAMES // 2)]
  n_frames = int(np.floor(n_samples * (BP_FPS / BP_SAMPLE_RATE)))
  return frames.reshape(-1, frames.shape[-1])[:n_frames]


def fold_pitch_classes(contour: np.ndarray) -> np.ndarray:
  """Contour posteriorgram `[T, 264]` (3 bins per semitone from A0) -> `[T, 36]`: the max over
  octaves of each 1/3-semitone pitch class (max, not sum: the top octave is partial). The model puts
  an in-tune note k semitones above A at the middle bin 3k + 1 (measured: A4 peaks at bin 145, not
  at basic-pitch's own midi_pitch_to_contour_bin 144), a note 1/3 semitone flat or sharp at 3k, 3k + 2."""
  t, bins = contour.shape
  padded = np.zeros((t, -(-bins // 36) * 36), contour.dtype)
  padded[:, :bins] = contour
  return padded.reshape(t, -1, 36).max(1)


class BasicPitchEmbedder:
  """Pooled basic-pitch posteriorgrams: `[N, 424]` (`[N, 880]` with `fold_contour=False`), laid out
  as the means over time of [note 88, onset 88, contour 36 (or 264)], then their stds."""

  def __init__(self, session: Any, *, fold: bool = True, batch_size: int = 8,
               name: str = "basic_pitch"):
    self.session = session
    self.fold = bool(fold)
    self.batch_size = int(batch_size)
    self.name = name
    self.sample_rate = BP_SAMPLE_RATE

  def posteriorgrams(self, wavs: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Per clip {"note": [T, 88], "onset": [T, 88], "contour": [T, 264]}, values in [0, 1] at 86
    frames/s: run_inference's output for audio already at 22050 Hz. Windows of all clips are
    batched together (the model's batch axis is free)."""
    windows = [basic_pitch_windows(w) for w in wavs]
    flat = np.concatenate(windows)[:, :, None]
    names = list(_BP_OUTPUTS.values())
    parts: dict[str, list[np.ndarray]] = {k: [] for k in _BP_OUTPUTS}
    for b in range(0, len(flat), self.batch_size):
      for key, out in zip(_BP_OUTPUTS, self.session.run(names, {_BP_INPUT: flat[b:b + self.batch_size]})):
        parts[key].append(np.asarray(out, np.float32))
    outs = {k: np.concatenate(v) for k, v in parts.items()}
    bounds = np.cumsum([0] + [len(w) for w in windows])
    return [{k: unwrap_basic_pitch(v[lo:hi], len(wav)) for k, v in outs.items()}
            for wav, lo, hi in zip(wavs, bounds[:-1], bounds[1:])]

  def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
    rows = []
    for i, (wav, post) in enumerate(zip(wavs, self.posteriorgrams(wavs))):
      if post["note"].shape[0] == 0:
        raise ValueError(f"{self.name}: clip {i} ({np.shape(wav)[0]} samples) is shorter than one "
                         f"basic-pitch frame ({BP_FFT_HOP} samples at {BP_SAMPLE_RATE} Hz)")
      contour = fold_pitch_classes(post["contour"]) if self.fold else post["contour"]
      feats = [post["note"], post["onset"], contour]
      rows.append(np.concatenate([f.mean(0) for f in feats] + [f.std(0) for f in feats]))
    return np.stack(rows)


def basic_pitch(model_path: str | os.PathLike | None = None, *, fold_contour: bool = True,
                batch_size: int = 8, threads: int = 0) -> BasicPitchEmbedder:
  """basic-pitch's ONNX model (default: `basic_pitch_model_path()`) run by onnxruntime on the CPU
  with `threads` threads (0: onnxruntime's default)."""
  if importlib.util.find_spec("onnxruntime") is None:
    raise ImportError(f"the basic_pitch embedder needs onnxruntime: {_ONNX_HINT}")
  import onnxruntime  # noqa: PLC0415 -- optional eval dependency

  path = pathlib.Path(model_path) if model_path is not None else basic_pitch_model_path()
  if not path.is_file():
    raise FileNotFoundError(f"basic-pitch model file not found: {path}; {_BP_HINT}")
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads = int(threads)
  try:
    session = onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
  except Exception as e:  # onnxruntime raises its own exception types for unreadable graphs
    raise ValueError(f"basic-pitch model {path}: onnxruntime cannot load it: {e}") from e
  inputs, outputs = ({x.name for x in xs} for xs in (session.get_inputs(), session.get_outputs()))
  if _BP_INPUT not in inputs or not set(_BP_OUTPUTS.values()) <= outputs:
    raise ValueError(f"basic-pitch model {path}: expected input {_BP_INPUT!r} and outputs "
                     f"{sorted(_BP_OUTPUTS.values())}, got {sorted(inputs)} -> {sorted(outputs)} "
                     f"(is it {BP_WHEEL}'s nmp.onnx?)")
  suffix = "" if fold_contour else ", contour kept"
  return BasicPitchEmbedder(session, fold=fold_contour, batch_size=batch_size,
                            name=f"basic_pitch ({BP_WHEEL}{suffix})")
