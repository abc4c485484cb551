"""The *speech* subset (visual TTS): flite speech of short random sentences, with phone timings,
and a drawn face whose mouth follows them.

flite (CMU, BSD-like licence) runs as a separate program: `flite -voice V -t TEXT -o out.wav
-psdur` writes 16 kHz audio and prints `phone:end_time` pairs (ARPAbet, seconds). Four voices are
the four speakers. Per clip, from the clip's seed: the voice, a sentence from a fixed template and
word list, and a leading offset of 0-0.25 s. A sentence too long for the clip loses words, in a
fixed order, until it fits.

Phone timing is stored as `phone_durations` on the audio latent grid (hop 256 at 22.05 kHz, about
86.13 frames/s): phone k ends at frame round((offset + end_k) * frame_rate); the offset joins the
leading pause; the trailing pause runs to the last latent frame, so the durations sum to T_a.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.signal
import soundfile

from flowav.data.demo import AUDIO_SAMPLE_RATE, programs
from flowav.data.demo.face import FaceStyle, draw_face

if TYPE_CHECKING:
  from flowav.audio.codec import MelCodec
  from flowav.data.demo.build import DemoConfig

# The 39 CMUdict ARPAbet phones plus the pause; id = index + 1 (0 is padding).
PHONES = (
  "aa", "ae", "ah", "ao", "aw", "ay", "b", "ch", "d", "dh", "eh", "er", "ey", "f", "g", "hh", "ih",
  "iy", "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p", "r", "s", "sh", "t", "th", "uh", "uw",
  "v", "w", "y", "z", "zh", "pau",
)
PHONE_IDS = {p: i + 1 for i, p in enumerate(PHONES)}
# flite's US phone set has a few phones outside CMUdict's 39; map each to its nearest one.
_FLITE_EXTRA = {"ax": "ah", "axr": "er", "dx": "t", "el": "l", "em": "m", "en": "n", "nx": "n",
                "hv": "hh", "h#": "pau", "brth": "pau"}

# Mouth openness per phone (a viseme table): open vowels large, other vowels medium, bilabials
# closed, labiodentals nearly closed, other consonants small, silence closed.
_OPEN_VOWELS = ("aa", "ae", "ah", "ao", "aw", "ay")
_OTHER_VOWELS = ("eh", "er", "ey", "ih", "iy", "ow", "oy", "uh", "uw")
MOUTH_OPENNESS = {p: 0.3 for p in PHONES}
MOUTH_OPENNESS.update({p: 0.9 for p in _OPEN_VOWELS})
MOUTH_OPENNESS.update({p: 0.55 for p in _OTHER_VOWELS})
MOUTH_OPENNESS.update({"p": 0.0, "b": 0.0, "m": 0.0, "f": 0.1, "v": 0.1, "pau": 0.0})


@dataclasses.dataclass(frozen=True)
class Voice:
  name: str  # flite voice
  caption: str
  face: FaceStyle


VOICES = (
  Voice("slt", "a woman speaks", FaceStyle(
    skin=(236, 196, 170), hair=(120, 70, 40), background=(96, 140, 170), lips=(190, 80, 90),
    head_height=0.39, head_aspect=0.78, eye_gap=0.105, mouth_width=0.12)),
  Voice("rms", "a man speaks", FaceStyle(
    skin=(200, 150, 115), hair=(40, 32, 28), background=(150, 160, 110), lips=(160, 85, 75),
    head_height=0.41, head_aspect=0.86, eye_gap=0.115, mouth_width=0.14)),
  Voice("awb", "a man with a Scottish accent speaks", FaceStyle(
    skin=(240, 205, 185), hair=(170, 80, 40), background=(120, 110, 150), lips=(185, 100, 95),
    head_height=0.40, head_aspect=0.82, eye_gap=0.11, mouth_width=0.13)),
  Voice("kal16", "a man speaks in a robotic voice", FaceStyle(
    skin=(150, 105, 80), hair=(25, 22, 20), background=(170, 130, 100), lips=(120, 65, 60),
    head_height=0.41, head_aspect=0.80, eye_gap=0.11, mouth_width=0.135)),
)
# Voices beyond flite's, chosen with DemoConfig.speech_voices (the full build): festival's HTS
# voice (flowav.data.demo.festival_voice), run as a separate program like flite.
FESTIVAL_VOICES = (
  Voice("hts_slt", "a woman speaks in a smooth voice", FaceStyle(
    skin=(225, 180, 150), hair=(70, 45, 30), background=(110, 150, 120), lips=(175, 75, 85),
    head_height=0.38, head_aspect=0.76, eye_gap=0.10, mouth_width=0.115)),
)
VOICES_BY_NAME = {v.name: v for v in VOICES + FESTIVAL_VOICES}
DEFAULT_VOICES = tuple(v.name for v in VOICES)  # the default build's speakers

# Sentence template: determiner adjective noun verb adverb. Shorter forms drop words in the order
# of _DROP_ORDER (adverb, adjective, determiner), leaving at least noun + verb.
DETERMINERS = ("the", "a", "my", "your", "this", "that", "one", "our")
ADJECTIVES = ("red", "blue", "green", "small", "big", "old", "young", "happy", "quiet", "loud",
              "warm", "cold", "bright", "dark", "little", "brave", "clever", "gentle")
NOUNS = ("cat", "dog", "bird", "fish", "horse", "child", "boat", "train", "car", "tree", "river",
         "moon", "king", "queen", "farmer", "robot", "baker", "sailor")
VERBS = ("runs", "sleeps", "sings", "jumps", "walks", "waits", "laughs", "swims", "falls",
         "shines", "moves", "smiles", "dances", "rests", "calls", "works")
ADVERBS = ("today", "again", "slowly", "quickly", "loudly", "softly", "away", "now", "alone",
           "outside", "here", "later")
_DROP_ORDER = (4, 1, 0)
# The speaker reference: a fixed sentence (none of the template's words), the same for every clip.
REFERENCE_SENTENCE = "Jackie picks up fresh vegetables and cheese before lunch."
_MAX_OFFSET_S = 0.25


def make_speech_clip(seed: np.random.SeedSequence | np.random.Generator, cfg: DemoConfig,
                     sample_rate: int = AUDIO_SAMPLE_RATE, hop_length: int = 256
                     ) -> dict[str, Any]:
  """Makes one speech clip.

  Args:
    seed: the clip's SeedSequence (or a Generator); everything random comes from it.
    cfg: uses clip_seconds, video_fps and frame_size.
    sample_rate, hop_length: the audio codec's rate and hop (latent frames = N // hop_length).
  Returns:
    {"frames": [T_v, S, S, 3] uint8, "wav": [N] float32, "caption", "transcript": str,
     "voice": str, "phone_ids": [L_p] int32, "phone_durations": [L_p] int32 summing to T_a,
     "mouth_open": [T_v] float32, "truth": JSON-ready ground truth}.
  """
  rng = np.random.default_rng(seed)
  num_samples = int(round(cfg.clip_seconds * sample_rate))
  num_latents = num_samples // hop_length
  num_frames = int(round(cfg.clip_seconds * cfg.video_fps))
  names = tuple(getattr(cfg, "speech_voices", DEFAULT_VOICES))
  voice = VOICES_BY_NAME[names[int(rng.integers(len(names)))]]
  words = [str(rng.choice(pool)) for pool in (DETERMINERS, ADJECTIVES, NOUNS, VERBS, ADVERBS)]
  keep = [True] * len(words)
  for drop in _DROP_ORDER[:int(rng.integers(0, 3))]:  # 5, 4 or 3 words to start with
    keep[drop] = False
  offset = int(round(rng.uniform(0.0, _MAX_OFFSET_S) * sample_rate))
  for drop in (None,) + _DROP_ORDER:
    if drop is not None:
      if not keep[drop]:
        continue
      keep[drop] = False
    text = " ".join(w for w, k in zip(words, keep) if k)
    speech, phones, ends = synthesize(text, voice.name, sample_rate)
    if offset + len(speech) <= num_samples:
      break
  else:
    raise ValueError(f"clip_seconds={cfg.clip_seconds} is too short for speech: {text!r} by "
                     f"{voice.name} takes {len(speech) / sample_rate:.2f} s")
  wav = np.zeros(num_samples, np.float32)
  wav[offset:offset + len(speech)] = speech
  offset_s = offset / sample_rate
  durations = phone_frame_durations(ends + offset_s, sample_rate / hop_length, num_latents)
  starts = np.concatenate([[0.0], ends[:-1] + offset_s])
  ends_clip = np.concatenate([ends[:-1] + offset_s, [cfg.clip_seconds]])
  mouth = mouth_track(phones, starts, ends_clip, num_frames, cfg.video_fps)
  frames = draw_face(mouth, voice.face, cfg.frame_size, cfg.video_fps, rng=rng)
  truth = {
    "subset": "speech", "voice": voice.name, "text": text, "offset_s": offset_s,
    "phones": [{"phone": p, "start_s": round(float(s), 6), "end_s": round(float(e), 6),
                "frames": int(d)} for p, s, e, d in zip(phones, starts, ends_clip, durations)],
    "mouth_open": np.round(mouth.astype(np.float64), 4).tolist(),
  }
  return {
    "frames": frames, "wav": wav, "caption": voice.caption, "transcript": text,
    "voice": voice.name, "phone_ids": np.asarray([PHONE_IDS[p] for p in phones], np.int32),
    "phone_durations": durations, "mouth_open": mouth, "truth": truth,
  }


def synthesize(text: str, voice: str, sample_rate: int = AUDIO_SAMPLE_RATE
               ) -> tuple[np.ndarray, list[str], np.ndarray]:
  """Speaks `text` with a flite voice (or a festival one, FESTIVAL_VOICES).

  Returns:
    (wav [N] float32 at `sample_rate`, phones [L] (PHONES names, first and last 'pau'),
     end times [L] float64 in seconds from the start of wav).
  """
  if voice in {v.name for v in FESTIVAL_VOICES}:
    from flowav.data.demo import festival_voice  # noqa: PLC0415 -- only the full build needs it
    return festival_voice.synthesize(text, sample_rate)
  with tempfile.TemporaryDirectory(prefix="flowav-flite-") as tmp:
    out = os.path.join(tmp, "speech.wav")
    proc = programs.run(["flite", "-voice", voice, "-t", text, "-o", out, "-psdur"],
                        install="apt-get install flite", outputs=[out],
                        needed_by="the speech subset of flowav-demo",
                        what=f"flite -voice {voice} on {text!r}")
    wav, flite_sr = soundfile.read(out, dtype="float32")
  phones, ends = parse_phone_durations(proc.stdout, f"flite -voice {voice} -t {text!r}")
  if wav.ndim != 1:
    wav = wav.mean(axis=1)
  g = math.gcd(sample_rate, int(flite_sr))
  wav = scipy.signal.resample_poly(wav, sample_rate // g, int(flite_sr) // g).astype(np.float32)
  return wav, phones, ends


def parse_phone_durations(output: str, source: str) -> tuple[list[str], np.ndarray]:
  """Parses flite `-psdur` output (`pau:0.184 dh:0.236 ...`) into PHONES names and end times."""
  phones, ends = [], []
  for token in output.split():
    name, sep, end = token.rpartition(":")
    if not sep:
      continue
    try:
      end_s = float(end)
    except ValueError:
      continue
    name = _FLITE_EXTRA.get(name, name)
    if name not in PHONE_IDS:
      raise ValueError(f"{source}: unknown phone {name!r} in flite output")
    phones.append(name)
    ends.append(end_s)
  if not phones or phones[0] != "pau" or phones[-1] != "pau":
    raise ValueError(f"{source}: expected phones framed by 'pau', got {phones}")
  ends = np.asarray(ends, np.float64)
  if np.any(np.diff(ends) < 0):
    raise ValueError(f"{source}: phone end times are not increasing: {ends.tolist()}")
  return phones, ends


def phone_frame_durations(ends_s: np.ndarray, frame_rate: float, num_frames: int) -> np.ndarray:
  """Frames per phone on a latent grid, summing to `num_frames`.

  Phone k ends at frame round(ends_s[k] * frame_rate); the last phone runs to `num_frames`. Where
  rounding would leave a phone without frames, boundaries move by the fewest frames needed to
  give every phone at least one.

  Args:
    ends_s: [L] increasing end times in seconds from the clip start.
  Returns:
    [L] int32 durations >= 1.
  """
  count = len(ends_s)
  if count > num_frames:
    raise ValueError(f"{count} phones do not fit in {num_frames} frames")
  bounds = np.round(np.asarray(ends_s) * frame_rate).astype(np.int64)
  bounds[-1] = num_frames
  for k in range(count):  # at least one frame each, leaving room for the phones after k
    low = (bounds[k - 1] if k else 0) + 1
    bounds[k] = min(max(bounds[k], low), num_frames - (count - 1 - k))
  return np.diff(bounds, prepend=0).astype(np.int32)


def mouth_track(phones: list[str], starts_s: np.ndarray, ends_s: np.ndarray, num_frames: int,
                fps: float) -> np.ndarray:
  """Mouth openness per video frame: the viseme value of each phone, averaged over each frame's
  time span [k / fps, (k + 1) / fps), then smoothed with a [1/4, 1/2, 1/4] kernel.

  Returns [num_frames] float32 in [0, 1].
  """
  values = np.asarray([MOUTH_OPENNESS[p] for p in phones])
  # The integral of the piecewise-constant openness is piecewise linear: exact frame averages.
  knots = np.concatenate([[starts_s[0]], ends_s])
  integral = np.concatenate([[0.0], np.cumsum(values * (ends_s - starts_s))])
  edges = np.arange(num_frames + 1) / fps
  per_frame = np.diff(np.interp(edges, knots, integral)) * fps
  padded = np.pad(per_frame, 1, mode="edge")
  smooth = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
  return np.clip(smooth, 0.0, 1.0).astype(np.float32)


_EMBEDDINGS: dict[tuple[str, str], np.ndarray] = {}


def speaker_embedding(voice: str, codec: MelCodec) -> np.ndarray:
  """The voice's speaker embedding: the mean log-mel [C] (codec latents averaged over time) of
  REFERENCE_SENTENCE spoken by it. Cached per process and codec. Returns [C] float32."""
  key = (voice, json.dumps(codec.to_dict(), sort_keys=True))
  if key not in _EMBEDDINGS:
    wav = synthesize(REFERENCE_SENTENCE, voice, codec.sample_rate)[0]
    _EMBEDDINGS[key] = codec.encode(wav).mean(axis=0).astype(np.float32)
  return _EMBEDDINGS[key]
