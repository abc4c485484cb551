"""Conditions a user gives at sampling time (`flowav.data.inputs.condition_clip`)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from configs import audiogen_omni as omni_config
from flowav.data import inputs, pipeline, records
from flowav.data.demo import speech

needs_flite = pytest.mark.skipif(shutil.which("flite") is None, reason="needs flite (make system-deps)")


@needs_flite
def test_user_transcript_keeps_flites_phone_timing(tiny_demo):
  info = records.DatasetInfo.load(tiny_demo)
  lengths = pipeline.config_lengths(info, omni_config.get_config("tiny").data)
  rate = float(info.rates["audio"])
  ids, ends = inputs.phonemize("the red cat", info.vocab["phones"])
  assert len(ids) == len(ends) and np.all(np.diff(ends) > 0)
  roomy = 2.0  # flite says "the red cat" in under a second: its timing is kept as it is
  clip = inputs.condition_clip(info, lengths, roomy, transcript="the red cat", duration=roomy)
  durations = clip.prepared["phone_durations"][clip.prepared["transcript_mask"]]
  assert durations.sum() == int(np.floor(roomy * rate + 1e-6)) and durations.min() >= 1
  np.testing.assert_array_equal(np.cumsum(durations)[:-1], np.round(ends[:-1] * rate))
  short = inputs.condition_clip(info, lengths, roomy, transcript="the red cat", duration=0.5)
  squeezed = short.prepared["phone_durations"][short.prepared["transcript_mask"]]
  np.testing.assert_array_equal(squeezed, speech.phone_frame_durations(
    ends * 0.5 / ends[-1], rate, int(np.floor(0.5 * rate + 1e-6))))
  with pytest.raises(ValueError, match="one per audio frame"):
    inputs.condition_clip(info, lengths, roomy, transcript="the red cat", duration=0.05)
