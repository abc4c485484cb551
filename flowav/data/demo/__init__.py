"""flowav-demo: a small real paired audio-video dataset made offline from a seed (DESIGN.md,
"The embedded default").

Subsets: *impacts* (a rendered ball hitting a surface, modal-synthesis impact sounds at the contact
frames; `impacts.py`) and *speech* (flite speech of random sentences with phone timings, and a drawn
face whose mouth follows them; `speech.py`, `face.py`) make the default build. The full build
(`build.preset("full")`) adds *human_speech* (real recorded prompts, force-aligned;
`human_speech.py`), *song* (sung chorale phrases; `song.py`), *music* (scores rendered by
fluidsynth; `music.py`) and festival's HTS voice to *speech* (`festival_voice.py`).
`build.py` turns clips into examples of `flowav.data.schema` with the built-in frozen video
encoder (`video_encoder.py`); DATASHEET.md documents the data.
"""

from __future__ import annotations

AUDIO_SAMPLE_RATE = 22050  # the MelCodec rate; build.py checks that they agree
# index = the subset's place in every clip's SeedSequence: append, never reorder.
SUBSETS = ("impacts", "speech", "human_speech", "song", "music")
SPLITS = ("train", "validation", "test")  # likewise
