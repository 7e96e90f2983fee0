"""Overlay images: a canonical slice, windowed, in the radiological view, with its detections drawn."""

from __future__ import annotations

import numpy as np

from a3d.errors import A3DError
from a3d.predict.results import PredictionResult

# BGR, one per candidate id (cycled)
_COLORS = [(0, 255, 255), (255, 128, 0), (0, 255, 0), (255, 0, 255), (0, 128, 255), (255, 255, 0), (128, 0, 255), (0, 0, 255)]
_FONT_SCALE = 0.45


def window_u8(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    """HU -> uint8 grey values for the window ``width``/``level``."""
    lo = level - width / 2
    return (np.clip((hu.astype(np.float32) - lo) / max(width, 1e-6), 0, 1) * 255).round().astype(np.uint8)


def _color(candidate: int) -> tuple[int, int, int]:
    return _COLORS[(candidate - 1) % len(_COLORS)]


def candidate_rgb(candidate: int) -> tuple[int, int, int]:
    """The candidate's colour (R, G, B), the same in the overlays and the report's viewer."""
    b, g, r = _color(candidate)
    return r, g, b


def _text(cv2, img: np.ndarray, text: str, at: tuple[int, int], color) -> None:
    cv2.putText(img, text, at, cv2.FONT_HERSHEY_SIMPLEX, _FONT_SCALE, color, 1, cv2.LINE_AA)


def render_overlay(res: PredictionResult, z: int, min_side: int = 512) -> np.ndarray:
    """BGR image (H', W', 3) of canonical slice ``z`` (radiological view: top anterior, left = patient
    right), square pixels, upscaled to at least ``min_side``, with its detections' masks, boxes and scores."""
    import cv2  # lazy: keeps `import a3d.predict` light

    scan = res.scan
    sx, sy, _ = scan.spacing
    h, w = scan.hu.shape[1:]
    base = min(sx, sy)
    kx, ky = sx / base, sy / base
    k = max(1.0, min_side / max(w * kx, h * ky))
    fx, fy = kx * k, ky * k
    W, H = int(round(w * fx)), int(round(h * fy))
    gray = window_u8(scan.hu[z], *res.settings.window)
    img = cv2.cvtColor(cv2.resize(gray, (W, H), interpolation=cv2.INTER_LINEAR), cv2.COLOR_GRAY2BGR)
    dets = [d for d in res.detections if d.z == z]
    over = img.copy()
    for d in dets:
        if d.mask is not None:
            m = cv2.resize(d.full_mask((h, w)).astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
            over[m > 0] = _color(d.candidate)
            contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(img, contours, -1, _color(d.candidate), 1)
    img = cv2.addWeighted(over, 0.3, img, 0.7, 0)
    for d in dets:
        x1, y1, x2, y2 = d.box
        p1 = (int(round(x1 * fx)), int(round(y1 * fy)))
        p2 = (int(round(x2 * fx)) - 1, int(round(y2 * fy)) - 1)
        cv2.rectangle(img, p1, p2, _color(d.candidate), 1)
        _text(cv2, img, f"C{d.candidate} {d.score:.2f}", (p1[0], max(12, p1[1] - 4)), _color(d.candidate))
    ww, wl = res.settings.window
    _text(cv2, img, f"slice {res.slice_of_canonical[z]}  W{ww:g} L{wl:g}", (6, H - 8), (255, 255, 255))
    for label, at in (("A", (W // 2 - 4, 14)), ("R", (4, H // 2)), ("L", (W - 14, H // 2))):
        _text(cv2, img, label, at, (200, 200, 200))
    return img


def png_bytes(img: np.ndarray) -> bytes:
    import cv2  # lazy: keeps `import a3d.predict` light

    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise A3DError("overlay PNG encoding failed")
    return buf.tobytes()
