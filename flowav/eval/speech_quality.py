"""Reference-free speech quality (DNSMOS) and speaker similarity (GE2E d-vectors).

DNSMOS (Reddy et al., ICASSP 2022, "DNSMOS P.835") predicts the P.835 ratings SIG (speech
signal), BAK (background noise) and OVRL (overall), and a P.808 MOS, from the waveform alone. The
ONNX models ship inside the PyPI package `speechmos` (0.0.1.1); onnxruntime runs them here and
the windowing follows Microsoft's `DNSMOS/dnsmos_local.py` (as `speechmos.dnsmos.run` does, and
the tests check equality with it): 16 kHz input in [-1, 1]; a clip shorter than 9.01 s is
repeated (doubled until at least 9.01 s, not zero-padded); windows of 9.01 s start every second
while they end within the last whole second (`int(floor(seconds) - 9.01) + 1` of them, so up to
~2 s of tail is unused: 10.5 s gives one window, 11 s two); the raw SIG/BAK/OVRL outputs are
mapped by fixed polynomials; a clip's score is the mean over its windows. A window costs ~0.25 s
on 2 idle CPU cores (~0.8 s when they are busy), so a 4 s clip (doubled twice to 15.3 s: 6
windows) costs ~1.5 s while a 4.6-5 s one (9.2-10 s: 1 window) costs 0.25 s. ONNX on CPU is
deterministic (bitwise equal reruns, with any thread count).

Speaker similarity embeds each clip with the GE2E speaker encoder (Wan et al., ICASSP 2018) of
the PyPI package `resemblyzer` (0.1.4, weights `pretrained.pt` inside the wheel): a 3-layer LSTM
(256) over 40-band mel frames and a linear + ReLU layer, on partial utterances of 1.6 s (160
frames) every 77 frames, their unit embeddings averaged and re-normalised. The forward pass is
written here in numpy from the state dict read with `torch.load(weights_only=True)`;
preprocessing follows `resemblyzer.preprocess_wav` (raise the RMS to -30 dBFS, never lower it;
drop silences longer than ~0.2 s with WebRTC VAD mode 3 on 30 ms frames) except that resampling
to 16 kHz uses `flowav.audio.io.resample`, int16 conversion for the VAD saturates instead of
wrapping, and a clip where the VAD finds no speech is embedded untrimmed. Embeddings are
non-negative, so cosines lie in [0, 1]. ~0.1 s per second of audio on 2 CPU cores (batched).

Both metrics add a control in the style of `flowav.eval.asr`: DNSMOS reports per-clip rows so
callers can compare with reference speech; `speaker_similarity` also scores each clip against the
reference of the next pair (a rotation by one), which must be lower when the speakers differ.
`pip install -e '.[eval]'` installs speechmos, resemblyzer (with librosa, webrtcvad) and torch.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import pathlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flowav.audio.io import resample
from flowav.encoders.weights import WeightsError, read_torch_state_dict

SAMPLE_RATE = 16000  # both models run at 16 kHz
_INSTALL_HINT = "pip install -e '.[eval]' (or: pip install speechmos resemblyzer webrtcvad-wheels)"

# --- DNSMOS ---------------------------------------------------------------------------------------

DNSMOS_WINDOW_S = 9.01
# Polynomials mapping raw model outputs to MOS (highest power first), from dnsmos_local.py.
_POLY = {
  False: {"sig": (-0.08397278, 1.22083953, 0.0052439), "bak": (-0.13166888, 1.60915514, -0.39604546),
          "ovrl": (-0.06766283, 1.11546468, 0.04602535)},
  True: {"sig": (-0.01019296, 0.02751166, 1.19576786, -0.24348726),
         "bak": (-0.04976499, 0.44276479, -0.1644611, 0.96883132),
         "ovrl": (-0.00533021, 0.005101, 1.18058466, -0.11236046)},
}
DNSMOS_KEYS = ("sig", "bak", "ovrl", "p808")


def _require(module: str, what: str):
  if importlib.util.find_spec(module) is None:
    raise ImportError(f"{what} needs the package providing `{module}`: {_INSTALL_HINT}")
  return importlib.import_module(module)


def _package_dir(module: str, what: str) -> pathlib.Path:
  """Folder of an installed package, found without importing it (resemblyzer imports torch)."""
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise ImportError(f"{what} needs the package `{module}`: {_INSTALL_HINT}")
  return pathlib.Path(next(iter(spec.submodule_search_locations)))


def _mono(wav: np.ndarray, what: str) -> np.ndarray:
  wav = np.asarray(wav, np.float32)
  if wav.ndim != 1:
    raise ValueError(f"{what}: wav must be mono [N], got shape {wav.shape}")
  if wav.size == 0:
    raise ValueError(f"{what}: empty clip")
  if not np.all(np.isfinite(wav)):
    raise ValueError(f"{what}: wav contains NaN or inf")
  return wav


@runtime_checkable
class QualityModel(Protocol):
  """Anything that rates a mono waveform without a reference."""

  name: str

  def score(self, wav: np.ndarray, sample_rate: int) -> dict[str, float]:
    """Float waveform `[N]` at `sample_rate` -> named scores (higher is better)."""
    ...


class DNSMOS:
  """DNSMOS P.835 (+ P.808) from the ONNX files of `speechmos`; `score` returns sig/bak/ovrl/p808
  plus `windows` (windows averaged) and `clipped` (samples outside [-1, 1] that were clipped)."""

  def __init__(self, primary_path: str | os.PathLike, p808_path: str | os.PathLike, *,
               personalized: bool = False, num_threads: int = 0):
    ort = _require("onnxruntime", "DNSMOS")
    self.librosa = _require("librosa", "DNSMOS")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(num_threads)  # 0: onnxruntime picks (all cores)
    options.inter_op_num_threads = 1
    for path in (primary_path, p808_path):
      if not os.path.isfile(path):
        raise FileNotFoundError(f"DNSMOS: model file not found: {path}")
    self.primary = ort.InferenceSession(os.fspath(primary_path), options, providers=["CPUExecutionProvider"])
    self.p808 = ort.InferenceSession(os.fspath(p808_path), options, providers=["CPUExecutionProvider"])
    self.personalized = bool(personalized)
    self.polys = {k: np.poly1d(c) for k, c in _POLY[self.personalized].items()}
    self.name = "DNSMOS P.835" + (" personalized" if personalized else "")

  def _p808_features(self, segment: np.ndarray) -> np.ndarray:
    """`[T, 120]` log-mel (dB re the max, +40, /40) of the window less its last 160 samples."""
    mel = self.librosa.feature.melspectrogram(y=segment[:-160], sr=SAMPLE_RATE, n_fft=321,
                                              hop_length=160, n_mels=120)
    return ((self.librosa.power_to_db(mel, ref=np.max) + 40) / 40).T

  def score(self, wav: np.ndarray, sample_rate: int) -> dict[str, float]:
    wav = _mono(wav, self.name)
    wav = resample(wav, sample_rate, SAMPLE_RATE)
    clipped = int(np.count_nonzero(np.abs(wav) > 1.0))
    audio = np.clip(wav, -1.0, 1.0)  # the models were trained on [-1, 1] floats
    length = int(DNSMOS_WINDOW_S * SAMPLE_RATE)
    while audio.size < length:  # repeat, as dnsmos_local.py does
      audio = np.concatenate([audio, audio])
    num_windows = int(np.floor(audio.size / SAMPLE_RATE) - DNSMOS_WINDOW_S) + 1
    rows = []
    for k in range(num_windows):
      segment = audio[k * SAMPLE_RATE: k * SAMPLE_RATE + length]
      raw = self.primary.run(None, {"input_1": segment[None, :]})[0][0]
      p808 = self.p808.run(None, {"input_1": self._p808_features(segment)[None].astype(np.float32)})[0]
      rows.append([self.polys["sig"](raw[0]), self.polys["bak"](raw[1]), self.polys["ovrl"](raw[2]),
                   float(p808[0][0])])
    means = np.mean(np.asarray(rows, np.float64), axis=0)
    return {**{k: float(v) for k, v in zip(DNSMOS_KEYS, means, strict=True)},
            "windows": num_windows, "clipped": clipped}


def load_dnsmos(personalized: bool = False, num_threads: int = 0) -> DNSMOS:
  """DNSMOS from the installed `speechmos` package (nothing downloads); `personalized` picks the
  pDNSMOS primary model, which penalises interfering talkers as background."""
  root = _package_dir("speechmos", "DNSMOS")
  primary = root / ("pdnsmos_models" if personalized else "dnsmos_models") / "sig_bak_ovr.onnx"
  return DNSMOS(primary, root / "dnsmos_models" / "model_v8.onnx", personalized=personalized,
                num_threads=num_threads)


def dnsmos(wavs: Sequence[np.ndarray], sample_rate: int, model: QualityModel | None = None, *,
           names: Sequence[str] | None = None) -> dict[str, Any]:
  """DNSMOS of every clip `[N_i]` at `sample_rate` (any rate; resampled to 16 kHz).

  Returns `{"sig", "bak", "ovrl", "p808"}` (means over clips), "rows" (per clip: name and the
  model's scores), "num_clips", "model" and timing `{audio_s, dnsmos_s, rtf}`.
  """
  wavs = list(wavs)
  if not wavs:
    raise ValueError("dnsmos: no clips given")
  names = [str(i) for i in range(len(wavs))] if names is None else [str(n) for n in names]
  if len(names) != len(wavs):
    raise ValueError(f"dnsmos: {len(names)} names for {len(wavs)} clips")
  model = model or load_dnsmos()
  start, rows, audio_s = time.perf_counter(), [], 0.0
  for name, wav in zip(names, wavs, strict=True):
    rows.append({"name": name, **model.score(wav, sample_rate)})
    audio_s += np.shape(wav)[-1] / sample_rate
  elapsed = time.perf_counter() - start
  keys = [k for k in DNSMOS_KEYS if all(k in r for r in rows)]
  return {**{k: float(np.mean([r[k] for r in rows])) for k in keys}, "rows": rows,
          "num_clips": len(rows), "model": model.name, "audio_s": audio_s, "dnsmos_s": elapsed,
          "rtf": elapsed / max(audio_s, 1e-9)}


# --- GE2E speaker encoder -----------------------------------------------------------------------

MEL_BANDS, HOP, N_FFT = 40, 160, 400  # 25 ms windows every 10 ms at 16 kHz
PARTIAL_FRAMES, PARTIAL_STEP, MIN_COVERAGE = 160, 77, 0.75  # 1.6 s partials at 1.3 per second
VAD_FRAME, VAD_SMOOTH, VAD_DILATE = 480, 8, 7  # 30 ms frames; moving average; max silence + 1
TARGET_DBFS = -30.0


@runtime_checkable
class SpeakerEncoder(Protocol):
  """Anything that maps a mono waveform to a unit-norm speaker embedding."""

  name: str

  def embed(self, wavs: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """Float waveforms `[N_i]` at `sample_rate` -> `[len(wavs), D]` float32, rows of unit L2 norm."""
    ...


def trim_silences(wav: np.ndarray) -> np.ndarray:
  """16 kHz `[N]` -> the samples the VAD keeps (`[M]`, M <= N rounded down to 30 ms frames).

  Frames are voiced by WebRTC VAD (mode 3, most aggressive) on int16 PCM; the flags are smoothed
  by an 8-frame moving mean (3 before, 4 after, rounded half to even) and dilated by 3 frames each
  side, so silences of up to ~6 frames inside speech are kept.
  """
  webrtcvad = _require("webrtcvad", "speaker similarity (VAD)")
  from scipy.ndimage import binary_dilation  # noqa: PLC0415

  wav = wav[: wav.size - wav.size % VAD_FRAME]
  if wav.size == 0:  # not one whole 30 ms frame
    return wav
  pcm = np.clip(np.round(wav * 32767.0), -32768, 32767).astype("<i2").tobytes()
  vad = webrtcvad.Vad(3)
  step = 2 * VAD_FRAME
  flags = np.array([vad.is_speech(pcm[i: i + step], SAMPLE_RATE) for i in range(0, len(pcm), step)],
                   np.int64)
  padded = np.concatenate([np.zeros((VAD_SMOOTH - 1) // 2, np.int64), flags,
                           np.zeros(VAD_SMOOTH // 2, np.int64)])
  voiced = np.round(np.convolve(padded, np.ones(VAD_SMOOTH, np.int64), "valid") / VAD_SMOOTH) > 0
  voiced = binary_dilation(voiced, np.ones(VAD_DILATE))
  return wav[np.repeat(voiced, VAD_FRAME)]


def preprocess(wav: np.ndarray, sample_rate: int) -> tuple[np.ndarray, bool]:
  """`resemblyzer.preprocess_wav` on `[N]` at `sample_rate`: 16 kHz, RMS raised to -30 dBFS, long
  silences trimmed. Returns (wav `[M]` float32, whether the VAD found speech; if not, the
  untrimmed clip). Raises ValueError for a silent clip (its volume cannot be normalised)."""
  wav = resample(_mono(wav, "speaker encoder"), sample_rate, SAMPLE_RATE).astype(np.float64)
  rms = np.sqrt(np.mean(np.square(wav)))
  if rms == 0.0:
    raise ValueError("speaker encoder: silent clip (all zeros)")
  gain_db = TARGET_DBFS - 20.0 * np.log10(rms)
  if gain_db > 0:
    wav = wav * 10.0 ** (gain_db / 20.0)
  trimmed = trim_silences(wav)
  voiced = trimmed.size > 0
  return (trimmed if voiced else wav).astype(np.float32), voiced


def partial_starts(num_samples: int) -> list[int]:
  """First mel frame of each 160-frame partial covering `num_samples` (resemblyzer's slicing with
  rate 1.3, min_coverage 0.75): one every 77 frames; the last is dropped when less than 75 % of it
  holds audio, unless it is the only one."""
  num_frames = -(-(num_samples + 1) // HOP)
  starts = list(range(0, max(1, num_frames - PARTIAL_FRAMES + PARTIAL_STEP + 1), PARTIAL_STEP))
  coverage = (num_samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
  if coverage < MIN_COVERAGE and len(starts) > 1:
    starts.pop()
  return starts


class GE2EEncoder:
  """resemblyzer's VoiceEncoder forward pass in numpy float32 (torch LSTM gate order i, f, g, o)."""

  def __init__(self, state: Mapping[str, np.ndarray], source: str = "GE2E state dict"):
    shapes = {"linear.weight": (256, 256), "linear.bias": (256,)}
    for layer in range(3):
      shapes.update({f"lstm.weight_ih_l{layer}": (1024, MEL_BANDS if layer == 0 else 256),
                     f"lstm.weight_hh_l{layer}": (1024, 256), f"lstm.bias_ih_l{layer}": (1024,),
                     f"lstm.bias_hh_l{layer}": (1024,)})
    for key, shape in shapes.items():
      if key not in state:
        raise WeightsError(f"{source}: missing {key} (has {sorted(state)[:8]} ...)")
      if tuple(np.shape(state[key])) != shape:
        raise WeightsError(f"{source}: {key} has shape {tuple(np.shape(state[key]))}, expected {shape}")
    w = {k: np.asarray(state[k], np.float32) for k in shapes}
    self.layers = [(w[f"lstm.weight_ih_l{i}"].T, w[f"lstm.weight_hh_l{i}"].T,
                    w[f"lstm.bias_ih_l{i}"] + w[f"lstm.bias_hh_l{i}"]) for i in range(3)]
    self.linear = (w["linear.weight"].T, w["linear.bias"])
    self.name = "GE2E (resemblyzer)"

  def embed_partials(self, mels: np.ndarray) -> np.ndarray:
    """`[P, T, 40]` mel power frames -> `[P, 256]` unit embeddings of the last hidden state."""
    with _one_blas_thread():
      return self._forward(np.asarray(mels, np.float32))

  def _forward(self, x: np.ndarray) -> np.ndarray:
    for w_ih, w_hh, bias in self.layers:
      gates_in = x @ w_ih + bias  # [P, T, 1024], input part of every step at once
      h = np.zeros((x.shape[0], 256), np.float32)
      c = np.zeros_like(h)
      outputs = []
      for t in range(x.shape[1]):
        i, f, g, o = np.split(gates_in[:, t] + h @ w_hh, 4, axis=-1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        outputs.append(h)
      x = np.stack(outputs, axis=1)
    e = np.maximum(h @ self.linear[0] + self.linear[1], 0.0)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)

  def embed_preprocessed(self, wavs: Sequence[np.ndarray]) -> np.ndarray:
    """Preprocessed 16 kHz clips `[M_i]` -> `[len(wavs), 256]`: per clip, the mean of its partial
    embeddings, unit norm. All partials of all clips run through the LSTM as one batch."""
    librosa = _require("librosa", "speaker similarity")
    partials, owner = [], []
    for k, wav in enumerate(wavs):
      starts = partial_starts(wav.size)
      wav = np.pad(wav, (0, max(0, (starts[-1] + PARTIAL_FRAMES) * HOP - wav.size)))
      mel = librosa.feature.melspectrogram(y=wav, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP,
                                           n_mels=MEL_BANDS).astype(np.float32).T
      partials += [mel[s: s + PARTIAL_FRAMES] for s in starts]
      owner += [k] * len(starts)
    embeds = self.embed_partials(np.stack(partials))
    owner = np.asarray(owner)
    means = np.stack([embeds[owner == k].mean(axis=0) for k in range(len(wavs))])
    return means / np.linalg.norm(means, axis=-1, keepdims=True)

  def embed(self, wavs: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    return self.embed_preprocessed([preprocess(w, sample_rate)[0] for w in wavs])


def _one_blas_thread():
  """The recurrence runs 480 small matmuls in sequence; threaded BLAS only adds synchronisation
  (4x slower on a busy 2-core machine), so use one thread when threadpoolctl (a dependency of
  librosa's scikit-learn) is there."""
  if importlib.util.find_spec("threadpoolctl") is None:
    return contextlib.nullcontext()
  from threadpoolctl import threadpool_limits  # noqa: PLC0415

  return threadpool_limits(limits=1, user_api="blas")


def _sigmoid(x: np.ndarray) -> np.ndarray:
  return 0.5 * (np.tanh(0.5 * x) + 1.0)  # no overflow warnings for large |x|


def find_ge2e_weights() -> pathlib.Path:
  """`pretrained.pt` inside the installed `resemblyzer` package."""
  path = _package_dir("resemblyzer", "speaker similarity") / "pretrained.pt"
  if not path.is_file():
    raise FileNotFoundError(f"speaker similarity: {path} is missing from the resemblyzer package")
  return path


def load_ge2e(path: str | os.PathLike | None = None) -> GE2EEncoder:
  """GE2E encoder from a resemblyzer checkpoint (default: the packaged one), read with
  `torch.load(weights_only=True)`; its state dict sits under "model_state"."""
  path = pathlib.Path(path) if path is not None else find_ge2e_weights()
  return GE2EEncoder(read_torch_state_dict(path, subkey="model_state"), source=str(path))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def speaker_similarity(wavs: Sequence[np.ndarray], reference_wavs: Sequence[np.ndarray],
                       sample_rate: int, encoder: SpeakerEncoder | None = None, *,
                       reference_sample_rate: int | None = None,
                       names: Sequence[str] | None = None) -> dict[str, Any]:
  """Cosine similarity of speaker embeddings of `wavs[i]` and `reference_wavs[i]` (mono `[N]`).

  `encoder` defaults to `load_ge2e()`; references may come at their own `reference_sample_rate`.
  Returns "cosine" (mean over pairs), "cosine_shuffled" (each clip against the reference of the
  next pair, NaN for a single pair), "rows" (per pair: name, cosine, cosine_shuffled),
  "num_pairs", "encoder" and timing `{audio_s, embed_s}`.
  """
  wavs, refs = list(wavs), list(reference_wavs)
  if len(wavs) != len(refs):
    raise ValueError(f"speaker_similarity: {len(wavs)} clips but {len(refs)} references")
  if not wavs:
    raise ValueError("speaker_similarity: no clips given")
  names = [str(i) for i in range(len(wavs))] if names is None else [str(n) for n in names]
  if len(names) != len(wavs):
    raise ValueError(f"speaker_similarity: {len(names)} names for {len(wavs)} clips")
  encoder = encoder or load_ge2e()
  ref_rate = sample_rate if reference_sample_rate is None else reference_sample_rate
  start = time.perf_counter()
  emb, ref_emb = encoder.embed(wavs, sample_rate), encoder.embed(refs, ref_rate)
  elapsed = time.perf_counter() - start
  n = len(wavs)
  rows = [{"name": names[i], "cosine": _cosine(emb[i], ref_emb[i]),
           "cosine_shuffled": _cosine(emb[i], ref_emb[(i + 1) % n]) if n > 1 else float("nan")}
          for i in range(n)]
  audio_s = sum(np.shape(w)[-1] / sample_rate for w in wavs) + sum(np.shape(r)[-1] / ref_rate for r in refs)
  return {"cosine": float(np.mean([r["cosine"] for r in rows])),
          "cosine_shuffled": float(np.mean([r["cosine_shuffled"] for r in rows])), "rows": rows,
          "num_pairs": n, "encoder": encoder.name, "audio_s": audio_s, "embed_s": elapsed}
