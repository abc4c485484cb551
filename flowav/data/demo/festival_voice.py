"""A festival HTS voice for the *speech* subset: CMU ARCTIC "slt" (US English, female) as an HMM
voice, with phone timings.

Festival 2.5 (Debian `festival`) runs as a separate program on a small Scheme script that selects
`voice_cmu_us_slt_arctic_hts` (Debian `festvox-us-slt-hts`, 32 kHz), synthesises the text as one
utterance and saves the wave and the Segment relation (`utt.save.segs`: one `end_time 100 name` line
per phone, after a `#` header line). The voice uses festival's "radio" phone set (radio_phones.scm):
CMUdict's 39 ARPAbet phones, `pau`, and a few extras that `_RADIO_EXTRA` maps to their nearest
`speech.PHONES` name, as speech.py does for flite. Consecutive pauses merge into one.

The text goes into a Scheme string literal: `\\` and `"` are escaped, control characters become
spaces, and accents are stripped (NFKD); any other non-ASCII character is an error, since the
voice's lexicon and letter-to-sound rules are English-only.
"""

from __future__ import annotations

import math
import os
import tempfile
import unicodedata

import numpy as np
import scipy.signal
import soundfile

from flowav.data.demo import AUDIO_SAMPLE_RATE, programs
from flowav.data.demo.speech import PHONE_IDS

VOICE = "voice_cmu_us_slt_arctic_hts"
FESTIVAL = "festival"  # the program; tests point it elsewhere
LICENCE = ("Festival 2.5 (Debian `festival`, X11/BSD-style licence, University of Edinburgh and "
           "CMU) with the HTS voice cmu_us_slt_arctic_hts (Debian `festvox-us-slt-hts`; CMU ARCTIC "
           "data and HTS voice under BSD-style licences: keep the copyright notices). Run as a "
           "separate program; its audio output is used as data.")
# Radio phones outside CMUdict's 39, each mapped to its nearest PHONES name (the same choices as
# speech.py's flite table: schwa -> ah, flap -> t, syllabic consonants -> the consonant).
_RADIO_EXTRA = {"ax": "ah", "axr": "er", "dx": "t", "el": "l", "em": "m", "en": "n", "nx": "n",
                "hv": "hh", "h#": "pau", "brth": "pau"}
_INSTALL_HINT = "apt-get install festival festvox-us-slt-hts"


def scheme_string(text: str) -> str:
  """`text` as a Scheme string literal (quotes included) that festival reads back verbatim.

  Raises ValueError on characters the English voice cannot speak (non-ASCII after stripping
  accents).
  """
  text = unicodedata.normalize("NFKD", text)
  text = "".join(c for c in text if not unicodedata.combining(c))
  text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
  bad = sorted({c for c in text if ord(c) > 126})
  if bad:
    raise ValueError(f"festival HTS voice: text {text!r} holds non-ASCII characters {bad}")
  return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize(text: str, sample_rate: int = AUDIO_SAMPLE_RATE
               ) -> tuple[np.ndarray, list[str], np.ndarray]:
  """Speaks `text` with festival's HTS slt voice (about 0.3 s per sentence on one core).

  Same convention as `speech.synthesize`.
  Returns:
    (wav [N] float32 at `sample_rate`, phones [L] (PHONES names, first and last 'pau', no two
     pauses in a row), end times [L] float64 in seconds from the start of wav, increasing; the
     last is the end of the audio).
  """
  literal = scheme_string(text)
  if not any(c.isalnum() for c in text):
    raise ValueError(f"festival HTS voice: nothing to say in {text!r}")
  source = f"festival {VOICE} on {text!r}"
  with tempfile.TemporaryDirectory(prefix="flowav-festival-") as tmp:
    wav_path, segs_path = os.path.join(tmp, "speech.wav"), os.path.join(tmp, "speech.segs")
    script = os.path.join(tmp, "synth.scm")
    with open(script, "w", encoding="ascii") as f:
      f.write(f"({VOICE})\n(set! utt (SynthText {literal}))\n"
              f"(utt.save.wave utt {scheme_string(wav_path)} 'riff)\n"
              f"(utt.save.segs utt {scheme_string(segs_path)})\n")
    try:
      programs.run([FESTIVAL, "-b", script], cwd=tmp, install=_INSTALL_HINT, what=source,
                   needed_by="the festival HTS voice of flowav-demo", outputs=[wav_path, segs_path])
    except RuntimeError as e:
      if VOICE in str(e) and "unbound variable" in str(e):
        raise RuntimeError(f"festival has no voice {VOICE} (Debian/Ubuntu: {_INSTALL_HINT}): "
                           f"{e}") from e
      raise
    with open(segs_path, encoding="utf-8", errors="replace") as f:
      phones, ends = parse_segs(f.read(), source)
    wav, festival_sr = soundfile.read(wav_path, dtype="float32")
  if wav.ndim != 1:
    wav = wav.mean(axis=1)
  g = math.gcd(sample_rate, int(festival_sr))
  wav = scipy.signal.resample_poly(wav, sample_rate // g, int(festival_sr) // g)
  return np.clip(wav, -1.0, 1.0).astype(np.float32), phones, ends


def parse_segs(segs: str, source: str) -> tuple[list[str], np.ndarray]:
  """Parses festival's `utt.save.segs` output (header, `#`, then `end 100 name` lines) into
  PHONES names and end times [L] float64; consecutive pauses merge (the later end is kept)."""
  lines = segs.splitlines()
  if "#" not in [line.strip() for line in lines]:
    raise ValueError(f"{source}: segment file has no '#' header line")
  body = lines[[line.strip() for line in lines].index("#") + 1:]
  phones: list[str] = []
  ends: list[float] = []
  for line in body:
    fields = line.split()
    if not fields:
      continue
    if len(fields) != 3:
      raise ValueError(f"{source}: bad segment line {line!r} (want 'end_time 100 phone')")
    try:
      end_s = float(fields[0])
    except ValueError as e:
      raise ValueError(f"{source}: bad end time in segment line {line!r}") from e
    name = _RADIO_EXTRA.get(fields[2], fields[2])
    if name not in PHONE_IDS:
      raise ValueError(f"{source}: unknown phone {fields[2]!r} in festival's segments")
    if name == "pau" and phones and phones[-1] == "pau":
      ends[-1] = end_s
      continue
    phones.append(name)
    ends.append(end_s)
  if not phones or phones[0] != "pau" or phones[-1] != "pau":
    raise ValueError(f"{source}: expected phones framed by 'pau', got {phones}")
  ends_arr = np.asarray(ends, np.float64)
  if np.any(np.diff(ends_arr) <= 0) or ends_arr[0] <= 0:
    raise ValueError(f"{source}: phone end times are not increasing: {ends}")
  return phones, ends_arr
