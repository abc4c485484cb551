"""flowav-demo *human_speech*: the corpus rule and splits, the clip contract, and checks that the
forced alignment and the mouth track are right (each could fail: shifted or mismatched controls).

Measured on the 2-core VM (pocketsphinx 5.1.1, asterisk-core-sounds-en-wav 1.6.1): 441 prompts
(390 / 14 / 37); alignment 0.05 s per prompt on average (0.22 s at most, 7 s of audio); over the
corpus, vowels sit a median 55 dB above the aligned pauses (5th percentile 31 dB) and the mouth
correlates with the audio envelope at lag 0 (median r = 0.62; best lag 0 or -1 for 377 of 441).
"""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from flowav.data.demo import forced_alignment, speech
from flowav.data.demo import human_speech as hs
from flowav.eval import lipsync

pytestmark = [
  pytest.mark.skipif(hs.missing_reason() is not None, reason=hs.missing_reason() or ""),
  pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None,
                     reason="pocketsphinx not installed: pip install pocketsphinx"),
]
SPLITS = ("train", "validation", "test")
FPS, SIZE, SR, HOP = 25.0, 32, 22050, 256
VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay", "eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw")


def _locate(name: str) -> tuple[str, int]:
  for split in SPLITS:
    for i, prompt in enumerate(hs.corpus(split)):
      if prompt.name == name:
        return split, i
  raise KeyError(name)


def _clip(name: str, seed: int = 0) -> dict:
  split, index = _locate(name)
  return hs.make_human_speech_clip(np.random.SeedSequence(seed), index=index, split=split,
                                   fps=FPS, frame_size=SIZE, sample_rate=SR, hop_length=HOP)


