"""flowav-demo: a small real paired audio-video dataset made offline from a seed (DESIGN.md,
"The embedded default").

Subsets: *impacts* (a rendered ball hitting a surface, modal-synthesis impact sounds at the contact
frames; `impacts.py`) and *speech* (flite speech of random sentences with phone timings, and a drawn
face whose mouth follows them; `speech.py`, `face.py`). `build.py` turns clips into examples of
`flowav.data.schema` with the built-in frozen video encoder (`video_encoder.py`); DATASHEET.md
documents the data.
"""

from __future__ import annotations

AUDIO_SAMPLE_RATE = 22050  # the MelCodec rate; build.py checks that they agree
SUBSETS = ("impacts", "speech")  # index = the subset's place in every clip's SeedSequence
SPLITS = ("train", "validation", "test")  # likewise
