"""The *music* subset (text-to-music): excerpts of public-domain scores from the music21 corpus,
played by fluidsynth with a General MIDI soundfont. Audio only (no video).

Sources (a fixed list per form, read from the music21 wheel): Bach's four-part chorales (bach/*.mxl
but the prelude bwv846), 40 string-quartet movements by Mozart, Haydn and Beethoven (the files
with one movement each), and the 1059 dance tunes of Ryan's Mammoth Collection (1883; reels, jigs,
hornpipes, ...). Essen folk songs (non-commercial licence) and the copyrighted Humdrum encodings
(Palestrina, some Bach .krn) are left out. A score's split is fixed by a hash of its name (80 /
10 / 10 %; chorale variants "-a", "-lz", ... share their chorale's name, and the rule is the song
subset's, chorales.py, so a chorale is in the same split in both), so the splits are disjoint.

Per clip (clip `index` of a split picks the form round-robin and a score of that form; everything
else comes from the clip's seed): a tempo (beats per minute in the form's range; the beat is a
quarter note, or a dotted quarter in 6/8, 9/8 and 12/8), an instrument (a GM program from the
form's list; every part plays it), a loudness, and a measure where an excerpt of `seconds` at
that tempo starts. The excerpt's notes (ties merged, grace notes
and chord symbols dropped, notes cut at the excerpt's end, unison doublings merged) go into a
type-0 MIDI file written here, which `fluidsynth` renders as a separate program; the mono mix is
scaled to -20 dBFS RMS (peak at most 0.89) with a 20 ms fade-out. Parsed scores are memoised per
process (music21 parses a chorale in ~0.05 s, a quartet movement in 0.5-3 s).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import pathlib
import re
import struct
import tempfile
from typing import Any

import numpy as np
import soundfile

from flowav.data.demo import AUDIO_SAMPLE_RATE, programs

LICENCE = ("Scores: the music21 corpus (music21 10.5 wheel, BSD-3 code; the corpus is distributed "
           "with the encoders' permission, see music21/corpus/license.txt, which warns that some "
           "encodings restrict commercial use: the ones marked so, Essen and the Humdrum files, are "
           "not used; the files used carry no rights notice). The compositions are in the public "
           "domain (Bach, Mozart, Haydn, Beethoven; Ryan's Mammoth Collection, 1883). Synthesis: "
           "fluidsynth (LGPL-2.1+, run as a separate program) with the MuseScore General Lite "
           "soundfont (MIT) or FluidR3_GM (MIT).")
# Tried in order; $FLOWAV_SOUNDFONT overrides. Each is (path, Debian package).
SOUNDFONTS = (("/usr/share/sounds/sf3/MuseScore_General_Lite.sf3", "musescore-general-soundfont-small"),
              ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm"),
              ("/usr/share/sounds/sf3/MuseScore_General.sf3", "musescore-general-soundfont"))
SPLITS = ("train", "validation", "test")
_TPQ = 480  # MIDI ticks per quarter note
_TARGET_RMS, _MAX_PEAK, _FADE_S = 0.1, 0.89, 0.02


@dataclasses.dataclass(frozen=True)
class Instrument:
  name: str
  program: int  # General MIDI program, 0-based
  phrase: str  # how the caption says it is played


INSTRUMENTS = {i.name: i for i in (
  Instrument("piano", 0, "on the piano"), Instrument("electric piano", 4, "on an electric piano"),
  Instrument("harpsichord", 6, "on the harpsichord"), Instrument("marimba", 12, "on the marimba"),
  Instrument("organ", 19, "on the organ"), Instrument("accordion", 21, "on the accordion"),
  Instrument("guitar", 24, "on the guitar"), Instrument("violin", 40, "on the violin"),
  Instrument("strings", 48, "by a string ensemble"), Instrument("choir", 52, "by a choir"),
  Instrument("clarinet", 71, "on the clarinet"), Instrument("flute", 73, "on the flute"),
)}


@dataclasses.dataclass(frozen=True)
class Form:
  name: str
  tempo_bpm: tuple[float, float]  # beats (quarter notes; dotted quarters in 6/8, 9/8, 12/8) per minute
  instruments: tuple[str, ...]


FORMS = (
  Form("chorale", (60.0, 100.0), ("piano", "organ", "strings", "choir", "harpsichord", "guitar",
                                  "electric piano")),
  Form("string quartet", (66.0, 132.0), ("piano", "strings", "organ", "harpsichord", "guitar",
                                         "electric piano")),
  Form("dance tune", (60.0, 110.0), ("flute", "violin", "clarinet", "piano", "accordion", "guitar",
                                     "harpsichord", "marimba")),
)
_QUARTETS = tuple(
  [f"mozart/{k}/movement{m}.mxl" for k, n in (("k80", 4), ("k155", 3), ("k156", 4), ("k458", 4))
   for m in range(1, n + 1)]
  + [f"haydn/{o}/movement{m}.mxl" for o, n in (("opus1no1", 5), ("opus74no1", 4)) for m in range(1, n + 1)]
  + [f"beethoven/{o}/movement{m}.mxl" for o in ("opus18no1", "opus59no1", "opus59no2", "opus59no3")
     for m in range(1, 5)])
_DANCES = {"reel": "reel", "hornpipe": "hornpipe", "jig": "jig", "strathspey": "strathspey",
           "clog": "clog dance", "highland fling": "highland fling", "fling": "highland fling",
           "slip jig": "slip jig", "slipjig": "slip jig", "walkaround": "walkaround", "slide": "slide"}


def _music21():
  try:
    import music21  # noqa: PLC0415 -- slow import (0.5 s), only when making music clips
  except ImportError as e:
    raise ImportError("the music subset of flowav-demo needs music21 (pip install 'music21>=10.5,<11')"
                      ) from e
  return music21


@functools.cache
def _corpus_dir() -> pathlib.Path:
  return pathlib.Path(_music21().__file__).parent / "corpus"


@functools.cache
def _form_items(form: str) -> tuple[str, ...]:
  """Every score of a form: corpus-relative paths, sorted."""
  root = _corpus_dir()
  if form == "chorale":
    names = [f"bach/{p.name}" for p in (root / "bach").glob("*.mxl") if p.name != "bwv846.mxl"]
  elif form == "string quartet":
    names = list(_QUARTETS)
  else:
    names = [f"ryansMammoth/{p.name}" for p in (root / "ryansMammoth").glob("*.abc")]
  missing = [n for n in names if not (root / n).is_file()]
  if not names or missing:
    raise FileNotFoundError(f"music21 corpus at {root} lacks the {form} scores {missing[:3] or ''}: "
                            "reinstall music21 (pip install 'music21>=10.5,<11')")
  return tuple(sorted(names))


def _split_key(name: str) -> str:
  """A chorale's key is its corpus name without variant or extension ('bach/bwv18.5' for
  bwv18.5-lz.mxl and bwv18.5-w.mxl), as the song subset (chorales.py) names it."""
  return re.sub(r"(-[^/.]+)?\.mxl$", "", name) if name.startswith("bach/") else name


def split_of(name: str) -> str:
  """A score's split by a fixed hash of its key: 10 % test, 10 % validation, 80 % train (the
  song subset's rule, so a chorale falls in the same split in both subsets)."""
  bucket = int.from_bytes(hashlib.sha256(_split_key(name).encode()).digest()[:8], "big") % 10
  return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


