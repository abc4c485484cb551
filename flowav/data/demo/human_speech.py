"""The *human_speech* subset: real recorded speech (the Asterisk English prompts) with phone timings
from forced alignment, and a drawn face whose mouth follows them.

Source: Debian `asterisk-core-sounds-en-wav`, 1 female US speaker (Allison Smith), 8 kHz 16-bit
wav, CC-BY-SA-3.0, in /usr/share/asterisk/sounds/en (or .../en_US_f_Allison); transcripts from
`core-sounds-en.txt.gz` ("name: text" lines) of Debian `asterisk-core-sounds-en`.

Corpus rule (fixed, so the split lists never depend on the aligner's run-time behaviour): a prompt
is used when (1) its transcript is plain words, `_PLAIN` (letters, spaces and , . ' ? ! -; no
digits, "[tone]" / "<beep>" annotations, "..." openings, # or *), (2) every word is in the aligner's
lexicon (pocketsphinx's cmudict-en-us plus `forced_alignment.EXTRA_LEXICON`; this also drops
transcripts with typos such as "represenatives"), (3) its wav exists and lasts at most
`max_seconds`. Splits hash the normalised transcript (sha256, ~90/3/7 % train/validation/test), so
prompts with the same words (24 sentences are recorded twice) never straddle splits; clip `index` i
of a split is the i-th prompt of the split's list sorted by name.

Audio: leading and trailing silence longer than 0.1 s is cut (frames of 10 ms more than 50 dB
below the loudest frame count as silence), the 8 kHz signal is resampled to `sample_rate` (so it
holds nothing above 4 kHz) and scaled down to peak 0.9 when louder. The clip has the prompt's
natural length.

Alignment (flowav.data.demo.forced_alignment): pocketsphinx 5.1 (PyPI; en-us acoustic model and
dictionary inside the wheel) on the trimmed audio upsampled to 16 kHz between 0.2 s pads of digital
silence: `set_align_text` + decode gives words, `set_alignment()` + a second decode gives phones at
10 ms (the recipe of pocketsphinx's Decoder.set_alignment docstring). Phones map to speech.PHONES
(CMU upper case -> lower case, SIL -> pau; consecutive pauses merge). The feature state is reset
before every prompt (pocketsphinx otherwise carries it across utterances, and results would depend
on the order clips are made). Wide search beams make every corpus prompt align (pocketsphinx 5.1.1);
a prompt that still fails raises RuntimeError naming it rather than falling back to made-up timings.
Known limits: the model expects 16 kHz speech and gets 4 kHz-band speech, so fricatives are weak; a
few single-letter prompts ("letters/e", "letters/g") start their vowel ~0.25 s late.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import os
import re
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile

from flowav.audio.io import read_audio, resample
from flowav.data.demo import AUDIO_SAMPLE_RATE, speech
from flowav.data.demo.face import FaceStyle, draw_face
from flowav.data.demo.forced_alignment import (
  ALIGN_RATE,
  ALIGNMENT,
  Alignment,
  align,
  lexicon,
)

if TYPE_CHECKING:
  from flowav.audio.codec import MelCodec

SOUND_DIRS = ("/usr/share/asterisk/sounds/en", "/usr/share/asterisk/sounds/en_US_f_Allison")
DOC_DIR = "/usr/share/doc/asterisk-core-sounds-en"
TRANSCRIPT_NAME = "core-sounds-en.txt"
SAMPLE_RATE = 8000  # of the source wavs
INSTALL = ("apt-get install -y --no-install-recommends asterisk-core-sounds-en-wav asterisk-core-sounds-en"
           "  (or, for the transcripts only: apt-get download asterisk-core-sounds-en && "
           "dpkg-deb -x asterisk-core-sounds-en_*.deb DIR && cp DIR/usr/share/doc/asterisk-core-sounds-en/"
           "core-sounds-en.txt.gz ~/.cache/flowav/asterisk/)")
LICENCE = ("Asterisk core sounds (English), recorded by Allison Smith for Digium: CC-BY-SA-3.0 "
           "(Debian asterisk-core-sounds-en-wav and asterisk-core-sounds-en). Clips derived from "
           "them (resampled, trimmed) are share-alike: redistribute under CC-BY-SA-3.0 with "
           "attribution.")
CAPTION = "a woman speaks on a telephone line"
VOICE = "asterisk_allison"
FACE = FaceStyle(skin=(232, 190, 165), hair=(185, 140, 75), background=(128, 118, 150),
                 lips=(196, 88, 104), head_height=0.38, head_aspect=0.79, eye_gap=0.105,
                 mouth_width=0.118)
MAX_SECONDS = 8.0
SPLIT_PERCENT = (("train", 90), ("validation", 3), ("test", 7))
TRIM_DB = 50.0
TRIM_MARGIN_S = 0.1
_PLAIN = re.compile(r"[A-Za-z][A-Za-z ,.'?!-]*")


# --- the Asterisk corpus -------------------------------------------------------------------------

def cache_dir() -> str:
  return os.environ.get("FLOWAV_ASTERISK_DIR") or os.path.expanduser("~/.cache/flowav/asterisk")


def find_sounds() -> str | None:
  """The folder of the English prompt wavs, or None."""
  for d in SOUND_DIRS:
    if os.path.isfile(os.path.join(d, "agent-pass.wav")):
      return d
  return None


def find_transcripts() -> str | None:
  """Path of core-sounds-en.txt(.gz) in DOC_DIR or `cache_dir()`, or None."""
  for d in (DOC_DIR, cache_dir()):
    for name in (TRANSCRIPT_NAME + ".gz", TRANSCRIPT_NAME):
      if os.path.isfile(os.path.join(d, name)):
        return os.path.join(d, name)
  return None


def missing_reason() -> str | None:
  """None when both the audio and the transcripts are installed, else how to install them."""
  if find_sounds() is None or find_transcripts() is None:
    return f"Asterisk prompts or transcripts not installed: {INSTALL}"
  return None


def read_transcripts(path: str) -> dict[str, str]:
  """{prompt name (may hold a subfolder, "digits/5"): transcript} from "name: text" lines."""
  opener = gzip.open if path.endswith(".gz") else open
  out = {}
  with opener(path, "rt", encoding="utf-8", errors="replace") as f:
    for line in f:
      line = line.strip()
      if not line or line.startswith(";") or ": " not in line:
        continue
      name, text = line.split(": ", 1)
      out[name.strip()] = text.strip()
  if not out:
    raise ValueError(f"read_transcripts: no 'name: transcript' lines in {path}")
  return out


def plain_prompts(min_words: int = 1) -> list[tuple[str, str]]:
  """(name, transcript) of every prompt with a wav and a plain-word transcript (`_PLAIN`) of at
  least `min_words` words, sorted by name. Raises FileNotFoundError naming the Debian packages."""
  sounds, path = find_sounds(), find_transcripts()
  if sounds is None or path is None:
    raise FileNotFoundError(missing_reason())
  out = []
  for name, text in sorted(read_transcripts(path).items()):
    if _PLAIN.fullmatch(text) and len(text.split()) >= min_words:
      if os.path.isfile(os.path.join(sounds, name + ".wav")):
        out.append((name, text))
  return out


def normalize_words(text: str, lexicon: frozenset[str] | None = None) -> list[str]:
  """Lower-cased words, hyphens split, outer , ? ! ' " and . stripped; a word keeps its dots
  ("a.m.") when `lexicon` holds it only in that form."""
  words = []
  for token in text.lower().replace("-", " ").split():
    bare, dotted = token.strip(",.?!'\""), token.strip(",?!'\"")
    word = dotted if lexicon is not None and bare not in lexicon and dotted in lexicon else bare
    if word:
      words.append(word)
  return words


def split_of(words: list[str]) -> str:
  """The split of a prompt: a fixed hash of its normalised words (same words, same split)."""
  bucket = int(hashlib.sha256(" ".join(words).encode()).hexdigest(), 16) % 100
  for split, percent in SPLIT_PERCENT:
    if bucket < percent:
      return split
    bucket -= percent
  raise AssertionError("SPLIT_PERCENT must sum to 100")


@dataclasses.dataclass(frozen=True)
class Prompt:
  name: str  # e.g. "agent-pass", "digits/6"
  text: str  # the transcript as written
  words: tuple[str, ...]  # normalised, all in the lexicon
  path: str
  seconds: float  # the source file's length


@functools.lru_cache(maxsize=8)
def corpus(split: str, max_seconds: float = MAX_SECONDS) -> tuple[Prompt, ...]:
  """The prompts of `split` no longer than `max_seconds`, sorted by name (the module docstring's
  rule)."""
  if split not in dict(SPLIT_PERCENT):
    raise ValueError(f"human_speech: unknown split {split!r}; choose one of "
                     f"{[s for s, _ in SPLIT_PERCENT]}")
  lex, sounds = lexicon(), find_sounds()
  out = []
  for name, text in plain_prompts():
    words = normalize_words(text, lex)
    if not words or any(w not in lex for w in words) or split_of(words) != split:
      continue
    path = os.path.join(sounds, name + ".wav")
    info = soundfile.info(path)
    seconds = info.frames / info.samplerate
    if seconds <= max_seconds:
      out.append(Prompt(name, text, tuple(words), path, seconds))
  return tuple(out)


def available(split: str, max_seconds: float = MAX_SECONDS) -> int:
  """How many distinct clips `split` holds (prompts of at most `max_seconds`)."""
  return len(corpus(split, max_seconds))


# --- audio and alignment -------------------------------------------------------------------------

def trim_silence(wav: np.ndarray, sr: int) -> tuple[int, int]:
  """[start, end) sample range of `wav` [N] keeping at most TRIM_MARGIN_S of silence at either end
  (10 ms frames more than TRIM_DB below the loudest frame are silence)."""
  hop = max(1, int(round(sr * 0.01)))
  count = max(1, len(wav) // hop)
  frames = np.asarray(wav[:count * hop], np.float64).reshape(count, -1)
  rms = np.sqrt(np.mean(frames ** 2, axis=1))
  loud = np.flatnonzero(rms > rms.max() * 10 ** (-TRIM_DB / 20))
  if loud.size == 0:
    return 0, len(wav)
  margin = int(round(TRIM_MARGIN_S * sr))
  return max(0, loud[0] * hop - margin), min(len(wav), (loud[-1] + 1) * hop + margin)


@functools.lru_cache(maxsize=1024)
def prepared_prompt(prompt: Prompt) -> tuple[np.ndarray, int, Alignment]:
  """The trimmed source audio [N] float32 at SAMPLE_RATE, the trim's start sample in the file, and
  its alignment. Cached per process: the build makes each prompt once, tests reuse it."""
  wav = read_audio(prompt.path, SAMPLE_RATE)
  start, end = trim_silence(wav, SAMPLE_RATE)
  wav = np.ascontiguousarray(wav[start:end])
  wav.setflags(write=False)
  return wav, start, align(wav, SAMPLE_RATE, prompt.words, source=prompt.path)


# --- clips ---------------------------------------------------------------------------------------

def make_human_speech_clip(seed: np.random.SeedSequence | np.random.Generator, *, index: int,
                           split: str, seconds: float = MAX_SECONDS, fps: float, frame_size: int,
                           sample_rate: int = AUDIO_SAMPLE_RATE, hop_length: int = 256
                           ) -> dict[str, Any]:
  """Makes clip `index` of `split`: the index-th prompt (sorted by name) of at most `seconds`.

  `seconds` caps the prompt length (the clip keeps its natural length, N <= seconds * rate);
  `available(split, seconds)` gives the count for that cap. The audio and its timings depend only
  on (index, split, seconds); the seed draws the face's position, size and blinks.
  Returns:
    {"wav": [N] float32 (natural length), "frames": [T_v, S, S, 3] uint8 with
     T_v = round(N / sample_rate * fps), "caption", "transcript", "voice": VOICE,
     "phone_ids": [L_p] int32, "phone_durations": [L_p] int32 >= 1 summing to N // hop_length,
     "mouth_open": [T_v] float32, "truth": JSON-ready (keys in the dict below)}.
  """
  rng = np.random.default_rng(seed)
  prompts = corpus(split, seconds)
  if not 0 <= index < len(prompts):
    raise IndexError(f"human_speech: index {index} is past the end of split {split!r}, which holds "
                     f"{len(prompts)} prompts of at most {seconds} s (available({split!r}, {seconds}))")
  prompt = prompts[index]
  source, trim_start, alignment = prepared_prompt(prompt)
  wav = resample(source, SAMPLE_RATE, sample_rate)
  peak = float(np.max(np.abs(wav)))
  if peak > 0.9:
    wav = wav * np.float32(0.9 / peak)
  wav = np.clip(wav, -1.0, 1.0).astype(np.float32)
  clip_s = len(wav) / sample_rate
  num_latents = len(wav) // hop_length
  num_frames = int(round(clip_s * fps))
  phones = [p for p, _, _ in alignment.phones]
  ends = np.asarray([e for _, _, e in alignment.phones], np.float64)
  ends[-1] = clip_s  # resampling rounds N up by < 1 sample
  starts = np.concatenate([[0.0], ends[:-1]])
  durations = speech.phone_frame_durations(ends, sample_rate / hop_length, num_latents)
  mouth = speech.mouth_track(phones, starts, ends, num_frames, fps)
  frames = draw_face(mouth, FACE, frame_size, fps, rng=rng)
  truth = {
    "subset": "human_speech", "prompt": prompt.name, "text": prompt.text,
    "source_file": prompt.name + ".wav",  # in the asterisk English sounds folder
    "source_package": "asterisk-core-sounds-en-wav", "speaker": "Allison Smith (female, US English)",
    "source_sample_rate": SAMPLE_RATE, "sample_rate": sample_rate, "align_sample_rate": ALIGN_RATE,
    "trim_start_s": trim_start / SAMPLE_RATE, "alignment": ALIGNMENT,
    "alignment_score_per_frame": round(alignment.score_per_frame, 4),
    "words": [{"word": w, "start_s": round(s, 6), "end_s": round(e, 6)} for w, s, e in alignment.words],
    "phones": [{"phone": p, "start_s": round(float(s), 6), "end_s": round(float(e), 6), "frames": int(d)}
               for p, s, e, d in zip(phones, starts, ends, durations)],
    "mouth_open": np.round(mouth.astype(np.float64), 4).tolist(),
  }
  return {
    "wav": wav, "frames": frames, "caption": CAPTION, "transcript": prompt.text, "voice": VOICE,
    "phone_ids": np.asarray([speech.PHONE_IDS[p] for p in phones], np.int32),
    "phone_durations": durations, "mouth_open": mouth, "truth": truth,
  }


# The speaker reference of every clip (as speech.REFERENCE_SENTENCE is for the synthetic voices): a
# fixed prompt of the train split, "Please enter your password followed by the pound key."
REFERENCE_PROMPT = "agent-pass"
_EMBEDDINGS: dict[str, np.ndarray] = {}


def speaker_embedding(codec: MelCodec) -> np.ndarray:
  """The speaker's embedding: the mean log-mel [C] float32 (codec latents averaged over time) of
  REFERENCE_PROMPT, like `speech.speaker_embedding`. Cached per process and codec."""
  key = json.dumps(codec.to_dict(), sort_keys=True)
  if key not in _EMBEDDINGS:
    sounds = find_sounds()
    if sounds is None:
      raise FileNotFoundError(f"human_speech: the asterisk prompts are not installed: {INSTALL}")
    wav = read_audio(os.path.join(sounds, REFERENCE_PROMPT + ".wav"), codec.sample_rate)
    _EMBEDDINGS[key] = codec.encode(wav).mean(axis=0).astype(np.float32)
  return _EMBEDDINGS[key]
