"""The *song* subset (singing voice synthesis): chorale phrases (`chorales.py`) sung syllable by
syllable by flite voices at the notes' pitches, with a drawn face whose mouth follows the sung
phones and, at the frame's right edge, a karaoke-style pitch guide: a bar at the height of the note
being sung (`face.draw_pitch_guide`). The guide is how the video carries the melody, as a singing
game's or a karaoke video's note display does, so that video + lyrics -> song has a tune to follow.

Clip `index` of a split sings phrase `index % available(split)`. Per clip, from the clip's seed:
the voice, a tempo (quarter notes per minute), a leading offset, and a transposition that puts the
phrase into the voice's range (drawn among those that fit). A phrase too long for the clip is sung
faster when up to `_MAX_SPEEDUP` times the tempo completes it; otherwise it loses notes at the end
(back to a word end where that keeps `MIN_SYLLABLES` syllables).

Singing (`sung_notes.py`): flite runs as a separate program per note with a flat F0 target at the
note's pitch (`int_f0_target_mean`, `int_f0_target_stddev=0`). As singers do, a note lengthens the
vowel, not the consonants: the syllable is sung at 0.7 times flite's length (or shorter, to fit a
short note), and its nucleus (the longest vowel) is cut at a third and at two thirds of its length;
the middle is replaced by the middle of the same vowel from a second synthesis stretched to cover
the rest of the note (10 ms crossfades at the joints). A melisma note (a note without its own
syllable) continues the vowel at its own pitch: the syllable's onset is sung on its first note and
its coda (the consonants after the vowel) on its last. Consecutive notes overlap by a 10 ms
raised-cosine crossfade. The lyrics are German, read by English voices: umlauts and eszett become
ASCII letter pairs, other marks are dropped, and a syllable that flite would spell letter by letter
(or reads without a vowel) loses letters at its ends until flite reads it as a word with a vowel.

Voices and ranges (measured with pYIN on notes of 8 syllables sung as here, every semitone): the
`rms` voice ignores the F0 target (its pitch stays near 99 Hz), so the subset uses slt, awb and
kal16. Their voiced frames lie within 50 cents of the note on 91-100 % of frames (awb MIDI 40-67,
kal16 40-69, slt 50-67). slt above G4 has pitches (G#4, C5, D#5) where flite's pulse periods,
whole samples at 16 kHz, alternate (e.g. 30 and 31 samples for C5) and pYIN hears the octave below
on some syllables, so its range stops at G4: slt 55-67 (G3-G4), awb and kal16 43-64 (G2-E4).

Phone timing: each note's phones (the flite phones of the parts used, the nucleus spanning the
lengthened middle) in clip time, clipped to the note; gaps are 'pau'. `phone_durations` puts them
on the latent grid as the speech subset does (`speech.phone_frame_durations`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from flowav.audio.io import resample
from flowav.data.demo import AUDIO_SAMPLE_RATE, speech
from flowav.data.demo.chorales import MIN_SYLLABLES, Note, Phrase, available, phrases
from flowav.data.demo.face import FaceStyle, draw_face, draw_pitch_guide
from flowav.data.demo.sung_notes import CROSSFADE_S, raised_cosine_fade, read_syllable, sing_note

__all__ = ["LICENCE", "VOICES", "available", "make_song_clip", "plan_song", "sing"]

LICENCE = ("Melodies and lyrics: J. S. Bach's four-part chorales (public domain) as encoded in the "
           "music21 corpus (music21 is BSD-3-Clause; the corpus ships in its PyPI wheel). Singing: "
           "CMU Flite 2.2 (Debian package `flite`, BSD-like licence) run as a separate program; its "
           "audio output is used as data. Faces: drawn by flowav's own code.")

TEMPO_BPM = (72.0, 144.0)  # quarter notes per minute, drawn uniformly
_MAX_SPEEDUP = 1.25
_OFFSET_S = (0.05, 0.3)  # the first note's start, drawn uniformly
_TAIL_S = 0.2  # silence kept after the last note


@dataclasses.dataclass(frozen=True)
class SingVoice:
  name: str  # flite voice
  caption: str
  face: FaceStyle
  low_midi: int  # the range the melody is transposed into
  high_midi: int


_FACES = {v.name: v.face for v in speech.VOICES}  # a singer looks like the same voice speaking
VOICES = (
  SingVoice("slt", "a woman sings a chorale melody", _FACES["slt"], 55, 67),
  SingVoice("awb", "a man with a Scottish accent sings a chorale melody", _FACES["awb"], 43, 64),
  SingVoice("kal16", "a man sings a chorale melody in a robotic voice", _FACES["kal16"], 43, 64),
)


@dataclasses.dataclass(frozen=True)
class SongPlan:
  """What one clip sings. notes: (midi after transposition, start_s, end_s, syllable or None for a
  melisma note) of the phrase's notes kept; syllabic: their music21 syllabic types."""
  phrase: Phrase
  voice: SingVoice
  tempo_bpm: float
  transpose: int
  offset_s: float
  notes: tuple[tuple[int, float, float, str | None], ...]
  syllabic: tuple[str | None, ...]


