"""Raster drawing for the demo clips: anti-aliased ellipses, the talking face of *speech*, and the
pitch guide of *song*.

Shapes are painted into float RGB images [H, W, 3] in [0, 255]. Anti-aliasing supersamples each
pixel on an s x s grid inside the shape's bounding box only, so a small moving shape (a ball, a
mouth) costs little per frame while the static parts are drawn once per clip.
"""

from __future__ import annotations

import dataclasses

import numpy as np

SUPERSAMPLE = 4


def ellipse_coverage(shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float,
                     supersample: int = SUPERSAMPLE
                     ) -> tuple[slice, slice, np.ndarray]:
  """Fraction of each pixel inside an axis-aligned ellipse.

  Pixel (i, j) covers [i, i+1) x [j, j+1); the centre is in the same continuous coordinates.
  Returns:
    (rows, cols, coverage): the bounding-box slices and coverage [h, w] in [0, 1] over them
    (empty slices when the ellipse misses the image).
  """
  height, width = shape
  ry, rx = max(ry, 1e-6), max(rx, 1e-6)
  y0, y1 = max(int(np.floor(cy - ry)), 0), min(int(np.ceil(cy + ry)), height)
  x0, x1 = max(int(np.floor(cx - rx)), 0), min(int(np.ceil(cx + rx)), width)
  if y1 <= y0 or x1 <= x0:
    return slice(0, 0), slice(0, 0), np.zeros((0, 0), np.float32)
  offsets = (np.arange(supersample) + 0.5) / supersample
  ys = ((np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1) - cy) / ry
  xs = ((np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1) - cx) / rx
  inside = (ys[:, None] ** 2 + xs[None, :] ** 2) <= 1.0  # [h*s, w*s]
  cover = inside.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
  return slice(y0, y1), slice(x0, x1), cover.astype(np.float32)


def paint_ellipse(image: np.ndarray, cy: float, cx: float, ry: float, rx: float,
                  colour: tuple[float, float, float] | np.ndarray, alpha: float = 1.0) -> None:
  """Alpha-blends an anti-aliased ellipse of `colour` into `image` [H, W, 3] (in place)."""
  rows, cols, cover = ellipse_coverage(image.shape[:2], cy, cx, ry, rx)
  if cover.size:
    a = (alpha * cover)[..., None]
    image[rows, cols] = image[rows, cols] * (1.0 - a) + np.asarray(colour, np.float32) * a


def to_uint8(image: np.ndarray) -> np.ndarray:
  return np.clip(np.round(image), 0, 255).astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class FaceStyle:
  """How one speaker's face looks (colours RGB 0-255, sizes relative to the frame size)."""
  skin: tuple[int, int, int]
  hair: tuple[int, int, int]
  background: tuple[int, int, int]
  lips: tuple[int, int, int]
  head_height: float = 0.36  # half-height of the head / frame size
  head_aspect: float = 0.80  # half-width / half-height
  eye_gap: float = 0.11  # horizontal distance of each eye from the centre / frame size
  mouth_width: float = 0.13  # half-width of the mouth / frame size


def draw_face(mouth_open: np.ndarray, style: FaceStyle, size: int, fps: float, *,
              rng: np.random.Generator) -> np.ndarray:
  """Renders a talking face, one frame per mouth-openness value.

  Per clip, `rng` draws a small head offset and scale, and random blinks (80 ms each).
  Args:
    mouth_open: [T] openness in [0, 1] (0 = lips closed), one value per frame.
    style: the speaker's face.
    size: frame height and width in pixels.
    fps: frame rate (sets the blink timing).
  Returns:
    [T, size, size, 3] uint8 RGB frames.
  """
  mouth_open = np.clip(np.asarray(mouth_open, np.float32), 0.0, 1.0)
  scale = size * rng.uniform(0.95, 1.05)
  cy = size * 0.52 + rng.uniform(-1.5, 1.5) * size / 64
  cx = size * 0.50 + rng.uniform(-1.5, 1.5) * size / 64
  ry, rx = style.head_height * scale, style.head_height * style.head_aspect * scale
  base = np.empty((size, size, 3), np.float32)
  # A vertical gradient background, lighter at the top.
  shade = np.linspace(1.1, 0.85, size, dtype=np.float32)[:, None, None]
  base[:] = np.asarray(style.background, np.float32) * shade
  paint_ellipse(base, cy - 0.10 * ry, cx, ry * 1.02, rx * 1.08, style.hair)  # hair behind
  paint_ellipse(base, cy + 0.06 * ry, cx, ry * 0.94, rx, style.skin)
  nose = np.asarray(style.skin, np.float32) * 0.82
  paint_ellipse(base, cy + 0.12 * ry, cx, 0.10 * ry, 0.07 * rx, nose)
  blinks = _blink_frames(len(mouth_open), fps, rng)
  eye_y, eye_dx = cy - 0.12 * ry, style.eye_gap * scale
  unit = scale / 64  # pixel sizes below are for a 64-pixel frame
  # Two static faces, eyes open and eyes closed; only the mouth is drawn per frame.
  open_eyes, closed_eyes = base.copy(), base
  for side in (-1, 1):
    paint_ellipse(closed_eyes, eye_y, cx + side * eye_dx, 0.6 * unit, 3.2 * unit, (40, 30, 30))
    paint_ellipse(open_eyes, eye_y, cx + side * eye_dx, 2.6 * unit, 3.4 * unit, (245, 245, 240))
    paint_ellipse(open_eyes, eye_y, cx + side * eye_dx, 1.7 * unit, 1.7 * unit, (30, 30, 40))
  mouth_y, mouth_rx = cy + 0.45 * ry, style.mouth_width * scale
  frames = np.empty((len(mouth_open), size, size, 3), np.uint8)
  for t, openness in enumerate(mouth_open):
    image = (closed_eyes if blinks[t] else open_eyes).copy()
    paint_ellipse(image, mouth_y, cx, (1.4 + 5.2 * openness) * unit, mouth_rx, style.lips)
    if openness > 0.02:
      paint_ellipse(image, mouth_y, cx, 4.6 * openness * unit, 0.8 * mouth_rx, (60, 15, 20))
    frames[t] = to_uint8(image)
  return frames


