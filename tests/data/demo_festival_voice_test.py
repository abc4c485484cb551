"""Tests of the festival HTS voice: phone timings that match the audio, phone mapping, safe
quoting of the text, and clear errors when festival is missing."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from flowav.data.demo import festival_voice
from flowav.data.demo.speech import PHONE_IDS

needs_festival = pytest.mark.skipif(shutil.which("festival") is None,
                                    reason="apt-get install festival festvox-us-slt-hts")
SR = 22050
TEXT = "Glue the sheet to the dark blue background."


@pytest.fixture(scope="module")
def spoken():
  if shutil.which("festival") is None:
    pytest.skip("apt-get install festival festvox-us-slt-hts")
  return festival_voice.synthesize(TEXT, SR)


def test_phones_valid_and_times_match_the_audio(spoken):
  wav, phones, ends = spoken
  assert wav.dtype == np.float32 and wav.ndim == 1 and np.max(np.abs(wav)) <= 1.0
  assert all(p in PHONE_IDS for p in phones)
  assert phones[0] == phones[-1] == "pau"
  assert not any(a == b == "pau" for a, b in zip(phones, phones[1:]))
  assert len(ends) == len(phones) and np.all(np.diff(ends) > 0)
  assert abs(ends[-1] - len(wav) / SR) < 0.01
  # "glue the sheet ..." -> g l uw dh ah sh iy t ...: the words' phones in order.
  speech_phones = [p for p in phones if p != "pau"]
  assert speech_phones[:8] == ["g", "l", "uw", "dh", "ah", "sh", "iy", "t"]
  assert speech_phones[-3:] == ["aw", "n", "d"]  # backgr-OUND


def test_speech_energy_sits_inside_non_pause_phones(spoken):
  wav, phones, ends = spoken
  starts = np.concatenate([[0.0], ends[:-1]])
  energy = wav.astype(np.float64) ** 2
  inside = np.zeros(len(wav), bool)
  for p, s, e in zip(phones, starts, ends):
    if p != "pau":
      inside[int(round(s * SR)):int(round(e * SR))] = True
  assert energy[inside].sum() / energy.sum() > 0.97
  assert inside.mean() < 0.95  # the pauses are real: some audio lies outside the phones
  # Mean power of the speech is far above that of the leading and trailing pauses (> 30 dB).
  pauses = ~inside
  assert energy[inside].mean() > 1000 * energy[pauses].mean()
  # Vowels are louder than the fricative 'sh' (a per-phone check of the alignment).
  power = {p: [] for p in phones}
  for p, s, e in zip(phones, starts, ends):
    power[p].append(energy[int(round(s * SR)):int(round(e * SR))].mean())
  assert np.mean(power["uw"] + power["ae"]) > 3 * np.mean(power["sh"])


@needs_festival
def test_deterministic_and_rate_follows_sample_rate():
  a = festival_voice.synthesize("Rice is often served in round bowls.", 16000)
  b = festival_voice.synthesize("Rice is often served in round bowls.", 16000)
  assert np.array_equal(a[0], b[0]) and a[1] == b[1] and np.array_equal(a[2], b[2])
  assert abs(len(a[0]) / 16000 - a[2][-1]) < 0.01


@needs_festival
def test_text_cannot_escape_the_scheme_string(tmp_path):
  marker = tmp_path / "pwned"
  text = f'Say "hi" \\ x") (system "touch {marker}") ("'
  wav, phones, _ = festival_voice.synthesize(text, SR)
  assert not marker.exists()
  assert len(wav) > 0.5 * SR and len(phones) > 10
  assert festival_voice.scheme_string('a "b" \\c') == '"a \\"b\\" \\\\c"'
  assert festival_voice.scheme_string("caf\u00e9\nau lait") == '"cafe au lait"'
  with pytest.raises(ValueError, match="non-ASCII"):
    festival_voice.scheme_string("\u4f60\u597d")
  with pytest.raises(ValueError, match="nothing to say"):
    festival_voice.synthesize(" ... ", SR)


def test_parse_segs_maps_radio_phones_and_merges_pauses():
  segs = ("EST_File Segment\n#\n0.1000 100 h#\n0.1500 100 pau\n0.2000 100 dx\n0.3000 100 ax\n"
          "0.3500 100 el\n0.4000 100 brth\n0.4500 100 pau\n0.5000 100 hv\n0.6000 100 axr\n"
          "0.7000 100 pau\n")
  phones, ends = festival_voice.parse_segs(segs, "test")
  assert phones == ["pau", "t", "ah", "l", "pau", "hh", "er", "pau"]
  np.testing.assert_allclose(ends, [0.15, 0.2, 0.3, 0.35, 0.45, 0.5, 0.6, 0.7])
  with pytest.raises(ValueError, match="unknown phone 'qq'"):
    festival_voice.parse_segs("#\n0.1 100 pau\n0.2 100 qq\n0.3 100 pau\n", "test")
  with pytest.raises(ValueError, match="not increasing"):
    festival_voice.parse_segs("#\n0.2 100 pau\n0.1 100 t\n0.3 100 pau\n", "test")
  with pytest.raises(ValueError, match="framed by 'pau'"):
    festival_voice.parse_segs("#\n0.1 100 t\n0.3 100 pau\n", "test")


def test_missing_festival_is_a_clear_error(monkeypatch, tmp_path):
  monkeypatch.setenv("PATH", str(tmp_path))
  with pytest.raises(RuntimeError, match="apt-get install festival festvox-us-slt-hts"):
    festival_voice.synthesize("hello there", SR)


@needs_festival
def test_missing_voice_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(festival_voice, "VOICE", "voice_flowav_no_such_voice")
  with pytest.raises(RuntimeError, match="festvox-us-slt-hts"):
    festival_voice.synthesize("hello there", SR)
