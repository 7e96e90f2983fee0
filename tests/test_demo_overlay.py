"""The demo's overlays: near-duplicate detections merged, score labels that never overlap, a legend."""

from __future__ import annotations

import numpy as np

from a3d.engine.demo_overlay import DET_COLOR, GT_COLOR, merge_duplicates, place_labels, render_overlay


def _iou(a, b) -> float:
    """Pixel-edge IoU written out (independent of a3d.boxes)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_near_duplicates_are_merged_into_the_best_box():
    """Boxes stacked on one lesion are drawn once, the best one, counting the others; a box below
    the score threshold is not drawn; at most max_boxes are drawn.

    Fails if the IoU test is inverted or lower-scoring boxes can take over a cluster."""
    boxes = np.array([[10, 10, 30, 30], [11, 10, 31, 31], [50, 50, 70, 70], [12, 12, 29, 32], [80, 80, 90, 90],
                      [0, 60, 10, 70]], float)
    scores = np.array([0.8, 0.9, 0.7, 0.6, 0.01, 0.5])
    assert _iou(boxes[0], boxes[1]) > 0.3 and _iou(boxes[3], boxes[1]) > 0.3 and _iou(boxes[2], boxes[1]) == 0
    assert merge_duplicates(boxes, scores, min_score=0.05, max_boxes=3) == [(1, 2), (2, 0), (5, 0)]
    assert merge_duplicates(boxes, scores, min_score=0.05, max_boxes=1) == [(1, 2)]


def test_labels_never_overlap_and_stay_inside():
    """For clusters of boxes (the case that garbled the old overlays), every label lies inside the
    image and no two labels intersect; a label next to its box is flagged as adjacent.

    Fails if place_labels stops checking the labels already placed."""
    rng = np.random.default_rng(0)
    for _ in range(30):
        centre = rng.uniform(60, 320, 2)
        n = int(rng.integers(2, 9))
        xy = centre + rng.normal(0, 12, (n, 2))
        wh = rng.uniform(15, 60, (n, 2))
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1).clip(0, 383)
        sizes = [(int(rng.integers(30, 60)), 14) for _ in range(n)]
        spots = place_labels(boxes, sizes, 384, 384)
        rects = [(x, y, x + w, y + h) for (x, y, _), (w, h) in zip(spots, sizes)]
        for i, a in enumerate(rects):
            assert 0 <= a[0] and 0 <= a[1] and a[2] <= 384 and a[3] <= 384
            for b in rects[i + 1:]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    (x, y, adjacent), = place_labels(np.array([[100, 100, 150, 150]]), [(40, 14)], 384, 384)
    assert adjacent and (x, y) == (100, 100 - 14 - 2)  # the first choice: above the box, left-aligned


def test_overlay_has_a_legend_band_with_both_colours():
    """The image is the upscaled slice plus a legend band below it holding the GT and detection swatches."""
    key = np.zeros((64, 64), np.float32)
    img = render_overlay(key, np.array([[10, 10, 20, 20]]), np.array([[30, 30, 40, 40]]), np.array([0.9]), scale=3)
    assert img.shape[1] == 192 and img.shape[0] > 192
    band = img[192:]
    for color in (GT_COLOR, DET_COLOR):
        assert (band == np.array(color, np.uint8)).all(axis=2).any(), color
    slice_part = img[:192]
    assert (slice_part == np.array(DET_COLOR, np.uint8)).all(axis=2).any()  # the detection box is drawn
