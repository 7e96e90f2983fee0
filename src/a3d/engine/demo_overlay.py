"""The demo's overlay images: a validation key slice with its ground truth and the model's top
detections, readable at a glance.

- Near-duplicates are merged for display: a detection overlapping a higher-scoring drawn one by
  IoU > :data:`DUPLICATE_IOU` is not drawn; the drawn one's label counts it (``0.83 +2``).
- Score labels never overlap each other or leave the image (:func:`place_labels`); a label that
  could not sit next to its box is joined to it by a thin line.
- A legend band under the slice names the colours, the score threshold and the merge rule.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from a3d.boxes import box_iou
from a3d.errors import A3DError
from a3d.io import atomic_path

GT_COLOR, DET_COLOR, TEXT_COLOR = (0, 200, 0), (0, 0, 255), (230, 230, 230)  # BGR
DUPLICATE_IOU = 0.3
_FONT, _SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.4


def merge_duplicates(boxes: np.ndarray, scores: np.ndarray, min_score: float, max_boxes: int) -> list[tuple[int, int]]:
    """(index, merged count) of the detections to draw: score >= ``min_score``, best first, each
    absorbing the lower-scoring ones that overlap it by IoU > DUPLICATE_IOU; at most ``max_boxes``."""
    order = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] >= min_score]
    kept: list[list[int]] = []
    for i in order:
        owner = next((k for k in kept if box_iou(boxes[k[0]], boxes[i])[0, 0] > DUPLICATE_IOU), None)
        if owner is not None:
            owner[1] += 1
        elif len(kept) < max_boxes:
            kept.append([i, 0])
    return [(i, n) for i, n in kept]


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: np.ndarray, sizes: list[tuple[int, int]], width: int, height: int,
                 margin: int = 2) -> list[tuple[int, int, bool]]:
    """Top-left corner of each label ``sizes[i]`` = (w, h), in order (earlier labels win), so that no
    two labels overlap and each lies inside the ``width`` x ``height`` image; the flag says whether
    it sits next to its box (else a leader line is needed). Tries above and below the box at either
    end, then beside it, then scans the image in rows."""
    taken: list[tuple[int, int, int, int]] = []
    out = []
    for (x1, y1, x2, y2), (w, h) in zip(np.asarray(boxes).astype(int), sizes):
        near = [(x1, y1 - h - margin), (x1, y2 + margin), (x2 - w, y1 - h - margin), (x2 - w, y2 + margin),
                (x2 + margin, y1), (x1 - w - margin, y1)]
        scan = [(x, y) for y in range(0, height - h + 1, h + margin) for x in range(0, width - w + 1, max(1, w // 2))]
        spot, adjacent = None, False
        for k, (x, y) in enumerate(near + scan):
            rect = (x, y, x + w, y + h)
            if 0 <= x and 0 <= y and x + w <= width and y + h <= height and not any(_overlaps(rect, t) for t in taken):
                spot, adjacent = (x, y), k < len(near)
                break
        if spot is None:  # no free room anywhere: the image is full of labels; overlap the first choice
            spot = (min(max(0, x1), width - w), min(max(0, y1 - h - margin), height - h))
        taken.append((spot[0], spot[1], spot[0] + w, spot[1] + h))
        out.append((spot[0], spot[1], adjacent))
    return out


def _legend(width: int, n_gt: int, min_score: float, max_boxes: int) -> np.ndarray:
    lines = [(GT_COLOR, f"ground truth ({n_gt} lesion{'s' if n_gt != 1 else ''})"),
             (DET_COLOR, f"detections: top {max_boxes}, score >= {min_score:g}"),
             (None, f"+n: n overlapping ones (IoU > {DUPLICATE_IOU:g}) merged")]
    band = np.zeros((16 * len(lines) + 6, width, 3), np.uint8)
    for row, (color, text) in enumerate(lines):
        y = 14 + 16 * row
        if color is not None:
            cv2.rectangle(band, (6, y - 9), (18, y + 1), color, 1)
        cv2.putText(band, text, (24, y), _FONT, _SCALE, TEXT_COLOR, 1, cv2.LINE_AA)
    return band


def render_overlay(key: np.ndarray, gt_boxes: np.ndarray, boxes: np.ndarray, scores: np.ndarray, scale: int = 3,
                   min_score: float = 0.05, max_boxes: int = 3) -> np.ndarray:
    """BGR image: ``key`` (H, W) network input in [-50, 205] upscaled ``scale`` times, GT boxes,
    the drawn detections with non-overlapping score labels, and the legend band under it. Boxes in
    ``key``'s pixels."""
    g = np.clip(key + 50.0, 0, 255).astype(np.uint8)
    g = cv2.resize(g, (g.shape[1] * scale, g.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    img = cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)
    height, width = img.shape[:2]
    for b in np.asarray(gt_boxes).reshape(-1, 4):
        x1, y1, x2, y2 = (b * scale).astype(int)
        cv2.rectangle(img, (x1, y1), (x2, y2), GT_COLOR, 1)
    drawn = merge_duplicates(np.asarray(boxes).reshape(-1, 4), np.asarray(scores), min_score, max_boxes)
    px = np.array([boxes[i] * scale for i, _ in drawn]).reshape(-1, 4)
    texts = [f"{scores[i]:.2f}" + (f" +{n}" if n else "") for i, n in drawn]
    sizes = [(s[0][0] + 2, s[0][1] + s[1] + 2) for s in (cv2.getTextSize(t, _FONT, _SCALE, 1) for t in texts)]
    for (x1, y1, x2, y2) in px.astype(int):
        cv2.rectangle(img, (x1, y1), (x2, y2), DET_COLOR, 1)
    for (x, y, adjacent), text, (w, h), b in zip(place_labels(px, sizes, width, height), texts, sizes, px.astype(int)):
        if not adjacent:
            cv2.line(img, (x + w // 2, y + h // 2), (int(b[0]), int(b[1])), DET_COLOR, 1, cv2.LINE_AA)
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), (0, 0, 0), -1)
        cv2.putText(img, text, (x + 1, y + h - 4), _FONT, _SCALE, DET_COLOR, 1, cv2.LINE_AA)
    return np.vstack([img, _legend(width, len(np.asarray(gt_boxes).reshape(-1, 4)), min_score, max_boxes)])


def write_overlay(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise A3DError(f"{path}: could not write the overlay image")
