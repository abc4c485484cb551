"""The *impacts* subset (Foley / video-to-sound): a ball bouncing on a surface, with the sound of
each contact placed exactly at its contact frame.

Per clip (all drawn from the clip's seed): 1-4 contact frames (>= 8 frames apart, none in the first
or last 3 frames); the ball falls into view, bounces on parabolic arcs between the contacts, and
after the last contact rises on an arc that lands only after the clip ends, so the ground-truth
contacts are the only ones. The surface material sets its colour and texture and the timbre of
each hit: modal synthesis, a sum of exponentially damped sinusoids with material-specific partial
ratios and decay rates (randomly perturbed per hit), plus a short filtered-noise attack. Hit k
starts at sample round(contact_frame_k / fps * sample_rate), exact for 25 fps at 22.05 kHz (882
samples per frame).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.signal

from flowav.data.demo import AUDIO_SAMPLE_RATE, face

if TYPE_CHECKING:
  from flowav.data.demo.build import DemoConfig

MIN_GAP_FRAMES = 8
EDGE_FRAMES = 3  # no contact in the first or last 3 frames
MAX_CONTACTS = 4
_COUNT_WORDS = {1: "once", 2: "twice", 3: "three times", 4: "four times"}


@dataclasses.dataclass(frozen=True)
class Material:
  surface: tuple[int, int, int]  # RGB of the surface
  base_hz: tuple[float, float]  # range of the lowest mode's frequency, drawn per clip
  ratios: tuple[float, ...]  # mode frequencies / lowest mode
  decays: tuple[float, ...]  # amplitude decay rate of each mode, 1/s
  gains: tuple[float, ...]  # relative amplitude of each mode
  noise_s: float  # time constant of the noise attack
  noise_gain: float
  noise_smooth: float  # one-pole low-pass coefficient of the attack noise (0 = white)


MATERIALS: dict[str, Material] = {
  # Free-bar-like inharmonic ratios, long ring.
  "metal": Material((150, 162, 178), (650.0, 1000.0), (1.0, 2.76, 5.40, 8.93),
                    (5.0, 8.0, 12.0, 18.0), (1.0, 0.6, 0.4, 0.25), 0.002, 0.3, 0.0),
  # Low, dull, fast decay.
  "wood": Material((140, 92, 52), (240.0, 420.0), (1.0, 2.43, 3.87, 5.20),
                   (35.0, 50.0, 70.0, 90.0), (1.0, 0.6, 0.35, 0.2), 0.004, 0.6, 0.6),
  # High and bright, medium ring.
  "glass": Material((172, 218, 228), (1400.0, 2100.0), (1.0, 2.32, 4.25, 6.63),
                    (12.0, 18.0, 26.0, 35.0), (1.0, 0.7, 0.5, 0.3), 0.0015, 0.25, 0.0),
  # Very low, very short, noisy.
  "stone": Material((104, 102, 96), (90.0, 170.0), (1.0, 1.73, 2.90, 4.40, 6.10),
                    (60.0, 80.0, 100.0, 130.0, 160.0), (1.0, 0.7, 0.5, 0.35, 0.2), 0.008, 1.0, 0.8),
}

BALL_COLOURS: dict[str, tuple[int, int, int]] = {
  "red": (222, 40, 40), "green": (40, 185, 60), "blue": (50, 85, 225), "yellow": (238, 212, 40),
  "orange": (242, 140, 30), "purple": (150, 60, 195),
}


def make_impact_clip(seed: np.random.SeedSequence | np.random.Generator, cfg: DemoConfig,
                     sample_rate: int = AUDIO_SAMPLE_RATE) -> dict[str, Any]:
  """Makes one impacts clip.

  Args:
    seed: the clip's SeedSequence (or a Generator); everything random comes from it.
    cfg: uses clip_seconds, video_fps and frame_size.
    sample_rate: audio rate in Hz.
  Returns:
    {"frames": [T_v, S, S, 3] uint8, "wav": [N] float32 in [-1, 1], "caption": str,
     "truth": JSON-ready ground truth (contact frames/times/samples, material, ball colour, ...)}.
  """
  rng = np.random.default_rng(seed)
  fps, size = cfg.video_fps, cfg.frame_size
  num_frames = int(round(cfg.clip_seconds * fps))
  num_samples = int(round(cfg.clip_seconds * sample_rate))
  material_name = str(rng.choice(sorted(MATERIALS)))
  material = MATERIALS[material_name]
  colour_name = str(rng.choice(sorted(BALL_COLOURS)))
  contacts = sample_contact_frames(rng, num_frames)
  contact_times = contacts / fps

  floor_y, radius = 0.78 * size, 0.075 * size
  max_height = floor_y - 2 * radius - 0.03 * size  # keep the whole ball in view
  times = np.arange(num_frames) / fps
  heights = ball_heights(contact_times, times, num_frames / fps, max_height, 14.0 * size, rng)
  x_start, x_end = rng.uniform(radius + 2, size - radius - 2, size=2)
  xs = x_start + (x_end - x_start) * times / (num_frames / fps)
  ys = floor_y - radius - heights
  frames = render_frames(ys, xs, radius, floor_y, max_height, material_name,
                         BALL_COLOURS[colour_name], size, rng)

  amplitudes = rng.uniform(0.35, 1.0, size=len(contacts))
  base_hz = float(rng.uniform(*material.base_hz))
  starts = np.round(contact_times * sample_rate).astype(int)
  wav = np.zeros(num_samples, np.float64)
  for start, amplitude in zip(starts, amplitudes):
    hit = impact_sound(material, base_hz, float(amplitude), num_samples - start, sample_rate, rng)
    wav[start:start + len(hit)] += hit
  peak = np.max(np.abs(wav))
  if peak > 0.9:  # overlapping rings may add up; scale the clip, keep relative loudness
    wav *= 0.9 / peak
  article = "an" if colour_name[0] in "aeiou" else "a"
  caption = f"{article} {colour_name} ball hits {material_name} {_COUNT_WORDS[len(contacts)]}"
  truth = {
    "subset": "impacts", "material": material_name, "base_hz": base_hz,
    "ball_colour": colour_name, "ball_rgb": list(BALL_COLOURS[colour_name]),
    "contact_frames": contacts.tolist(), "contact_times_s": contact_times.tolist(),
    "contact_samples": starts.tolist(), "amplitudes": amplitudes.tolist(),
    "ball_y": np.round(ys, 3).tolist(), "ball_x": np.round(xs, 3).tolist(),
    "ball_radius": radius, "floor_y": floor_y,
  }
  return {"frames": frames, "wav": wav.astype(np.float32), "caption": caption, "truth": truth}


def sample_contact_frames(rng: np.random.Generator, num_frames: int) -> np.ndarray:
  """[K] sorted contact frames, 1 <= K <= 4, >= MIN_GAP_FRAMES apart, not within EDGE_FRAMES of
  either end (K is capped by what fits)."""
  first, last = EDGE_FRAMES, num_frames - 1 - EDGE_FRAMES
  if last < first:
    raise ValueError(f"clip of {num_frames} frames is too short for a contact (need > "
                     f"{2 * EDGE_FRAMES} frames)")
  most = min(MAX_CONTACTS, 1 + (last - first) // MIN_GAP_FRAMES)
  count = int(rng.integers(1, most + 1))
  # Stars and bars: sorted free offsets plus the minimum gaps keep every spacing >= the gap.
  slack = last - first - (count - 1) * MIN_GAP_FRAMES
  offsets = np.sort(rng.integers(0, slack + 1, size=count))
  return first + offsets + MIN_GAP_FRAMES * np.arange(count)


def ball_heights(contact_times: np.ndarray, times: np.ndarray, clip_end: float, max_height: float,
                 gravity: float, rng: np.random.Generator) -> np.ndarray:
  """Height of the ball's bottom above the surface, [T] >= 0, zero exactly at the contacts.

  The ball flies parabolic arcs between consecutive contacts. The first arc starts at a virtual
  take-off 0.15-0.6 s before the clip starts and the last lands 0.1-0.9 s after it ends, so the
  only contacts inside the clip are the given ones and height has no other local minimum. Arcs
  whose apex would exceed `max_height` use a lower gravity than `gravity`.
  """
  take_offs = np.concatenate([[-rng.uniform(0.15, 0.6)], contact_times])
  last_landing = max(clip_end + rng.uniform(0.1, 0.3), contact_times[-1] + rng.uniform(0.3, 0.9))
  landings = np.append(contact_times, last_landing)
  heights = np.zeros_like(times, dtype=np.float64)
  for take_off, landing in zip(take_offs, landings):
    span = landing - take_off
    g = min(gravity, 8 * max_height / span**2) * rng.uniform(0.8, 1.0)
    arc = (times >= take_off) & (times <= landing)
    heights[arc] = 0.5 * g * (times[arc] - take_off) * (landing - times[arc])
  return heights


def render_frames(ys: np.ndarray, xs: np.ndarray, radius: float, floor_y: float,
                  max_height: float, material: str, ball_rgb: tuple[int, int, int], size: int,
                  rng: np.random.Generator) -> np.ndarray:
  """Draws the ball (centre ys[t], xs[t]) over the surface with a height-dependent shadow.

  Returns [T, size, size, 3] uint8.
  """
  base = _scene(material, floor_y, size, rng)
  ball = np.asarray(ball_rgb, np.float32)
  highlight = ball + 0.55 * (255.0 - ball)
  frames = np.empty((len(ys), size, size, 3), np.uint8)
  for t, (cy, cx) in enumerate(zip(ys, xs)):
    image = base.copy()
    lift = np.clip((floor_y - radius - cy) / max_height, 0.0, 1.0)
    face.paint_ellipse(image, floor_y + 0.6, cx, 0.3 * radius, radius * (1.2 - 0.5 * lift),
                       (0, 0, 0), alpha=0.55 * (1.0 - 0.7 * lift))
    face.paint_ellipse(image, cy, cx, radius, radius, ball)
    face.paint_ellipse(image, cy - 0.35 * radius, cx - 0.35 * radius, 0.35 * radius,
                       0.35 * radius, highlight, alpha=0.7)
    frames[t] = face.to_uint8(image)
  return frames


def _scene(material: str, floor_y: float, size: int, rng: np.random.Generator) -> np.ndarray:
  """The static background: a dim wall and the textured surface from row floor_y down."""
  image = np.empty((size, size, 3), np.float32)
  wall = np.asarray((34, 38, 52), np.float32) * rng.uniform(0.85, 1.15)
  image[:] = wall * np.linspace(0.8, 1.1, size, dtype=np.float32)[:, None, None]
  rows = np.arange(size, dtype=np.float32)[:, None, None] + 0.5  # [S, 1, 1]
  cols = np.arange(size, dtype=np.float32)[None, :, None] + 0.5  # [1, S, 1]
  cover = np.clip(rows - floor_y, 0.0, 1.0)  # anti-aliased top edge of the surface
  surface = np.broadcast_to(np.asarray(MATERIALS[material].surface, np.float32), (size, size, 3))
  if material == "wood":  # planks: grain stripes across the surface
    surface = surface * (1.0 + 0.13 * np.sin(2 * np.pi * cols / (0.09 * size) + rng.uniform(0, 6)))
  elif material == "stone":  # speckle
    surface = surface + rng.normal(0.0, 9.0, size=(size, size, 1))
  elif material == "metal":  # brushed sheen, brightest near the top edge
    surface = surface * (1.15 - 0.25 * np.clip((rows - floor_y) / (size - floor_y), 0, 1))
  else:  # glass: a bright rim along the edge
    rim = np.exp(-np.maximum(rows - floor_y, 0.0) / 1.2)
    surface = surface + (255.0 - surface) * 0.6 * rim
  image = image * (1.0 - cover) + np.broadcast_to(surface, image.shape) * cover
  return image.astype(np.float32)


def impact_sound(material: Material, base_hz: float, amplitude: float, length: int,
                 sample_rate: int, rng: np.random.Generator) -> np.ndarray:
  """One hit: damped modes plus a noise attack, starting at sample 0.

  Returns [length] float64 with peak about `amplitude`.
  """
  slowest = min(material.decays) * 0.85
  length = min(length, int(np.log(1e4) / slowest * sample_rate) + 1)  # ring until -80 dB
  t = np.arange(length) / sample_rate
  modes = np.zeros(length)
  for ratio, decay, gain in zip(material.ratios, material.decays, material.gains):
    freq = base_hz * ratio * (1.0 + rng.normal(0.0, 0.01))
    if freq >= 0.45 * sample_rate:
      continue
    modes += gain * np.exp(-decay * rng.uniform(0.85, 1.15) * t) * np.sin(2 * np.pi * freq * t)
  modes /= sum(material.gains)
  noise = rng.standard_normal(length) * np.exp(-t / material.noise_s)
  if material.noise_smooth:  # one-pole low-pass: a darker attack for soft materials
    a = material.noise_smooth
    noise = scipy.signal.lfilter([1.0 - a], [1.0, -a], noise)
  hit = modes + material.noise_gain * 0.5 * noise
  return amplitude * hit / max(np.max(np.abs(hit)), 1e-9)
