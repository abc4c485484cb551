"""Sung notes for the *song* subset: flite reads a syllable, then sings it at a note's pitch.

flite runs as a separate program per note with a flat F0 target at the note's pitch
(`int_f0_target_mean`, `int_f0_target_stddev=0`). As singers do, a note lengthens the vowel, not
the consonants; see flowav.data.demo.song for the whole recipe and the voices' ranges.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tempfile

import numpy as np
import soundfile

from flowav.data.demo import programs, speech
from flowav.data.demo.chorales import ascii_letters

CROSSFADE_S = 0.01
_STRETCH = (0.25, 12.0)  # flite duration_stretch limits
_CONSONANT_STRETCH = 0.7  # consonants at 70 % of flite's length: each syllable is a phrase to
# flite, which lengthens its final consonants; shorter ones leave more of the note to the vowel
_PROBE_HZ = 150.0  # F0 of the stretch-1 reading probe (phones and durations do not depend on it)
VOWELS = frozenset(("aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy",
                    "uh", "uw"))


def _flite(text: str, voice: str, f0_hz: float, stretch: float
           ) -> tuple[np.ndarray, int, list[str], np.ndarray]:
  """flite with a flat F0 target and a duration stretch.

  Returns (wav [n] float32, its rate, phones [L] framed by 'pau', end times [L] in seconds)."""
  with tempfile.TemporaryDirectory(prefix="flowav-sing-") as tmp:
    out = os.path.join(tmp, "sing.wav")
    cmd = ["flite", "-voice", voice, "--setf", f"int_f0_target_mean={f0_hz:.3f}",
           "--setf", "int_f0_target_stddev=0", "--setf", f"duration_stretch={stretch:.4f}",
           "-t", text, "-o", out, "-psdur"]
    proc = programs.run(cmd, install="apt-get install flite", outputs=[out],
                        needed_by="the song subset of flowav-demo",
                        what=f"flite -voice {voice} on {text!r}")
    wav, rate = soundfile.read(out, dtype="float32")
  phones, ends = speech.parse_phone_durations(proc.stdout, f"flite -voice {voice} -t {text!r}")
  return (wav.mean(axis=1) if wav.ndim > 1 else wav), int(rate), phones, ends


def _candidates(text: str) -> list[str]:
  """`text`, then simpler readings: doubled letters merged, then consonants dropped at the end,
  then at the start (each keeping a vowel letter); 'la' last."""
  def vowel(c: str) -> bool:
    return c in "aeiouy"
  out = [text, re.sub(r"(.)\1", r"\1", text)]
  word = out[-1]
  while len(word) > 1 and not vowel(word[-1]) and any(vowel(c) for c in word[:-1]):
    word = word[:-1]
    out.append(word)
  while len(word) > 1 and not vowel(word[0]) and any(vowel(c) for c in word[1:]):
    word = word[1:]
    out.append(word)
  return list(dict.fromkeys([*out, "la"]))


@dataclasses.dataclass(frozen=True)
class Reading:
  """How flite reads a syllable, at stretch 1: the text sent, its phones (without the framing
  pauses), their durations in seconds, and the nucleus (index of the longest vowel)."""
  text: str
  phones: tuple[str, ...]
  durations: tuple[float, ...]
  nucleus: int


@functools.cache
def read_syllable(syllable: str, voice: str) -> Reading:
  """The first reading in `_candidates` that flite says as a word (not spelled: at most one phone
  more than letters) with a vowel. Pure in its arguments, so memoised per process."""
  for text in _candidates(ascii_letters(syllable) or "la"):
    _, _, phones, ends = _flite(text, voice, _PROBE_HZ, 1.0)
    inner = phones[1:-1]
    if len(inner) <= len(text) + 1 and any(p in VOWELS for p in inner):
      break
  durations = np.diff(ends)[:-1]  # phone k of inner ends at ends[k + 1]
  nucleus = max((k for k, p in enumerate(inner) if p in VOWELS), key=lambda k: durations[k])
  return Reading(text, tuple(inner), tuple(float(d) for d in durations), nucleus)


def _midi_hz(midi: float) -> float:
  return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def raised_cosine_fade(n: int) -> np.ndarray:
  """[n] raised-cosine fade-in."""
  return (0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)


def _synth(reading: Reading, voice: str, midi: int, stretch: float
           ) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
  """The reading at `midi` and `stretch`: (wav, rate, inner phone starts [L], ends [L]) in s."""
  wav, rate, phones, ends = _flite(reading.text, voice, _midi_hz(midi), stretch)
  if tuple(phones[1:-1]) != reading.phones:
    raise RuntimeError(f"flite -voice {voice} read {reading.text!r} as {phones} at stretch "
                       f"{stretch}, but {reading.phones} at stretch 1")
  return wav, rate, ends[:-2], ends[1:-1]


def sing_note(reading: Reading, voice: str, midi: int, seconds: float, *, onset: bool, coda: bool
              ) -> tuple[np.ndarray, int, list[tuple[str, float]]]:
  """One note of a syllable at a flat pitch, about `seconds` long.

  onset / coda: whether the note sings the consonants before / after the nucleus (a syllable's
  first / last note); without them it sings the nucleus vowel only.
  Returns (audio [n] float32, rate, phones [(name, seconds)] in order, summing to about n / rate).
  """
  durations, k = np.asarray(reading.durations), reading.nucleus
  head = durations[:k].sum() + durations[k] / 3 if onset else 0.0
  tail = durations[k + 1:].sum() + durations[k] / 3 if coda else 0.0
  parts: list[tuple[np.ndarray, list[tuple[str, float]]]] = []
  rate, fill, tail_part = 0, seconds, None
  if onset or coda:
    stretch = float(np.clip(seconds / (head + tail + durations[k] / 3), _STRETCH[0], _CONSONANT_STRETCH))
    wav, rate, starts, ends = _synth(reading, voice, midi, stretch)
    names = list(reading.phones)
    if onset and coda and stretch < _CONSONANT_STRETCH:  # a short note: the whole syllable
      piece = wav[int(round(starts[0] * rate)):int(round(ends[-1] * rate))]
      return piece, rate, list(zip(names, (ends - starts).tolist()))
    third = (ends[k] - starts[k]) / 3
    cut_head, cut_tail = starts[k] + third, ends[k] - third
    if onset:
      piece = wav[int(round(starts[0] * rate)):int(round(cut_head * rate))]
      parts.append((piece, [*zip(names[:k], (ends - starts)[:k].tolist()), (names[k], third)]))
      fill -= len(piece) / rate
    if coda:
      piece = wav[int(round(cut_tail * rate)):int(round(ends[-1] * rate))]
      tail_part = (piece, [(names[k], third), *zip(names[k + 1:], (ends - starts)[k + 1:].tolist())])
      fill -= len(piece) / rate
  joints = len(parts) + (tail_part is not None)
  if fill > 0:
    want = fill + joints * CROSSFADE_S  # each joint's overlap shortens the note by one crossfade
    stretch = float(np.clip(1.25 * want / durations[k], *_STRETCH))
    wav, rate, starts, ends = _synth(reading, voice, midi, stretch)
    length = min(want, ends[k] - starts[k])
    begin = (starts[k] + ends[k] - length) / 2
    parts.append((wav[int(round(begin * rate)):int(round((begin + length) * rate))],
                  [(reading.phones[k], length)]))
  if tail_part is not None:
    parts.append(tail_part)
  return _splice(parts, rate)


def _splice(parts: list[tuple[np.ndarray, list[tuple[str, float]]]], rate: int
            ) -> tuple[np.ndarray, int, list[tuple[str, float]]]:
  """Joins parts with crossfades of CROSSFADE_S (each joint overlaps the parts by that much; the
  overlap comes off the later part's first phone)."""
  n = max(1, int(round(CROSSFADE_S * rate)))
  audio, phones = np.zeros(0, np.float32), []
  for piece, names in parts:
    piece = piece.astype(np.float32)
    if audio.size and piece.size:
      m = min(n, audio.size, piece.size)
      fade = raised_cosine_fade(m)
      joint = audio[-m:] * fade[::-1] + piece[:m] * fade
      audio = np.concatenate([audio[:-m], joint, piece[m:]])
      names = [(names[0][0], names[0][1] - m / rate), *names[1:]]
    elif piece.size:
      audio = piece
    for name, d in names:
      if phones and phones[-1][0] == name and name in VOWELS:
        phones[-1] = (name, phones[-1][1] + d)
      else:
        phones.append((name, d))
  return audio, rate, phones