def _frame_db(wav: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
  """Energy in dB of 10 ms frames [F] and their centre times [F]."""
  hop = sr // 100
  frames = wav[:len(wav) // hop * hop].reshape(-1, hop).astype(np.float64)
  return 10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-10), (np.arange(len(frames)) + 0.5) / 100


def _labels(phones, times: np.ndarray) -> np.ndarray:
  return np.asarray([next((p for p, _, end in phones if t < end), phones[-1][0]) for t in times])


# --- corpus and splits ---------------------------------------------------------------------------

def test_split_hash_is_fixed():
  # Pinned: changing the hash or the percentages would move prompts between splits.
  pinned = {"thank you": "train", "six": "train", "call forward unconditional": "validation",
            "call waiting": "test", "has left the conference": "test",
            "please check the number and dial again": "test"}
  assert {w: hs.split_of(w.split()) for w in pinned} == pinned
  buckets = [hs.split_of([f"word{i}"]) for i in range(4000)]
  share = {s: buckets.count(s) / len(buckets) for s in SPLITS}
  assert share["train"] == pytest.approx(0.90, abs=0.02)
  assert share["validation"] == pytest.approx(0.03, abs=0.01)
  assert share["test"] == pytest.approx(0.07, abs=0.015)


def test_splits_are_disjoint_sorted_and_follow_the_corpus_rule():
  lists = {s: hs.corpus(s) for s in SPLITS}
  names = [p.name for s in SPLITS for p in lists[s]]
  assert len(names) == len(set(names)) > 400
  for split, prompts in lists.items():
    assert [p.name for p in prompts] == sorted(p.name for p in prompts)
    assert hs.available(split) == len(prompts) > 5
    for p in prompts:
      assert hs._PLAIN.fullmatch(p.text) and p.seconds <= hs.MAX_SECONDS
      assert set(p.words) <= hs.lexicon() and hs.split_of(list(p.words)) == split
  # The same words never straddle splits (24 sentences are recorded twice).
  texts = {s: {p.words for p in lists[s]} for s in SPLITS}
  assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
  assert _locate("auth-thankyou")[0] == _locate("privacy-thankyou")[0]
  # Excluded: digits in the text, a tone annotation, out-of-lexicon words, a typo; kept through
  # forced_alignment.EXTRA_LEXICON: "unmuted".
  for name in ("conf-adminmenu", "beep", "spy-iax", "queue-periodic-announce"):
    with pytest.raises(KeyError):
      _locate(name)
  _locate("conf-unmuted")
  # A shorter cap keeps a subset of the same order.
  short = hs.corpus("train", 2.0)
  assert 0 < len(short) < len(lists["train"])
  assert [p.name for p in lists["train"] if p.seconds <= 2.0] == [p.name for p in short]
  with pytest.raises(ValueError, match="unknown split"):
    hs.corpus("dev")


def test_index_past_the_end_is_a_clear_error():
  n = hs.available("validation")
  with pytest.raises(IndexError, match=f"index {n} is past the end of split 'validation', which "
                                       f"holds {n} prompts"):
    hs.make_human_speech_clip(np.random.SeedSequence(0), index=n, split="validation", fps=FPS,
                              frame_size=SIZE)


# --- the clip ------------------------------------------------------------------------------------

def test_clip_contract():
  clip = _clip("agent-pass")
  wav, frames = clip["wav"], clip["frames"]
  assert wav.dtype == np.float32 and wav.ndim == 1 and 0.05 < np.abs(wav).max() <= 0.9 + 1e-6
  assert abs(len(wav) / SR - 3.29) < 0.25  # natural length, silence trimmed to <= 0.1 s a side
  assert frames.dtype == np.uint8 and frames.shape == (round(len(wav) / SR * FPS), SIZE, SIZE, 3)
  durations, ids = clip["phone_durations"], clip["phone_ids"]
  assert durations.dtype == np.int32 and ids.dtype == np.int32 and len(durations) == len(ids)
  assert durations.sum() == len(wav) // HOP and durations.min() >= 1
  assert ids.min() >= 1 and ids.max() <= len(speech.PHONES)
  assert clip["transcript"] == "Please enter your password followed by the pound key."
  assert clip["caption"] == hs.CAPTION
  truth = json.loads(json.dumps(clip["truth"]))
  assert truth["prompt"] == "agent-pass" and truth["alignment"] == hs.ALIGNMENT
  assert [w["word"] for w in truth["words"]] == "please enter your password followed by the pound key".split()
  assert [speech.PHONE_IDS[p["phone"]] for p in truth["phones"]] == ids.tolist()
  assert [p["frames"] for p in truth["phones"]] == durations.tolist()
  ends = [p["end_s"] for p in truth["phones"]]
  assert ends == sorted(ends) and ends[-1] == pytest.approx(len(wav) / SR, abs=1e-6)
  # CMU's "P L IY Z" for "please", after the leading pause.
  assert [p["phone"] for p in truth["phones"][:5]] == ["pau", "p", "l", "iy", "z"]
  assert len(truth["mouth_open"]) == len(frames)


def test_same_seed_same_bytes_and_alignment_independent_of_order():
  a, b, c = _clip("dir-first", 3), _clip("dir-first", 3), _clip("dir-first", 4)
  assert a["wav"].tobytes() == b["wav"].tobytes() and a["frames"].tobytes() == b["frames"].tobytes()
  assert json.dumps(a["truth"]) == json.dumps(b["truth"])
  # The seed draws only the face: the audio and timings stay, the frames move.
  assert a["wav"].tobytes() == c["wav"].tobytes() and a["truth"]["phones"] == c["truth"]["phones"]
  assert a["frames"].tobytes() != c["frames"].tobytes()
  # pocketsphinx carries feature state across utterances unless reset: a decoder that has aligned
  # other prompts must give what a fresh one gives (without the reset, agent-pass differs).
  split, index = _locate("agent-pass")
  prompt = hs.corpus(split)[index]
  wav = hs.prepared_prompt(prompt)[0]
  for other in hs.corpus("train")[:3]:
    hs.align(hs.prepared_prompt(other)[0], hs.SAMPLE_RATE, other.words)
  warm = hs.align(wav, hs.SAMPLE_RATE, prompt.words)
  forced_alignment._decoder.cache_clear()
  assert hs.align(wav, hs.SAMPLE_RATE, prompt.words) == warm


# --- the alignment is right ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["agent-pass", "conf-invalid"])
def test_aligned_vowels_are_loud_and_pauses_quiet(name):
  split, index = _locate(name)
  wav, _, alignment = hs.prepared_prompt(hs.corpus(split)[index])
  db, times = _frame_db(wav, hs.SAMPLE_RATE)

  def gap(phones) -> float:  # median vowel energy - median pause energy, dB
    labels = _labels(phones, times)
    return float(np.median(db[np.isin(labels, VOWELS)]) - np.median(db[labels == "pau"]))

  measured = gap(alignment.phones)
  assert measured > 30.0  # 51 and 70 dB
  # Inner pauses (between words) fall on energy dips, not inside words.
  inner = [(s, e) for p, s, e in alignment.phones[1:-1] if p == "pau" and e - s >= 0.05]
  assert inner, "expected a pause between words"
  for start, end in inner:
    assert np.median(db[(times >= start) & (times < end)]) < np.median(db) - 20
  # Control: the same labels 0.25 s late lose most of the contrast.
  late = [(p, s + 0.25, e + 0.25) for p, s, e in alignment.phones]
  assert gap(late) < measured - 20


def test_wrong_transcript_aligns_worse():
  split, index = _locate("agent-pass")
  prompt = hs.corpus(split)[index]
  wav, _, right = hs.prepared_prompt(prompt)
  wrong_words = "the conference will begin when the leader arrives".split()
  try:
    wrong = hs.align(wav, hs.SAMPLE_RATE, wrong_words).score_per_frame
  except RuntimeError:  # no path at all: even worse
    wrong = -np.inf
  assert right.score_per_frame > wrong + 5  # measured -16.4 vs about -30 over the corpus


def test_mouth_follows_the_audio_envelope():
  clip, other = _clip("privacy-unident"), _clip("priv-introsaved")
  mouth = clip["mouth_open"]
  envelope = lipsync.audio_envelope(clip["wav"], SR, FPS, num_frames=len(mouth))
  result = lipsync.lag_correlation(mouth, envelope, max_lag=8)
  assert result["best_lag_frames"] in (-1, 0, 1) and result["corr_at_zero"] > 0.5  # measured 0.74
  # Controls: the mouth 8 frames late, and another prompt's mouth.
  shifted = np.concatenate([np.zeros(8, np.float32), mouth[:-8]])
  assert lipsync.lag_correlation(shifted, envelope, max_lag=0)["corr_at_zero"] < result["corr_at_zero"] - 0.3
  n = min(len(mouth), len(other["mouth_open"]))
  mismatched = lipsync.lag_correlation(other["mouth_open"][:n], envelope[:n], max_lag=0)["corr_at_zero"]
  assert mismatched < result["corr_at_zero"] - 0.3


# --- missing packages and data -------------------------------------------------------------------

def test_missing_data_and_packages_are_named(monkeypatch):
  monkeypatch.setattr(hs, "SOUND_DIRS", ("/nonexistent/asterisk",))
  install = "apt-get install .*asterisk-core-sounds-en-wav asterisk-core-sounds-en"
  with pytest.raises(FileNotFoundError, match=install):
    hs.plain_prompts()
  monkeypatch.setitem(sys.modules, "pocketsphinx", None)  # import pocketsphinx -> ImportError
  with pytest.raises(ImportError, match="pip install pocketsphinx"):
    forced_alignment._pocketsphinx()
