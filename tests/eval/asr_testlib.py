"""Real human speech with transcripts for the ASR known-answer tests: the Asterisk English prompts.

Audio: Debian `asterisk-core-sounds-en-wav` (571 prompts by one female US speaker, 8 kHz wav,
CC-BY-SA-3.0) in /usr/share/asterisk/sounds/en (the link `asterisk-core-sounds-en` makes) or
/usr/share/asterisk/sounds/en_US_f_Allison (the folder the -wav package installs).
Transcripts: `core-sounds-en.txt.gz` ("name: transcript" lines) from the Debian package
`asterisk-core-sounds-en`, found in /usr/share/doc/asterisk-core-sounds-en or in a cache folder
($FLOWAV_ASTERISK_DIR, else ~/.cache/flowav/asterisk) as .txt or .txt.gz.
"""

from __future__ import annotations

import gzip
import os
import re

import numpy as np

from flowav.audio.io import read_audio

SOUND_DIRS = ("/usr/share/asterisk/sounds/en", "/usr/share/asterisk/sounds/en_US_f_Allison")
DOC_DIR = "/usr/share/doc/asterisk-core-sounds-en"
TRANSCRIPT_NAME = "core-sounds-en.txt"
SAMPLE_RATE = 8000
INSTALL = ("apt-get install -y --no-install-recommends asterisk-core-sounds-en-wav asterisk-core-sounds-en"
           "  (or, for the transcripts only: apt-get download asterisk-core-sounds-en && "
           "dpkg-deb -x asterisk-core-sounds-en_*.deb DIR && cp DIR/usr/share/doc/asterisk-core-sounds-en/"
           "core-sounds-en.txt.gz ~/.cache/flowav/asterisk/)")
# Plain spoken words only: no [tone descriptions], digits, # or * (read as "pound" / "star").
_PLAIN = re.compile(r"[A-Za-z][A-Za-z ,.'?!-]*")


def cache_dir() -> str:
  return os.environ.get("FLOWAV_ASTERISK_DIR") or os.path.expanduser("~/.cache/flowav/asterisk")


def find_sounds() -> str | None:
  """The folder of the English prompt wavs, or None."""
  for d in SOUND_DIRS:
    if os.path.isfile(os.path.join(d, "agent-pass.wav")):
      return d
  return None


def find_transcripts() -> str | None:
  """Path of core-sounds-en.txt(.gz), or None."""
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


def plain_prompts(min_words: int = 3) -> list[tuple[str, str]]:
  """(name, transcript) of every prompt with a wav and a plain-word transcript, sorted by name."""
  sounds, path = find_sounds(), find_transcripts()
  if sounds is None or path is None:
    raise FileNotFoundError(missing_reason())
  out = []
  for name, text in sorted(read_transcripts(path).items()):
    if _PLAIN.fullmatch(text) and len(text.split()) >= min_words:
      if os.path.isfile(os.path.join(sounds, name + ".wav")):
        out.append((name, text))
  return out


def subset(count: int, min_words: int = 3) -> list[tuple[str, str]]:
  """A fixed subset: every k-th of `plain_prompts` (k = len // count), the first `count` of them."""
  prompts = plain_prompts(min_words)
  step = max(1, len(prompts) // count)
  return prompts[::step][:count]


def load(prompts: list[tuple[str, str]], sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
  """Waveforms `[N_i]` float32 of `prompts` at `sample_rate`."""
  sounds = find_sounds()
  return [read_audio(os.path.join(sounds, name + ".wav"), sample_rate) for name, _ in prompts]