def plan_song(seed: np.random.SeedSequence | np.random.Generator, *, index: int, split: str,
              seconds: float) -> tuple[SongPlan, np.random.Generator]:
  """Draws what clip (`split`, `index`) sings; returns the plan and the generator (its next draws
  shape the face). The notes lie within [offset_s, seconds - 0.2 s]."""
  if seconds < 1.0:
    raise ValueError(f"song clips need seconds >= 1.0, got {seconds}")
  rng = np.random.default_rng(seed)
  table = phrases(split)
  if not table:
    raise ValueError(f"the {split} split of the song subset has no phrases")
  phrase = table[index % len(table)]
  voice = VOICES[int(rng.integers(len(VOICES)))]
  tempo = float(rng.uniform(*TEMPO_BPM))
  offset = float(rng.uniform(*_OFFSET_S))
  room_beats = (seconds - offset - _TAIL_S) * tempo / 60.0
  notes = list(phrase.notes)
  if phrase.beats > room_beats:
    if phrase.beats <= room_beats * _MAX_SPEEDUP:
      tempo *= phrase.beats / room_beats * (1 + 1e-9)
    else:
      notes = _fit_notes(notes, room_beats)
  lo, hi = min(n.midi for n in notes), max(n.midi for n in notes)
  shifts = np.arange(voice.low_midi - lo, voice.high_midi - hi + 1)
  if shifts.size:
    transpose = int(shifts[int(rng.integers(shifts.size))])
  else:  # a melody wider than the voice's range: centre it
    transpose = int(round((voice.low_midi + voice.high_midi - lo - hi) / 2))
  timed, start = [], offset
  for note in notes:
    end = start + note.beats * 60.0 / tempo
    timed.append((note.midi + transpose, round(start, 6), round(end, 6), note.syllable))
    start = end
  plan = SongPlan(phrase, voice, tempo, transpose, offset, tuple(timed),
                  tuple(n.syllabic for n in notes))
  return plan, rng


def _fit_notes(notes: list[Note], room_beats: float) -> list[Note]:
  """The longest head of `notes` within `room_beats`, cut back to a word end when that keeps
  MIN_SYLLABLES syllables; a first note longer than the room is shortened to fit."""
  kept, beats = [], 0.0
  for note in notes:
    if beats + note.beats > room_beats:
      break
    kept.append(note)
    beats += note.beats
  if not kept:
    return [dataclasses.replace(notes[0], beats=room_beats)]
  for cut in range(len(kept), 0, -1):
    if sum(n.syllable is not None for n in kept[:cut]) < MIN_SYLLABLES:
      break
    nxt = kept[cut] if cut < len(kept) else notes[len(kept)]
    if nxt.syllable is not None and nxt.syllabic in (None, "single", "begin"):
      return kept[:cut]
  return kept


# ---- The clip -------------------------------------------------------------------------------


def sing(plan: SongPlan, seconds: float, sample_rate: int = AUDIO_SAMPLE_RATE
         ) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
  """Renders a plan: (wav [round(seconds * sample_rate)] float32 in [-1, 1], phones
  [(name, start_s, end_s)] contiguous from 0 to `seconds`, framed by 'pau')."""
  pieces, timeline, rate, reading = [], [], None, None
  for j, (midi, start, end, syllable) in enumerate(plan.notes):
    if syllable is not None or reading is None:
      reading = read_syllable(syllable or "la", plan.voice.name)
    last = j + 1 == len(plan.notes) or plan.notes[j + 1][3] is not None
    audio, note_rate, phones = sing_note(reading, plan.voice.name, midi, end - start + CROSSFADE_S,
                                         onset=syllable is not None, coda=last)
    if rate not in (None, note_rate):
      raise RuntimeError(f"flite voice {plan.voice.name} changed its sample rate")
    rate = note_rate
    pieces.append((start, end, audio))
    t = start
    for name, d in phones:
      if min(t + d, end) > t:
        timeline.append((name, t, min(t + d, end)))
      t += d
  total = int(round(seconds * rate))
  fade = raised_cosine_fade(max(1, int(round(CROSSFADE_S * rate))))
  out = np.zeros(total + len(fade) + 1, np.float32)
  for start, end, audio in pieces:
    # The note owns [start, end) and runs on by one crossfade into the next note's fade-in.
    length = min(len(audio), int(round((end - start) * rate)) + len(fade))
    piece = audio[:length].copy()
    m = min(len(fade), length)
    piece[:m] *= fade[:m]
    piece[length - m:] *= fade[::-1][len(fade) - m:]
    first = int(round(start * rate))
    out[first:first + length] += piece
  wav = resample(out[:total], rate, sample_rate)
  num = int(round(seconds * sample_rate))
  wav = np.pad(wav, (0, max(0, num - len(wav))))[:num]
  return np.clip(wav, -1.0, 1.0).astype(np.float32), _with_pauses(timeline, seconds)