def _blink_frames(num_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
  """[T] bool: blinks of 80 ms, 1.5-3 s apart, the first within 0.2-1.6 s."""
  closed = np.zeros(num_frames, bool)
  length = max(1, round(0.08 * fps))
  t = rng.uniform(0.2, 1.6)
  while round(t * fps) < num_frames:
    start = round(t * fps)
    closed[start:start + length] = True
    t += rng.uniform(1.5, 3.0)
  return closed


# The pitch guide of the song clips: MIDI notes from the bottom to the top of the frame's strip.
PITCH_GUIDE_MIDI = (40.0, 70.0)
PITCH_GUIDE_PANEL = (28.0, 28.0, 36.0)
PITCH_GUIDE_BAR = (255.0, 215.0, 0.0)


def _bar_half_height(size: int) -> float:
  """Half the guide bar's height in pixels: the bar is one block of the video encoder's 8 x 8 grid."""
  return size / 16


def draw_pitch_guide(frames: np.ndarray, notes: list, fps: float,
                     midi_range: tuple[float, float] = PITCH_GUIDE_MIDI) -> None:
  """Paints a karaoke-style pitch guide (in place) into the right eighth of each frame: a dark
  panel, and while a note sounds at the frame's centre time, a bar whose height gives its pitch.

  The bar is anti-aliased in y and exactly one eighth of the frame high, the height of a block of
  the video encoder's 8 x 8 grid: after area pooling it always spreads over two adjacent blocks in
  shares linear in its position, so the pitch stays readable (a thinner bar inside one block would
  look the same at several pitches).
  Args:
    frames: [T, S, S, 3] uint8 RGB, changed in place.
    notes: [[midi, start_s, end_s, ...], ...] in clip time.
    fps: frame rate.
    midi_range: the MIDI pitches at the bottom and the top of the panel's scale.
  """
  size = frames.shape[1]
  strip = slice(size - size // 8, size)
  lo, hi = midi_range
  outside = [n[0] for n in notes if not lo <= float(n[0]) <= hi]
  if outside:  # the bar would leave the panel and read back as another pitch
    raise ValueError(f"Notes at MIDI {sorted(set(outside))} lie outside the pitch guide's range "
                     f"{midi_range}; pass a wider midi_range.")
  half = _bar_half_height(size)
  rows = np.arange(size, dtype=np.float32)
  times = (np.arange(len(frames)) + 0.5) / fps
  for t, at in enumerate(times):
    panel = np.empty((size, size // 8, 3), np.float32)
    panel[:] = PITCH_GUIDE_PANEL
    sounding = [n[0] for n in notes if n[1] <= at < n[2]]
    if sounding:
      centre = half + (hi - float(sounding[0])) / (hi - lo) * (size - 2 * half)
      # The part of pixel row [r, r + 1) the bar [centre - half, centre + half) covers.
      cover = np.clip(np.minimum(rows + 1, centre + half) - np.maximum(rows, centre - half), 0, 1)
      a = cover[:, None, None]
      panel = panel * (1 - a) + np.asarray(PITCH_GUIDE_BAR, np.float32) * a
    frames[t, :, strip] = to_uint8(panel)


def read_pitch_guide(frames: np.ndarray, midi_range: tuple[float, float] = PITCH_GUIDE_MIDI
                     ) -> np.ndarray:
  """The pitch each frame's guide shows, `[T]` float MIDI (NaN where no bar): the inverse of
  `draw_pitch_guide`, from the bar's coverage per row (its blue channel is 0, the panel's is not)."""
  size = frames.shape[1]
  lo, hi = midi_range
  half = _bar_half_height(size)
  blue = frames[:, :, size - size // 8:, 2].astype(np.float32).mean(axis=2)  # [T, S]
  cover = np.clip(1 - blue / PITCH_GUIDE_PANEL[2], 0, 1)
  total = cover.sum(axis=1)
  centre = (cover * (np.arange(size) + 0.5)).sum(axis=1) / np.maximum(total, 1e-6)
  midi = hi - (centre - half) / (size - 2 * half) * (hi - lo)
  return np.where(total > 0.5, midi, np.nan)
