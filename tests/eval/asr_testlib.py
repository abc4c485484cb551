"""Real human speech with transcripts for the ASR known-answer tests: the Asterisk English prompts.

The corpus reading lives in flowav.data.demo.human_speech (the flowav-demo *human_speech* subset
reads the same files); this module re-exports it and adds the fixed test subsets. Audio: Debian
`asterisk-core-sounds-en-wav` (571 prompts by one female US speaker, 8 kHz wav, CC-BY-SA-3.0);
transcripts: `core-sounds-en.txt.gz` from Debian `asterisk-core-sounds-en` (or a copy in
$FLOWAV_ASTERISK_DIR, else ~/.cache/flowav/asterisk).
"""

from __future__ import annotations

import os

import numpy as np

from flowav.audio.io import read_audio
from flowav.data.demo import human_speech as _corpus
from flowav.data.demo.human_speech import (  # noqa: F401 -- re-exported for the tests
  DOC_DIR,
  INSTALL,
  SAMPLE_RATE,
  SOUND_DIRS,
  TRANSCRIPT_NAME,
  cache_dir,
  find_sounds,
  find_transcripts,
  missing_reason,
  read_transcripts,
)


def plain_prompts(min_words: int = 3) -> list[tuple[str, str]]:
  """(name, transcript) of every prompt with a wav and a plain-word transcript, sorted by name."""
  return _corpus.plain_prompts(min_words)


def subset(count: int, min_words: int = 3) -> list[tuple[str, str]]:
  """A fixed subset: every k-th of `plain_prompts` (k = len // count), the first `count` of them."""
  prompts = plain_prompts(min_words)
  step = max(1, len(prompts) // count)
  return prompts[::step][:count]


def load(prompts: list[tuple[str, str]], sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
  """Waveforms `[N_i]` float32 of `prompts` at `sample_rate`."""
  sounds = find_sounds()
  return [read_audio(os.path.join(sounds, name + ".wav"), sample_rate) for name, _ in prompts]
