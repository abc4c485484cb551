"""Text normalisation applied to both references and ASR hypotheses before WER / CER.

Whisper writes numbers as digits ("press 1", "123") and adds punctuation and casing, while
prompt transcripts often spell numbers out. Both sides go through the same `normalize_text`:
1. Unicode NFKC, then lower case; curly quotes become ASCII quotes.
2. Thousands separators between digits are dropped ("1,000" -> "1000"); "%" -> " percent",
   "&" -> " and "; a "." between digits -> " point " ("2.5" -> "2 point 5").
3. Numbers, each run of digits (with an optional ordinal suffix st/nd/rd/th):
   - 0-100 without a leading zero -> English words: "21" -> "twenty one", "100" -> "one hundred",
     "3rd" -> "third", "21st" -> "twenty first";
   - anything else (leading zero, > 100) -> one word per digit: "123" -> "one two three",
     "007" -> "zero zero seven". This is how phone prompts read extensions and codes; a hypothesis
     that says "one hundred twenty three" for "123" is counted as wrong (a documented limit).
4. Contractions are expanded as Whisper's English normaliser does (Radford et al. 2022, App. C:
   "won't" -> "will not", "can't" -> "can not", "n't" -> " not", "'re" -> " are", "'m" -> " am",
   "'ll" -> " will", "'ve" -> " have", "'d" -> " would"), and "'s" -> " is" after a closed list
   of pronouns and wh-words ("that's" -> "that is"; a possessive "'s" is not an "is"). Remaining
   apostrophes inside words are removed ("party's" -> "partys"), hyphens and every other
   non-alphanumeric character become spaces ("call-forward" -> "call forward").
5. Whitespace is collapsed to single spaces. Spelling variants ("ok"/"okay") are not merged.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = {2: "twenty", 3: "thirty", 4: "forty", 5: "fifty", 6: "sixty", 7: "seventy", 8: "eighty",
         9: "ninety"}
# Cardinal -> ordinal for the irregular last words; the rest take "th" (tens: "ty" -> "tieth").
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
            "nine": "ninth", "twelve": "twelfth"}

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_DECIMAL = re.compile(r"(?<=\d)\.(?=\d)")
_NUMBER = re.compile(r"\d+(?:st|nd|rd|th)?\b|\d+")
_CONTRACTIONS = (
  (re.compile(r"\bwon't\b"), "will not"), (re.compile(r"\bcan't\b"), "can not"),
  (re.compile(r"\bshan't\b"), "shall not"), (re.compile(r"\blet's\b"), "let us"),
  (re.compile(r"n't\b"), " not"), (re.compile(r"'re\b"), " are"), (re.compile(r"'m\b"), " am"),
  (re.compile(r"'ll\b"), " will"), (re.compile(r"'ve\b"), " have"), (re.compile(r"'d\b"), " would"),
  (re.compile(r"\b(it|that|he|she|there|here|what|who|where|how)'s\b"), r"\1 is"),
)
_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")
_NON_WORD = re.compile(r"[^\w\s]|_")


def number_to_words(n: int) -> str:
  """Cardinal English words for 0 <= n <= 100: 42 -> "forty two" (no hyphens, no "and")."""
  if not 0 <= n <= 100:
    raise ValueError(f"number_to_words: {n} is outside 0..100")
  if n == 100:
    return "one hundred"
  if n < 20:
    return _ONES[n]
  tens, ones = divmod(n, 10)
  return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])


def ordinal_words(n: int) -> str:
  """Ordinal English words for 0 <= n <= 100: 21 -> "twenty first", 40 -> "fortieth"."""
  *head, last = number_to_words(n).split()
  if last in _ORDINAL:
    last = _ORDINAL[last]
  elif last.endswith("ty"):
    last = last[:-1] + "ieth"
  else:
    last += "th"
  return " ".join([*head, last])


def _spell_number(match: re.Match) -> str:
  token = match.group(0)
  digits = token.rstrip("stndrh")
  suffix = token[len(digits):]
  small = len(digits) <= 3 and (digits == "0" or not digits.startswith("0")) and int(digits) <= 100
  if small:
    words = ordinal_words(int(digits)) if suffix else number_to_words(int(digits))
  else:  # codes, extensions, years: digit by digit, an ordinal suffix is kept as a word
    words = " ".join(_ONES[int(d)] for d in digits) + (" " + suffix if suffix else "")
  return f" {words} "


def normalize_text(text: str) -> str:
  """The normalised form of `text` (rules in the module docstring); "" for blank input."""
  if not isinstance(text, str):
    raise TypeError(f"normalize_text: expected str, got {type(text).__name__}")
  text = unicodedata.normalize("NFKC", text).lower()
  text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
  text = _THOUSANDS.sub("", text)
  text = text.replace("%", " percent ").replace("&", " and ")
  text = _DECIMAL.sub(" point ", text)
  text = _NUMBER.sub(_spell_number, text)
  for pattern, expansion in _CONTRACTIONS:
    text = pattern.sub(expansion, text)
  text = _APOSTROPHE.sub("", text)
  text = _NON_WORD.sub(" ", text)
  return " ".join(text.split())
