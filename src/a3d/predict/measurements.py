"""Measurements of a detection's 2D mask: RECIST-like diameters, area and outline (numpy + cv2)."""

from __future__ import annotations

import numpy as np

# the measurements of a detection without mask pixels
NO_MEASURES = {"long_mm": 0.0, "short_mm": 0.0, "long_axis_px": None, "short_axis_px": None, "area_mm2": 0.0}


def _hull_points_mm(mask: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """(K, 2) convex hull (x, y in mm) of the mask's pixel squares."""
    import cv2  # lazy: keeps `import a3d.predict` light

    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros((0, 2))
    corners = np.concatenate(
        [np.stack([xs + dx, ys + dy], axis=1) for dx in (0, 1) for dy in (0, 1)], axis=0
    ).astype(np.float32)
    hull = cv2.convexHull(corners).reshape(-1, 2).astype(np.float64)
    hull[:, 0] *= sx
    hull[:, 1] *= sy
    return hull


def _short_axis(mask: np.ndarray, sx: float, sy: float, u: np.ndarray) -> tuple[float, np.ndarray]:
    """Longest extent across the unit long-axis direction ``u`` (mm), mask pixels binned along ``u``,
    and its two end points (2, 2) (x, y in mm): at the bin's centre along ``u``."""
    v = np.array([-u[1], u[0]])
    ys, xs = np.nonzero(mask)
    # pixel squares as their 4 corners, in mm
    cx = (xs[:, None] + np.array([0, 1, 0, 1])[None]) * sx
    cy = (ys[:, None] + np.array([0, 0, 1, 1])[None]) * sy
    a_c = (xs + 0.5) * sx * u[0] + (ys + 0.5) * sy * u[1]
    b = cx * v[0] + cy * v[1]
    step = min(sx, sy)
    bins = np.floor((a_c - a_c.min()) / step).astype(np.int64)
    bmin = np.full(bins.max() + 1, np.inf)
    bmax = np.full(bins.max() + 1, -np.inf)
    np.minimum.at(bmin, bins, b.min(axis=1))
    np.maximum.at(bmax, bins, b.max(axis=1))
    extent = np.where(np.isfinite(bmin), bmax - bmin, -np.inf)
    k = int(np.argmax(extent))
    a = a_c.min() + (k + 0.5) * step  # the bin's centre along u
    ends = np.stack([a * u + bmin[k] * v, a * u + bmax[k] * v])
    return float(extent[k]), ends


def diameters(mask: np.ndarray, sx: float, sy: float) -> dict:
    """RECIST-like measurements of a boolean (H, W) mask with pixel spacing ``sx``, ``sy`` mm.

    long: maximum Feret diameter of the mask (pixel squares' convex hull);
    short: the longest chord perpendicular to the long axis (mask pixels binned by their position
    along the long axis, extent across it per bin, pixel squares counted whole).
    Returns long_mm, short_mm, long_axis_px and short_axis_px (two end points x1 y1 x2 y2 each, in
    pixel-edge coordinates: pixel i spans [i, i+1)), area_mm2. The short axis end points are that
    chord's ends at the centre of its bin; the distance between each pair of end points (in mm) is
    the diameter reported.
    """
    area = float(mask.sum()) * sx * sy
    hull = _hull_points_mm(mask, sx, sy)
    if len(hull) < 2:
        return {**NO_MEASURES, "area_mm2": area}
    d = np.linalg.norm(hull[:, None] - hull[None], axis=-1)
    i, j = np.unravel_index(np.argmax(d), d.shape)
    long_mm = float(d[i, j])
    u = (hull[j] - hull[i]) / max(long_mm, 1e-9)
    short_mm, ends = _short_axis(mask, sx, sy, u)
    if short_mm > long_mm:  # a chord across cannot exceed the long axis: shortened about its middle
        mid = ends.mean(axis=0)
        ends = mid + (ends - mid) * (long_mm / short_mm)
        short_mm = long_mm
    scale = np.array([sx, sy])
    long_px = np.concatenate([hull[i] / scale, hull[j] / scale])
    short_px = (ends / scale[None]).ravel()
    return {"long_mm": long_mm, "short_mm": short_mm, "long_axis_px": [float(v) for v in long_px],
            "short_axis_px": [float(v) for v in short_px], "area_mm2": area}


def mask_outline(mask: np.ndarray | None, origin: tuple[int, int]) -> list[list[int]]:
    """Outer boundary of the largest component of a mask crop placed at ``origin`` (x0, y0):
    [[x, y], ...] pixel indices on the slice; [] for no mask."""
    import cv2  # lazy: keeps `import a3d.predict` light

    if mask is None or not mask.any():
        return []
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    c = max(contours, key=cv2.contourArea).reshape(-1, 2)
    x0, y0 = origin
    return [[int(x) + x0, int(y) + y0] for x, y in c]
