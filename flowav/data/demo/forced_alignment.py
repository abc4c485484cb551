"""Forced alignment of the *human_speech* subset: words and phones with times, by pocketsphinx.

pocketsphinx 5.1 (PyPI; en-us acoustic model and dictionary inside the wheel) runs on the audio
upsampled to 16 kHz between 0.2 s pads of digital silence: `set_align_text` + decode gives words,
`set_alignment()` + a second decode gives phones at 10 ms (the recipe of pocketsphinx's
Decoder.set_alignment docstring). See flowav.data.demo.human_speech for how the subset uses it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re

import numpy as np

from flowav.audio.io import resample
from flowav.data.demo import speech

PIP_INSTALL = "pip install pocketsphinx  (5.1; the en-us model and dictionary ship in the wheel)"
ALIGN_RATE = 16000  # the en-us acoustic model's rate
ALIGN_FRAME_S = 0.01
ALIGN_PAD_S = 0.2  # digital silence around the audio while aligning (align)
ALIGNMENT = "pocketsphinx forced alignment (en-us)"
# Words of plain transcripts that cmudict-en-us lacks, with unambiguous pronunciations (built from
# cmudict's own entries for the parts). Acronyms of uncertain reading (IAX, DAHDI, MGCP) are left
# out, so their prompts are not used.
EXTRA_LEXICON = {
  "unmute": "AH N M Y UW T", "unmuted": "AH N M Y UW T IH D", "undeleted": "AH N D IH L IY T AH D",
  "lowercase": "L OW ER K EY S", "uppercase": "AH P ER K EY S", "semicolon": "S EH M IY K OW L AH N",
  "caret": "K EH R AH T", "backtick": "B AE K T IH K", "xray": "EH K S R EY", "pbx": "P IY B IY EH K S",
}


@dataclasses.dataclass(frozen=True)
class Alignment:
  """Word and phone segments in seconds from the start of the aligned audio (phones contiguous,
  the last ends at `seconds`), and the mean acoustic score per 10 ms frame, pads included
  (pocketsphinx's log-likelihood units relative to each frame's best senone: 0 is the best)."""
  words: tuple[tuple[str, float, float], ...]
  phones: tuple[tuple[str, float, float], ...]  # (speech.PHONES name, start_s, end_s)
  score_per_frame: float
  seconds: float


def _pocketsphinx():
  try:
    import pocketsphinx  # noqa: PLC0415 -- only this subset needs it
  except ImportError as e:
    raise ImportError(f"the human_speech subset of flowav-demo needs pocketsphinx: {PIP_INSTALL}") from e
  return pocketsphinx


@functools.lru_cache(maxsize=1)
def lexicon() -> frozenset[str]:
  """Every word the aligner can pronounce: cmudict-en-us (pocketsphinx) and EXTRA_LEXICON."""
  path = os.path.join(_pocketsphinx().get_model_path(), "en-us", "cmudict-en-us.dict")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"pocketsphinx has no dictionary at {path}: reinstall it ({PIP_INSTALL})")
  words = set(EXTRA_LEXICON)
  with open(path, encoding="utf-8") as f:
    for line in f:
      words.add(re.sub(r"\(\d+\)$", "", line.split(" ", 1)[0]))
  return frozenset(words)


@functools.lru_cache(maxsize=1)
def _decoder():
  # Beams wider than the defaults (1e-48, 1e-40, 1e-48): with them every corpus prompt aligns
  # ("digits/6" finds no path otherwise), at ~30 % more time; other alignments move <= 30 ms.
  decoder = _pocketsphinx().Decoder(samprate=ALIGN_RATE, bestpath=False, loglevel="FATAL",
                                    beam=1e-80, wbeam=1e-60, pbeam=1e-80)
  for word, phones in EXTRA_LEXICON.items():
    decoder.add_word(word, phones, True)
  return decoder


def align(wav: np.ndarray, sr: int, words: list[str] | tuple[str, ...], *, source: str = "audio"
          ) -> Alignment:
  """Forced alignment of `words` (lexicon words) to `wav` [N] at `sr` with pocketsphinx en-us.

  The audio is aligned between ALIGN_PAD_S of digital silence on either side: with only the
  trimmed ~0.1 s of silence the model often labels the start of the first vowel as silence
  (single-letter prompts: up to 0.3 s late); with the pads the median word-onset error against
  the energy onset over the corpus fell from 50 to 20 ms, and onsets more than 0.1 s off from 34
  to 15 of 441 prompts. Times are returned relative to `wav`.
  Raises RuntimeError naming `source` when pocketsphinx finds no alignment.
  """
  seconds = len(wav) / sr
  audio = resample(np.asarray(wav, np.float32), sr, ALIGN_RATE)
  pad = np.zeros(int(round(ALIGN_PAD_S * ALIGN_RATE)), np.float32)
  audio = np.concatenate([pad, audio, pad])
  pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
  decoder = _decoder()
  decoder.reinit_feat()  # fresh feature state (CMN, noise estimate): order-independent results
  text = " ".join(words)
  try:
    decoder.set_align_text(text)
  except RuntimeError as e:
    raise RuntimeError(f"human_speech: pocketsphinx cannot align {source}: {text!r} ({e})") from e
  for second_pass in (False, True):
    if second_pass:
      decoder.set_alignment()
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    if not second_pass and decoder.hyp() is None:
      raise RuntimeError(f"human_speech: pocketsphinx found no alignment of {text!r} to {source}")
  # Read every entry into plain values inside one nested pass: pocketsphinx's entries point into
  # the live iterator, and touching a phone after its word's iteration step crashes the process.
  result = decoder.get_alignment()
  segments = [] if result is None else [
    (word.name, word.start, word.duration, [(ph.name, ph.start, ph.duration, ph.score) for ph in word])
    for word in result]
  if not segments:
    raise RuntimeError(f"human_speech: pocketsphinx gave an empty alignment of {text!r} to {source}")

  def clip_time(frame: int) -> float:  # aligner frame -> seconds in `wav`, inside [0, seconds]
    return min(max(frame * ALIGN_FRAME_S - len(pad) / ALIGN_RATE, 0.0), seconds)

  word_spans, phones, score, frames = [], [], 0, 0
  for word, word_start, word_frames, word_phones in segments:
    start, end = clip_time(word_start), clip_time(word_start + word_frames)
    if not word.startswith("<") and end > start:  # <sil>, <s>, </s> are pauses, not words
      word_spans.append((re.sub(r"\(\d+\)$", "", word), start, end))
    for phone, phone_start, phone_frames, phone_score in word_phones:
      score, frames = score + phone_score, frames + phone_frames
      name, end = _phone_name(phone, source), clip_time(phone_start + phone_frames)
      start = phones[-1][2] if phones else 0.0  # contiguous: each phone starts where the last ended
      if end <= start:  # wholly inside a pad
        continue
      if phones and phones[-1][0] == name == "pau":
        phones[-1] = ("pau", phones[-1][1], end)
      else:
        phones.append((name, start, end))
  if not phones:
    raise RuntimeError(f"human_speech: pocketsphinx aligned {text!r} to the padding of {source} only")
  # Phones reach the end of `wav` (the last may have ended inside the trailing pad).
  phones[-1] = (phones[-1][0], phones[-1][1], seconds)
  return Alignment(tuple(word_spans), tuple(phones), score / max(frames, 1), seconds)


def _phone_name(name: str, source: str) -> str:
  if name == "SIL" or name.startswith("+"):  # silence and noise fillers
    return "pau"
  if name.lower() not in speech.PHONE_IDS:
    raise ValueError(f"human_speech: unknown phone {name!r} in the alignment of {source}")
  return name.lower()
