from __future__ import annotations

import numpy as np
import pytest

from flowav.data.demo import face, video_encoder


def test_shape_dtype_and_constant_colour():
  frames = np.zeros((3, 64, 64, 3), np.uint8)
  frames[:] = (255, 0, 51)
  features = video_encoder.encode_frames(frames)
  assert features.shape == (3, video_encoder.FEATURE_DIM) == (3, 256)
  assert features.dtype == np.float32
  colour = features[:, :192].reshape(3, 8, 8, 3)
  np.testing.assert_allclose(colour, np.broadcast_to([1.0, 0.0, 0.2], colour.shape), atol=1e-6)
  np.testing.assert_array_equal(features[:, 192:], 0.0)  # nothing moves


def test_pooling_known_answer_and_layout():
  frames = np.zeros((1, 16, 16, 3), np.uint8)
  frames[0, 0, 0] = (200, 0, 0)  # one pixel in block (0, 0): block mean = 200 / 4 / 255
  frames[0, 15, 14:16, 2] = 255  # block (7, 7), bottom row, blue: 2 of 4 pixels
  colour = video_encoder.encode_frames(frames)[0, :192].reshape(8, 8, 3)
  assert colour[0, 0, 0] == pytest.approx(200 / 4 / 255)
  assert colour[7, 7, 2] == pytest.approx(0.5)
  assert np.count_nonzero(colour) == 2


def test_motion_features_mark_where_things_move():
  frames = np.zeros((3, 64, 64, 3), np.uint8)
  frames[1, 0:8, 56:64] = 255  # a white block appears top-right in frame 1, then vanishes
  motion = video_encoder.encode_frames(frames)[:, 192:].reshape(3, 8, 8)
  np.testing.assert_array_equal(motion[0], 0.0)  # the first frame has no previous frame
  assert motion[1, 0, 7] == pytest.approx(1.0) and motion[2, 0, 7] == pytest.approx(1.0)
  assert np.count_nonzero(motion[1]) == 1


def test_sizes_not_divisible_by_eight():
  frames = np.full((2, 20, 13, 3), 128, np.uint8)
  features = video_encoder.encode_frames(frames)
  np.testing.assert_allclose(features[:, :192], 128 / 255, atol=1e-6)


def test_bad_input_raises():
  with pytest.raises(ValueError, match="uint8"):
    video_encoder.encode_frames(np.zeros((2, 64, 64, 3), np.float32))
  with pytest.raises(ValueError, match="at least 8x8"):
    video_encoder.encode_frames(np.zeros((2, 4, 64, 3), np.uint8))


def test_ellipse_coverage_area_and_clipping():
  rows, cols, cover = face.ellipse_coverage((64, 64), 32.0, 32.0, 10.0, 6.0)
  assert cover.sum() == pytest.approx(np.pi * 10 * 6, rel=0.02)
  assert cover.max() == 1.0 and cover.min() >= 0.0
  _, _, half = face.ellipse_coverage((64, 64), 0.0, 32.0, 10.0, 10.0)  # centred on the top edge
  assert half.sum() == pytest.approx(np.pi * 100 / 2, rel=0.03)
  _, _, none = face.ellipse_coverage((64, 64), -20.0, 32.0, 5.0, 5.0)
  assert none.size == 0


def test_paint_ellipse_blends():
  image = np.zeros((16, 16, 3), np.float32)
  face.paint_ellipse(image, 8.0, 8.0, 4.0, 4.0, (200, 100, 0), alpha=0.5)
  assert image[8, 8].tolist() == [100.0, 50.0, 0.0]
  assert image[0, 0].tolist() == [0.0, 0.0, 0.0]
