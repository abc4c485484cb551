"""The demo evaluation's learned-model measures, each arm against its controls (issue "Measure
everything"; DESIGN.md, "Evaluation with negative controls").

`flowav.eval.demo` generates the arms of every held-out clip — `model` (its own conditions),
`control` (another clip's video), `null` (every condition dropped) and `codec` (its real audio
through the codec and vocoder: the upper bound) — and hands their waveforms here:

- class accuracy (impacts): a classifier trained on REAL demo audio (`flowav.eval.classifier`)
  labels each arm's re-encoded audio; the control is scored against the ORIGINAL clip's label.
- distribution (set level): Fréchet and kernel distances (`flowav.eval.distances`) between each
  arm and the real audio of the same clips, on an embedder's features (`flowav.eval.embedders`:
  the demo classifier for impacts, the Whisper encoder for speech). Shuffling pairs cannot move a
  set-level distance, so its controls are the null-condition samples and real audio of ANOTHER
  subset; the codec arm is the floor.
- speech: WER/CER (Whisper tiny.en) against each clip's transcript and, as the paired control,
  against the next clip's; DNSMOS; GE2E speaker similarity to the clip's real audio (and to the
  next clip's, the control).
Models with weights come from the `eval` extra; a missing one leaves {"skipped": reason}.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from flowav.eval import distances, embedders

Wavs = Sequence[np.ndarray]


class NotMeasurable(ValueError):
  """Too little data for a measure (e.g. one clip for a set-level distance)."""


def optional(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
  """`fn()`, or {"skipped": why} when an evaluation-only package or weight file is missing, or
  the data cannot support the measure."""
  try:
    return fn()
  except (ImportError, FileNotFoundError, NotMeasurable) as e:
    return {"skipped": f"{type(e).__name__}: {e}"}


def class_accuracy(classifier: Any, arms: Mapping[str, Wavs], labels: Sequence[str],
                   codec: Any) -> dict[str, Any]:
  """Accuracy of `classifier` on each arm's audio (re-encoded with `codec`) against `labels`.

  Returns {arm: accuracy, "chance": 1 / classes, "majority": share of the most common label,
  "labels": the classes, "num_clips"}.
  """
  from flowav.eval import classifier as classifier_lib  # noqa: PLC0415 -- jax model, on use

  out: dict[str, Any] = {}
  for arm, wavs in arms.items():
    latents = [codec.encode(np.asarray(w, np.float32)) for w in wavs]
    out[arm] = classifier_lib.class_accuracy(classifier, latents, labels)
  counts = np.unique(np.asarray(labels), return_counts=True)[1]
  out.update(chance=1.0 / len(classifier.labels), majority=float(counts.max() / counts.sum()),
             labels=list(classifier.labels), num_clips=len(labels))
  return out


def distribution(embedder: embedders.AudioEmbedder, arms: Mapping[str, Wavs], real: Wavs,
                 sample_rate: int, *, seed: int = 0, kd_subset_size: int = 1000
                 ) -> dict[str, Any]:
  """FD and KD between each set in `arms` and `real` on `embedder`'s features.

  FD uses Ledoit-Wolf shrinkage of both covariances: the sets hold tens of clips, fewer than the
  embedding's dimensions. Returns {arm: {"fd", "kd", "kd_std", "num_clips"}, "embedder",
  "num_real", "seconds"}.
  """
  small = {name: len(w) for name, w in {**arms, "real": real}.items() if len(w) < 2}
  if small:
    raise NotMeasurable(f"a set-level distance needs >= 2 clips per set; got {small}")
  t0 = time.perf_counter()
  ref = embedders.embed_audio(embedder, real, sample_rate)
  out: dict[str, Any] = {"embedder": embedder.name, "num_real": len(real)}
  for arm, wavs in arms.items():
    emb = embedders.embed_audio(embedder, wavs, sample_rate)
    kd = distances.kernel_distance(emb, ref, subset_size=kd_subset_size, seed=seed)
    out[arm] = {"fd": distances.frechet_distance(emb, ref, shrinkage="ledoit_wolf"),
                "kd": kd.mean, "kd_std": kd.std, "num_clips": len(wavs)}
  out["seconds"] = time.perf_counter() - t0
  return out


def speech(arms: Mapping[str, Wavs], transcripts: Sequence[str], real: Wavs, sample_rate: int,
           *, quality_clips: int = 8) -> dict[str, Any]:
  """WER/CER, DNSMOS (first `quality_clips` clips: ~1 s of CPU per short clip) and speaker
  similarity to the real audio, per arm. Each part is skipped alone when its model is missing."""
  from flowav.eval import asr, speech_quality  # noqa: PLC0415 -- optional eval dependencies

  out: dict[str, Any] = {}

  def intelligibility() -> dict[str, Any]:
    recognizer = asr.load_whisper()
    res = {}
    for arm, wavs in arms.items():
      r = asr.speech_intelligibility(wavs, transcripts, sample_rate, recognizer)
      res[arm] = {k: r[k] for k in ("wer", "cer", "wer_shuffled", "cer_shuffled") if k in r}
    res["recognizer"] = recognizer.name
    return res

  def quality() -> dict[str, Any]:
    model = speech_quality.load_dnsmos(num_threads=1)
    res = {arm: {k: v for k, v in speech_quality.dnsmos(list(w)[:quality_clips], sample_rate,
                                                        model).items()
                 if k in ("sig", "bak", "ovrl", "p808", "num_clips")}
           for arm, w in arms.items()}
    return res

  def speakers() -> dict[str, Any]:
    encoder = speech_quality.load_ge2e()
    res = {}
    for arm, wavs in arms.items():
      r = speech_quality.speaker_similarity(wavs, real, sample_rate, encoder)
      res[arm] = {"cosine": r["cosine"], "cosine_other_clip": r["cosine_shuffled"]}
    return res

  out["intelligibility"] = optional(intelligibility)
  out["dnsmos"] = optional(quality)
  out["speaker_similarity"] = optional(speakers)
  return out