def _with_pauses(timeline: list[tuple[str, float, float]], seconds: float
                 ) -> list[tuple[str, float, float]]:
  """Fills the gaps of a sorted phone timeline with 'pau' (overlaps go to the later phone) and
  merges neighbouring pauses; ends with a pause up to `seconds`."""
  out: list[tuple[str, float, float]] = []
  t = 0.0
  for name, s, e in [*timeline, ("pau", seconds, seconds)]:
    s = max(s, t)
    if s > t:
      out.append(("pau", t, s))
    if e > s:
      out.append((name, s, e))
    t = max(t, e)
  merged: list[tuple[str, float, float]] = []
  for name, s, e in out:
    if merged and name == "pau" and merged[-1][0] == "pau":
      merged[-1] = ("pau", merged[-1][1], e)
    else:
      merged.append((name, s, e))
  return merged


def _lyrics(plan: SongPlan) -> str:
  """The sung words: syllables joined ('begin'/'middle' run on into the next), end marks off."""
  text = ""
  for (_, _, _, syllable), kind in zip(plan.notes, plan.syllabic):
    if syllable is not None:
      text += syllable + ("" if kind in ("begin", "middle") else " ")
  return text.strip().rstrip(",;:")


def make_song_clip(seed: np.random.SeedSequence | np.random.Generator, *, index: int, split: str,
                   seconds: float, fps: float, frame_size: int,
                   sample_rate: int = AUDIO_SAMPLE_RATE, hop_length: int = 256) -> dict[str, Any]:
  """Makes one song clip: phrase `index % available(split)` of the split's chorales.

  Returns:
    {"wav": [N] float32 (N = round(seconds * sample_rate)), "frames": [T_v, S, S, 3] uint8,
     "caption", "transcript" (the sung lyrics), "voice" (flite voice name),
     "phone_ids": [L_p] int32, "phone_durations": [L_p] int32 summing to N // hop_length,
     "mouth_open": [T_v] float32, "truth": JSON-ready ground truth: "subset", "chorale" (music21
     corpus name), "phrase" (its place in the chorale), "verse", "voice", "tempo_bpm",
     "transpose" (semitones), "offset_s", "lyrics", "notes" [[midi, start_s, end_s, syllable or
     None for a melisma note], ...], "sung_text" (flite's reading per note), "phones"
     [{"phone", "start_s", "end_s", "frames"}], "mouth_open" [T_v]}.
  """
  plan, rng = plan_song(seed, index=index, split=split, seconds=seconds)
  wav, timeline = sing(plan, seconds, sample_rate)
  num_frames = int(round(len(wav) / sample_rate * fps))
  phones = [p for p, _, _ in timeline]
  starts = np.asarray([s for _, s, _ in timeline])
  ends = np.asarray([e for _, _, e in timeline])
  durations = speech.phone_frame_durations(ends, sample_rate / hop_length, len(wav) // hop_length)
  mouth = speech.mouth_track(phones, starts, ends, num_frames, fps)
  frames = draw_face(mouth, plan.voice.face, frame_size, fps, rng=rng)
  draw_pitch_guide(frames, plan.notes, fps)
  lyrics = _lyrics(plan)
  sung, reading = [], None
  for _, _, _, syllable in plan.notes:
    if syllable is not None or reading is None:
      reading = read_syllable(syllable or "la", plan.voice.name)
    sung.append(reading.text)
  truth = {
    "subset": "song", "chorale": plan.phrase.chorale, "phrase": plan.phrase.number,
    "verse": plan.phrase.verse, "voice": plan.voice.name, "tempo_bpm": round(plan.tempo_bpm, 4),
    "transpose": plan.transpose, "offset_s": round(plan.offset_s, 6), "lyrics": lyrics,
    "notes": [[m, s, e, syl] for m, s, e, syl in plan.notes], "sung_text": sung,
    "phones": [{"phone": p, "start_s": round(float(s), 6), "end_s": round(float(e), 6),
                "frames": int(d)} for p, s, e, d in zip(phones, starts, ends, durations)],
    "mouth_open": np.round(mouth.astype(np.float64), 4).tolist(),
  }
  return {
    "wav": wav, "frames": frames, "caption": plan.voice.caption, "transcript": lyrics,
    "voice": plan.voice.name,
    "phone_ids": np.asarray([speech.PHONE_IDS[p] for p in phones], np.int32),
    "phone_durations": durations, "mouth_open": mouth, "truth": truth,
  }
