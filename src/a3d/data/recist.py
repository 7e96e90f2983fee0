"""DeepLesion-style measurements of a lesion's key-slice mask: RECIST end points and the padded box.

Shared by the synthetic generator (:mod:`a3d.data.synth`) and the importer of labelled volumes
(:mod:`a3d.data.importer`), so that both write the same numbers for the same mask.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: DeepLesion's boxes are the lesion's extremes padded by this many pixels (clipped to the image).
BOX_PAD_PX = 5

__all__ = ["BOX_PAD_PX", "recist_from_mask", "padded_box"]


def recist_from_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RECIST end points (8,) 0-based (long x1 y1 x2 y2, short x3 y3 x4 y4) and diameters (2,) in px.

    Long axis: the longest distance between boundary pixel centres. Short axis: the longest chord
    perpendicular to it (pixel centres binned along the long axis).
    """
    m = (mask > 0).astype(np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise ValueError("empty mask")
    pts = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    if len(pts) > 1500:
        pts = pts[:: int(math.ceil(len(pts) / 1500))]
    d2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmax(d2)), d2.shape)
    p1, p2 = pts[i], pts[j]
    if p1[0] > p2[0] or (p1[0] == p2[0] and p1[1] > p2[1]):
        p1, p2 = p2, p1
    long_len = float(np.hypot(*(p2 - p1)))
    if long_len == 0:
        u = np.array([1.0, 0.0])
    else:
        u = (p2 - p1) / long_len
    v = np.array([-u[1], u[0]])
    ys, xs = np.nonzero(m)
    P = np.stack([xs, ys], 1).astype(np.float64)
    t = np.round((P - p1) @ u).astype(np.int64)
    s = (P - p1) @ v
    order = np.lexsort((s, t))
    t_s, s_s = t[order], s[order]
    starts = np.flatnonzero(np.r_[True, t_s[1:] != t_s[:-1]])
    ends = np.r_[starts[1:], len(t_s)] - 1
    ext = s_s[ends] - s_s[starts]
    k = int(np.argmax(ext))
    q1, q2 = P[order[starts[k]]], P[order[ends[k]]]
    short_len = float(np.hypot(*(q2 - q1)))
    recist = np.array([p1[0], p1[1], p2[0], p2[1], q1[0], q1[1], q2[0], q2[1]], dtype=np.float64)
    return recist, np.array([long_len, short_len])


def padded_box(mask: np.ndarray, pad: int = BOX_PAD_PX) -> np.ndarray:
    """float64 (4,) 0-based x1 y1 x2 y2 (pixel indices, inclusive): the mask's extremes padded by
    ``pad`` pixels, clipped to the image."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        raise ValueError("empty mask")
    h, w = mask.shape
    return np.array([max(xs.min() - pad, 0), max(ys.min() - pad, 0), min(xs.max() + pad, w - 1),
                     min(ys.max() + pad, h - 1)], dtype=np.float64)
