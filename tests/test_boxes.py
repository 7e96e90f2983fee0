"""a3d.boxes against hand-computed values."""

import numpy as np
import pytest

from a3d.boxes import box_area, box_iomin, box_iou, box_iou_pairs, rescale_boxes


def test_iou_pixel_edges_by_hand():
    a = [[0, 0, 10, 10]]
    b = [[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]
    # overlap 5 x 10 = 50, union 100 + 100 - 50 = 150
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0, 1.0]])


def test_iou_inclusive_pixels_by_hand():
    # DeepLesion convention: 0..9 is 10 px wide; overlap columns 5..9 = 5 px, 10 rows
    np.testing.assert_allclose(box_iou([[0, 0, 9, 9]], [[5, 0, 14, 9]], inclusive=True), [[50 / 150]])
    # touching edges share a pixel column only under the inclusive convention
    assert box_iou([[0, 0, 9, 9]], [[9, 0, 18, 9]], inclusive=True)[0, 0] > 0
    assert box_iou([[0, 0, 9, 9]], [[9, 0, 18, 9]])[0, 0] == 0


def test_iou_degenerate_and_empty():
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)
    assert box_iou([[3, 3, 3, 3]], [[3, 3, 3, 3]])[0, 0] == 0.0
    np.testing.assert_allclose(box_area([[0, 0, 2, 3], [5, 5, 4, 4]]), [6, 0])


def test_iomin_small_box_inside_large():
    np.testing.assert_allclose(box_iomin([[0, 0, 10, 10]], [[2, 2, 4, 4], [8, 8, 12, 12]]), [[1.0, 4 / 16]])


def test_rescale_pixel_centres_and_round_trip():
    # pixel 0's centre (0) maps to pixel 0's centre after doubling: (0 + .5) * 2 - .5 = .5
    np.testing.assert_allclose(rescale_boxes([[0, 0, 3, 1]], (2, 4), (4, 8)), [[0.5, 0.5, 6.5, 2.5]])
    pts = np.random.default_rng(0).uniform(0, 100, (5, 8))
    back = rescale_boxes(rescale_boxes(pts, (100, 120), (512, 300)), (512, 300), (100, 120))
    np.testing.assert_allclose(back, pts)
    assert rescale_boxes(pts, (7, 7), (7, 7)) is not pts


def test_iou_pairs_row_against_row_by_hand():
    """Fails if box_iou_pairs compares other rows than k with k, or ignores ``inclusive``."""
    a = [[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 10, 10]]
    b = [[5, 0, 14, 9], [20, 20, 30, 30], [5, 0, 15, 10]]
    np.testing.assert_allclose(box_iou_pairs(a, b, inclusive=True), [50 / 150, 0.0, 66 / 176])
    np.testing.assert_allclose(box_iou_pairs(a, b), [36 / 126, 0.0, 50 / 150])
    with pytest.raises(ValueError, match="one K"):
        box_iou_pairs(a, b[:2])


def test_rescale_keeps_float32_and_its_arithmetic():
    """Fails if rescale_boxes turns float32 targets into float64 (or computes them in float64 first,
    which moves 1-2 % of the dataset's resized coordinates by one float32 ulp)."""
    pts = np.random.default_rng(1).uniform(0, 128, (1000, 8)).astype(np.float32)
    out = rescale_boxes(pts, (128, 128), (64, 96))
    assert out.dtype == np.float32
    want = pts.copy()
    want[:, 0::2] = (want[:, 0::2] + np.float32(0.5)) * np.float32(96 / 128) - np.float32(0.5)
    want[:, 1::2] = (want[:, 1::2] + np.float32(0.5)) * np.float32(64 / 128) - np.float32(0.5)
    np.testing.assert_array_equal(out, want)
    assert rescale_boxes([[1, 2, 3, 4]], (4, 4), (8, 8)).dtype == np.float64
