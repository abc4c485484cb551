"""The melodies and lyrics of flowav-demo's *song* subset: phrases of Bach chorales from the music21
corpus.

The first `NUM_CHORALES` chorales in Riemenschneider order (a fixed list inside music21): the
soprano part, ties merged, split into phrases at fermatas and rests; a phrase longer than
`MAX_PHRASE_BEATS` is split again at the first word end past half of that. A section that carries
several verses gives one phrase per verse (the same melody, other words); leading notes without a
syllable are dropped, and a phrase needs `MIN_SYLLABLES` syllables. A chorale belongs to one split,
by a fixed hash of its name (80/10/10 %), so the splits share no melody.

Parsing costs about 0.09 s per chorale (music21 keeps a pickle cache of parsed files, after which
it is about 0.03 s), so each split is parsed once per process, when first asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
import unicodedata

NUM_CHORALES = 120
MAX_PHRASE_BEATS = 12.0
MIN_SYLLABLES = 2
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class Note:
  midi: int
  beats: float  # length in quarter notes
  syllable: str | None  # lyric text as written (None: a melisma note continuing the syllable)
  syllabic: str | None  # music21's 'single', 'begin', 'middle' or 'end'


@dataclasses.dataclass(frozen=True)
class Phrase:
  chorale: str  # music21 corpus name, e.g. 'bach/bwv269'
  number: int  # place among the chorale's phrases
  verse: int
  notes: tuple[Note, ...]

  @property
  def beats(self) -> float:
    return sum(n.beats for n in self.notes)


def split_of(chorale: str) -> str:
  """The split of a chorale: a fixed hash of its name, 80 % train, 10 % validation, 10 % test."""
  bucket = int.from_bytes(hashlib.sha256(chorale.encode()).digest()[:8], "big") % 10
  return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def _music21():
  try:
    import music21  # noqa: PLC0415  (heavy, and only the song subset needs it)
  except ImportError as e:
    raise RuntimeError("the song subset of flowav-demo needs music21 (PyPI: pip install "
                       "'music21>=10.5,<11'), whose corpus holds the Bach chorales") from e
  return music21


@functools.cache
def chorale_names() -> tuple[str, ...]:
  """The corpus chorales used: the first NUM_CHORALES distinct names in Riemenschneider order (a
  fixed list inside music21, which names a few files twice)."""
  chorales = _music21().corpus.chorales
  names = chorales.Iterator(numberingSystem="riemenschneider", returnType="filename")
  return tuple(dict.fromkeys(names))[:NUM_CHORALES]


@functools.cache
def phrases(split: str) -> tuple[Phrase, ...]:
  """The split's phrases, dealt round-robin over its chorales (phrase 0 of every chorale, then
  phrase 1, ...). Parses only the split's chorales, once per process."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected train, validation or test")
  per_chorale = [chorale_phrases(n) for n in chorale_names() if split_of(n) == split]
  dealt = []
  for k in range(max((len(p) for p in per_chorale), default=0)):
    dealt.extend(p[k] for p in per_chorale if k < len(p))
  return tuple(dealt)


def available(split: str) -> int:
  """How many distinct phrases the split holds (clip index i sings phrase i % available)."""
  return len(phrases(split))


@functools.cache
def chorale_phrases(name: str) -> tuple[Phrase, ...]:
  """The sung phrases of one corpus chorale (empty when it has no soprano part with lyrics)."""
  m21 = _music21()
  score = m21.corpus.parse(name)
  parts = [p for p in score.parts if (p.partName or "").strip().lower().startswith("soprano")]
  if not parts:
    return ()
  runs, run = [], []
  for element in parts[0].stripTies().flatten().notesAndRests:
    if element.quarterLength <= 0:  # grace notes
      continue
    if element.isRest:
      runs.append(run)
      run = []
      continue
    pitches = element.pitches
    lyrics = {}
    for lyric in element.lyrics:
      text = re.sub(r"^\d+\.\s*", "", (lyric.text or "").strip())  # '2. Ein' -> 'Ein'
      if ascii_letters(text):
        lyrics.setdefault(lyric.number or 1, (text, lyric.syllabic))
    fermata = any(isinstance(e, m21.expressions.Fermata) for e in element.expressions)
    run.append((max(p.midi for p in pitches), float(element.quarterLength), lyrics))
    if fermata:
      runs.append(run)
      run = []
  runs.append(run)
  found = []
  for run in runs:
    for verse in sorted({v for _, _, lyrics in run for v in lyrics}):
      notes = _verse_notes(run, verse)
      for piece in _split_long(notes):
        if sum(n.syllable is not None for n in piece) >= MIN_SYLLABLES:
          found.append(Phrase(name, len(found), verse, tuple(piece)))
  return tuple(found)


def _verse_notes(run: list[tuple[int, float, dict]], verse: int) -> list[Note]:
  """One verse of a run: notes with any syllable must carry this verse's; leading melisma notes
  are dropped. Returns [] when the verse does not cover the run."""
  notes = []
  for midi, beats, lyrics in run:
    if lyrics and verse not in lyrics:
      return []
    text, syllabic = lyrics.get(verse, (None, None))
    if notes or text is not None:
      notes.append(Note(int(midi), beats, text, syllabic))
  return notes


def _split_long(notes: list[Note]) -> list[list[Note]]:
  """Splits notes longer than MAX_PHRASE_BEATS in total at the first word end past half of it."""
  pieces, current, beats = [], [], 0.0
  for k, note in enumerate(notes):
    current.append(note)
    beats += note.beats
    nxt = notes[k + 1] if k + 1 < len(notes) else None
    word_end = nxt is not None and nxt.syllable is not None and nxt.syllabic in (None, "single", "begin")
    rest = sum(n.beats for n in notes[k + 1:])
    if word_end and beats >= MAX_PHRASE_BEATS / 2 and beats + rest > MAX_PHRASE_BEATS:
      pieces.append(current)
      current, beats = [], 0.0
  if current:
    pieces.append(current)
  return pieces


def ascii_letters(text: str) -> str:
  """Lower-case ASCII letters of a German syllable: umlauts -> 'ae'/'oe'/'ue', eszett -> 'ss'."""
  for src, dst in (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("Ä", "ae"), ("Ö", "oe"), ("Ü", "ue"),
                   ("ß", "ss")):
    text = text.replace(src, dst)
  text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
  return re.sub(r"[^a-z]", "", text.lower())