@functools.cache
def split_items(form: str, split: str) -> tuple[str, ...]:
  """The scores of `form` in `split`, in a fixed pseudo-random order (by their name's hash)."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
  items = [n for n in _form_items(form) if split_of(n) == split]
  return tuple(sorted(items, key=lambda n: (hashlib.sha256(n.encode()).hexdigest(), n)))


def available(split: str) -> int:
  """How many distinct scores the split holds (clip indices beyond reuse them, other excerpts)."""
  return sum(len(split_items(f.name, split)) for f in FORMS)


@dataclasses.dataclass(frozen=True)
class ScoreNotes:
  """A parsed score: notes [K, 4] (onset_q, end_q, midi, part) sorted by onset; measure starts."""
  name: str
  title: str
  composer: str
  dance: str | None
  beat_q: float  # quarters per beat: 1.5 in compound metres (6/8, 9/8, 12/8), else 1
  notes: np.ndarray
  measure_offsets: np.ndarray  # [M] quarter notes
  measure_numbers: np.ndarray  # [M]


@functools.cache
def load_score(name: str) -> ScoreNotes:
  """Parses a corpus score once per process and keeps its notes (ties merged, no grace notes)."""
  m21 = _music21()
  path = _corpus_dir() / name
  score = m21.converter.parse(str(path), forceSource=True)  # never read/write music21's pickles
  if isinstance(score, m21.stream.Opus):
    score = score.scores[0]
  rows: list[list[float]] = []
  for k, part in enumerate(score.parts):
    tied: dict[int, int] = {}  # midi -> row of the note a tie continues
    for el in part.flatten().notes:
      if isinstance(el, m21.harmony.Harmony) or el.duration.isGrace:
        continue
      onset, end = float(el.offset), float(el.offset + el.quarterLength)
      for n in (el.notes if isinstance(el, m21.chord.Chord) else [el]):
        tie_obj = n.tie if n.tie is not None else el.tie
        tie = tie_obj.type if tie_obj is not None else None
        row = tied.get(n.pitch.midi)
        if tie in ("stop", "continue") and row is not None and abs(rows[row][1] - onset) < 1e-6:
          rows[row][1] = end
        else:
          rows.append([onset, end, float(n.pitch.midi), float(k)])
          row = len(rows) - 1
        if tie in ("start", "continue"):
          tied[n.pitch.midi] = row
        else:
          tied.pop(n.pitch.midi, None)
  if not rows:
    raise ValueError(f"music21 corpus score {path} holds no notes")
  notes = np.asarray(sorted(rows), np.float64)
  measures = [(float(m.offset), int(m.number)) for m in score.parts[0].getElementsByClass("Measure")]
  measures = measures or [(0.0, 1)]
  meta = score.metadata
  metre = score.recurse().getElementsByClass("TimeSignature").first()
  compound = metre is not None and metre.denominator == 8 and metre.numerator in (6, 9, 12)
  dance = None
  if name.startswith("ryansMammoth/"):
    found = re.search(r"^R:\s*(.+)$", path.read_text(errors="replace"), re.MULTILINE)
    dance = _DANCES.get(found.group(1).strip().lower()) if found else None
  composer = {"bach": "Johann Sebastian Bach", "mozart": "Wolfgang Amadeus Mozart", "haydn": "Joseph Haydn",
              "beethoven": "Ludwig van Beethoven"}.get(name.split("/")[0], "traditional")
  return ScoreNotes(name=name, title=(meta.title if meta is not None and meta.title else "") or "",
                    composer=composer, dance=dance, beat_q=1.5 if compound else 1.0, notes=notes,
                    measure_offsets=np.asarray([m[0] for m in measures]),
                    measure_numbers=np.asarray([m[1] for m in measures]))


def find_soundfont() -> tuple[str, str]:
  """(path, label) of the first installed soundfont ($FLOWAV_SOUNDFONT first)."""
  override = os.environ.get("FLOWAV_SOUNDFONT")
  if override:
    if not os.path.isfile(override):
      raise FileNotFoundError(f"$FLOWAV_SOUNDFONT={override} is not a file")
    return override, os.path.basename(override)
  for path, package in SOUNDFONTS:
    if os.path.isfile(path):
      return path, f"{os.path.basename(path)} (Debian {package})"
  raise FileNotFoundError("no General MIDI soundfont found for the music subset of flowav-demo: "
                          "apt-get install musescore-general-soundfont-small (or fluid-soundfont-gm); "
                          f"looked for {[p for p, _ in SOUNDFONTS]}")


def make_music_clip(seed: np.random.SeedSequence | np.random.Generator, *, index: int, split: str,
                    seconds: float = 4.0, fps: float = 25.0, frame_size: int = 64,
                    sample_rate: int = AUDIO_SAMPLE_RATE, hop_length: int = 256) -> dict[str, Any]:
  """Makes one music clip: clip `index` of `split` (fps, frame_size, hop_length are unused).

  Returns:
    {"wav": [round(seconds * sample_rate)] float32 in [-1, 1], "frames": None, "caption": str,
     "truth": {subset, form, score, title, composer, dance, measures [first, last],
               offset_q [start, end], tempo_bpm (quarters/min), beat_bpm, instrument, gm_program,
               soundfont, velocity, gain,
               notes: [{midi, start_s, end_s, velocity, part}] (seconds from the clip start)}}.
  """
  del fps, frame_size, hop_length
  forms = [f for f in FORMS if split_items(f.name, split)]
  if not forms:
    raise ValueError(f"the music subset has no scores in split {split!r}")
  form = forms[index % len(forms)]
  items = split_items(form.name, split)
  score = load_score(items[(index // len(forms)) % len(items)])
  rng = np.random.default_rng(seed)
  bpm = float(rng.uniform(*form.tempo_bpm))  # beats per minute
  us_per_quarter = int(round(60e6 / (bpm * score.beat_q)))
  sec_per_tick = us_per_quarter / 1e6 / _TPQ
  span_q = seconds / (us_per_quarter / 1e6)
  instrument = INSTRUMENTS[str(rng.choice(form.instruments))]
  start_q = _excerpt_start(score, span_q, rng)
  notes = excerpt_notes(score.notes, start_q, span_q)
  base_velocity = int(rng.integers(64, 101))
  velocities = np.clip(base_velocity + rng.integers(-8, 9, size=len(notes)), 1, 127)
  soundfont, font_label = find_soundfont()
  midi = midi_bytes(notes[:, :3].astype(np.int64), velocities, instrument.program, us_per_quarter,
                    _end_tick(span_q))
  num_samples = int(round(seconds * sample_rate))
  raw = render_midi(midi, soundfont, sample_rate, num_samples)
  rms, peak = float(np.sqrt(np.mean(raw**2))), float(np.max(np.abs(raw)))
  if peak == 0.0:
    raise RuntimeError(f"fluidsynth rendered silence for {score.name} ({instrument.name}, {soundfont})")
  gain = min(_TARGET_RMS / rms, _MAX_PEAK / peak)
  fade = min(int(_FADE_S * sample_rate), num_samples)
  wav = raw * gain
  wav[num_samples - fade:] *= np.linspace(1.0, 0.0, fade, endpoint=False)
  lo, hi = form.tempo_bpm
  pace = " slowly" if bpm < lo + (hi - lo) / 3 else " quickly" if bpm > hi - (hi - lo) / 3 else ""
  subject = {"chorale": "a Bach chorale",
             "string quartet": f"a string quartet by {score.composer.split()[-1]}",
             "dance tune": f"a {score.dance}" if score.dance else "a fiddle tune"}[form.name]
  caption = f"{subject} played{pace} {instrument.phrase}"
  in_window = (score.measure_offsets >= start_q - 1e-9) & (score.measure_offsets < start_q + span_q)
  used = score.measure_numbers[in_window]
  truth = {
    "subset": "music", "form": form.name, "score": score.name, "title": score.title,
    "composer": score.composer, "dance": score.dance,
    "measures": [int(used.min()), int(used.max())] if used.size else [],
    "offset_q": [start_q, start_q + span_q], "tempo_bpm": 60e6 / us_per_quarter, "beat_bpm": bpm,
    "instrument": instrument.name, "gm_program": instrument.program, "soundfont": font_label,
    "velocity": base_velocity, "gain": gain,
    "notes": [{"midi": int(m), "start_s": round(float(s * sec_per_tick), 6),
               "end_s": round(float(e * sec_per_tick), 6), "velocity": int(v), "part": int(p)}
              for (s, e, m, p), v in zip(notes, velocities)],
  }
  return {"wav": wav.astype(np.float32), "frames": None, "caption": caption, "truth": truth}


def _excerpt_start(score: ScoreNotes, span_q: float, rng: np.random.Generator) -> float:
  """A measure start where the excerpt fits in the score, holds >= 3 onsets and its music
  starts within its first quarter; when none qualifies (a short score), the first measure."""
  onsets, last_end = score.notes[:, 0], float(score.notes[:, 1].max())
  good = []
  for start in np.unique(score.measure_offsets):
    inside = onsets[(onsets >= start - 1e-9) & (onsets < start + span_q - 1e-9)]
    if start + span_q <= last_end + 1e-9 and len(inside) >= 3 and inside[0] < start + span_q / 4:
      good.append(float(start))
  return good[int(rng.integers(len(good)))] if good else float(score.measure_offsets.min())


def excerpt_notes(notes: np.ndarray, start_q: float, span_q: float) -> np.ndarray:
  """Notes [K, 4] (onset_q, end_q, midi, part) with onsets in the window -> [J, 4] int64 rows
  (start_tick, end_tick, midi, part) from the window start, ends cut at the window end (tick
  floor(span_q * 480), never after it). A note that a same-pitch note interrupts ends there; a
  unison doubling (same start) keeps the longer."""
  end_tick = _end_tick(span_q)
  rows = []
  for onset, end, midi, part in notes:
    on = int(round((onset - start_q) * _TPQ))
    if onset >= start_q - 1e-9 and on < end_tick:
      rows.append([on, max(min(int(round((end - start_q) * _TPQ)), end_tick), on + 1), int(midi), int(part)])
  rows.sort(key=lambda r: (r[2], r[0], r[1]))
  kept = []
  for k, row in enumerate(rows):
    nxt = rows[k + 1] if k + 1 < len(rows) else None
    if nxt is not None and nxt[2] == row[2] and nxt[0] < row[1]:
      row = [row[0], nxt[0], row[2], row[3]]
    if row[1] > row[0]:
      kept.append(row)
  kept.sort(key=lambda r: (r[0], r[2]))
  return np.asarray(kept, np.int64).reshape(-1, 4)


def _end_tick(span_q: float) -> int:
  return int(np.floor(span_q * _TPQ + 1e-6))


def _varlen(value: int) -> bytes:
  out = [value & 0x7F]
  value >>= 7
  while value:
    out.append(0x80 | (value & 0x7F))
    value >>= 7
  return bytes(reversed(out))


def midi_bytes(notes: np.ndarray, velocities: np.ndarray, program: int, us_per_quarter: int,
               end_tick: int) -> bytes:
  """A type-0 Standard MIDI File: notes [J, 3] (start_tick, end_tick, midi) on channel 0.

  It selects bank 1 before the program: `render_midi` loads the soundfont at bank offset 1 (see
  there). Note-offs sort before note-ons at the same tick, so repeated pitches re-strike.
  """
  events = [(0, 0, b"\xff\x51\x03" + us_per_quarter.to_bytes(3, "big")),
            (0, 0, bytes([0xB0, 0, 1])), (0, 0, bytes([0xB0, 32, 0])), (0, 0, bytes([0xC0, program]))]
  for (on, off, midi), velocity in zip(notes, velocities):
    events.append((int(on), 2, bytes([0x90, int(midi), int(velocity)])))
    events.append((int(off), 1, bytes([0x80, int(midi), 0])))
  events.sort(key=lambda e: (e[0], e[1]))
  track, tick = bytearray(), 0
  for t, _, data in events + [(max(end_tick, events[-1][0]), 3, b"\xff\x2f\x00")]:
    track += _varlen(t - tick) + data
    tick = t
  return b"MThd" + struct.pack(">IHHH", 6, 0, 1, _TPQ) + b"MTrk" + struct.pack(">I", len(track)) + track


def render_midi(midi: bytes, soundfont: str, sample_rate: int, num_samples: int) -> np.ndarray:
  """Renders a MIDI file with `fluidsynth` (default reverb and chorus) -> mono [num_samples] float64.

  Speed: fluidsynth gives every channel bank 0 program 0 (and channel 10 the drum kit) when a
  soundfont loads; with an .sf3 font that decodes the grand piano's Ogg samples (~1 s) every run.
  Loading the font at bank offset 1 from a command file (`load FILE 1 1`), with dynamic sample
  loading and no default soundfont, leaves the channels empty, so only the instrument the MIDI
  selects (bank 1) is decoded: ~0.05 s a clip (the piano still costs ~1 s).
  """
  if any(c.isspace() for c in soundfont):
    raise ValueError(f"soundfont path {soundfont!r} holds whitespace, which fluidsynth's shell splits")
  with tempfile.TemporaryDirectory(prefix="flowav-fluidsynth-") as tmp:
    mid, out, cmd = (os.path.join(tmp, n) for n in ("clip.mid", "clip.wav", "load.txt"))
    pathlib.Path(mid).write_bytes(midi)
    pathlib.Path(cmd).write_text(f"load {soundfont} 1 1\n")
    args = ["fluidsynth", "-n", "-i", "-q", "-g", "0.5", "-r", str(sample_rate), "-O", "float", "-T",
            "wav", "-o", "synth.dynamic-sample-loading=1", "-o", "synth.default-soundfont=", "-f", cmd,
            "-F", out, mid]
    programs.run(args, install="apt-get install fluidsynth", outputs=[out], timeout=300,
                 needed_by="the music subset of flowav-demo", what=f"fluidsynth with {soundfont}")
    wav, rate = soundfile.read(out, dtype="float64", always_2d=True)
  if rate != sample_rate:
    raise RuntimeError(f"fluidsynth wrote {rate} Hz, asked for {sample_rate}")
  wav = wav.mean(axis=1)[:num_samples]
  return np.pad(wav, (0, num_samples - len(wav)))
