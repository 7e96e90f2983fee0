"""Synthetic anatomy: a body with organs per region, painted anti-aliased; organ-typical lesion contrast."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

INTERVALS = (1.0, 1.25, 2.0, 2.5, 5.0)
_INTERVAL_P = (0.15, 0.1, 0.15, 0.1, 0.5)
_WINDOWS = {"lung": (-1350.0, 150.0), "bone": (-450.0, 1050.0), "soft": (-175.0, 275.0)}


@dataclass
class _Ellipse:
    cx: float
    cy: float
    a: float  # semi-axis (px) along angle
    b: float
    angle: float  # radians
    hu: float


@dataclass
class _Organ:
    name: str
    shape: _Ellipse
    lesion_type: int
    lesion_hu: tuple  # callable-free description: (low, high) HU for lesions / look-alikes
    window: str


def _coverage(h: int, w: int, e_cx, e_cy, a, b, angle, img_shape):
    """(slices, coverage) of an anti-aliased filled ellipse within its bounding box, or None."""
    H, W = img_shape
    r = max(a, b) + 2
    x0, x1 = max(int(e_cx - r), 0), min(int(e_cx + r) + 2, W)
    y0, y1 = max(int(e_cy - r), 0), min(int(e_cy + r) + 2, H)
    if x0 >= x1 or y0 >= y1 or a <= 0.05 or b <= 0.05:
        return None
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    ca, sa = math.cos(angle), math.sin(angle)
    u = (xs - e_cx) * ca + (ys - e_cy) * sa
    v = -(xs - e_cx) * sa + (ys - e_cy) * ca
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    cov = np.clip(0.5 - (rho - 1.0) * math.sqrt(a * b), 0.0, 1.0)
    return (slice(y0, y1), slice(x0, x1)), cov


def _paint(img, e_cx, e_cy, a, b, angle, hu, mask=None):
    c = _coverage(0, 0, e_cx, e_cy, a, b, angle, img.shape)
    if c is None:
        return
    sl, cov = c
    img[sl] = img[sl] * (1 - cov) + hu * cov
    if mask is not None:
        mask[sl] |= (cov >= 0.5)


def _anatomy(region: str, S: int, rng: np.random.Generator):
    """(body ellipse, fat rim thickness factor, organs list, fixed structures to paint)."""
    cx = S / 2 + rng.uniform(-0.02, 0.02) * S
    cy = S / 2 + rng.uniform(-0.01, 0.03) * S
    ax, ay = rng.uniform(0.40, 0.46) * S, rng.uniform(0.29, 0.35) * S
    body = _Ellipse(cx, cy, ax, ay, 0.0, -100.0)
    inner = _Ellipse(cx, cy, ax * rng.uniform(0.84, 0.9), ay * rng.uniform(0.82, 0.88), 0.0, 45.0)
    spine_c = (cx, cy + 0.62 * ay)
    paint = []  # (ellipse) in order, after body/inner
    organs: list[_Organ] = []
    soft = _Organ("soft tissue", _Ellipse(cx, cy - 0.2 * ay, ax * 0.55, ay * 0.35, 0, 45.0), 7, (-40, 110), "soft")
    if region == "chest":
        for side in (-1, 1):
            lung = _Ellipse(cx + side * 0.45 * ax, cy - 0.05 * ay, 0.36 * ax, 0.72 * ay,
                            side * rng.uniform(0.0, 0.15), rng.uniform(-870, -820))
            paint.append(lung)
            organs.append(_Organ("lung", lung, 5, (-20, 60), "lung"))
        med = _Ellipse(cx, cy - 0.1 * ay, 0.16 * ax, 0.5 * ay, 0.0, -60.0)
        heart = _Ellipse(cx + 0.08 * ax, cy + 0.05 * ay, 0.22 * ax, 0.3 * ay, 0.4, 45.0)
        paint += [med, heart]
        organs.append(_Organ("mediastinum", med, 3, (30, 80), "soft"))
    elif region == "abdomen":
        liver = _Ellipse(cx - 0.35 * ax, cy - 0.15 * ay, 0.42 * ax, 0.55 * ay, rng.uniform(-0.3, 0.1),
                         rng.uniform(95, 120))
        spleen = _Ellipse(cx + 0.55 * ax, cy - 0.1 * ay, 0.17 * ax, 0.3 * ay, 0.5, rng.uniform(100, 125))
        paint += [liver, spleen]
        organs.append(_Organ("liver", liver, 4, (0, 60), "soft"))
        for side in (-1, 1):
            kid = _Ellipse(cx + side * 0.38 * ax, cy + 0.45 * ay, 0.12 * ax, 0.2 * ay, side * 0.4,
                           rng.uniform(140, 180))
            paint.append(kid)
            organs.append(_Organ("kidney", kid, 6, (-5, 40), "soft"))
        for _ in range(int(rng.integers(2, 5))):  # bowel loops: air or fluid
            bw = _Ellipse(cx + rng.uniform(-0.1, 0.5) * ax, cy + rng.uniform(-0.4, 0.2) * ay,
                          rng.uniform(0.05, 0.1) * ax, rng.uniform(0.05, 0.1) * ax, rng.uniform(0, 3),
                          float(rng.choice([-900.0, 15.0])))
            paint.append(bw)
        organs.append(_Organ("abdomen", _Ellipse(cx + 0.15 * ax, cy + 0.1 * ay, 0.3 * ax, 0.3 * ay, 0, 45.0),
                             2, (-40, 130), "soft"))
    else:  # pelvis
        bladder = _Ellipse(cx, cy - 0.1 * ay, 0.3 * ax, 0.35 * ay, 0.0, rng.uniform(5, 20))
        paint.append(bladder)
        for side in (-1, 1):
            ilium = _Ellipse(cx + side * 0.62 * ax, cy + 0.2 * ay, 0.14 * ax, 0.36 * ay, side * -0.5, 450.0)
            paint.append(ilium)
        organs.append(_Organ("pelvis", _Ellipse(cx, cy + 0.2 * ay, 0.35 * ax, 0.3 * ay, 0, 45.0), 8, (-40, 130),
                             "soft"))
    vert = _Ellipse(spine_c[0], spine_c[1], 0.17 * ay, 0.16 * ay, 0.0, 800.0)
    marrow = _Ellipse(spine_c[0], spine_c[1], 0.14 * ay, 0.13 * ay, 0.0, 250.0)
    paint += [vert, marrow]
    organs.append(_Organ("bone", marrow, 1, (-300, -100), "bone"))  # lytic lesions in marrow
    organs.append(soft)
    return body, inner, organs, paint


_ORGAN_P = {
    "chest": {"lung": 0.55, "mediastinum": 0.25, "soft tissue": 0.1, "bone": 0.1},
    "abdomen": {"liver": 0.45, "kidney": 0.2, "abdomen": 0.2, "soft tissue": 0.1, "bone": 0.05},
    "pelvis": {"pelvis": 0.6, "soft tissue": 0.25, "bone": 0.15},
}


def _lesion_hu(organ: _Organ, rng, bg: float | None = None) -> float:
    """Lesion (and look-alike) HU with organ-typical contrast to the local background ``bg``.

    Mostly strong contrast (100-220 HU), about 10% subtle (35-55 HU)."""
    bg = organ.shape.hu if bg is None else bg
    if organ.name == "lung":
        return float(rng.uniform(-10, 60))
    if organ.name == "bone":
        return float(bg - rng.uniform(250, 350) if rng.random() < 0.7 else bg + rng.uniform(400, 600))
    subtle = rng.random() < 0.1
    mag = rng.uniform(35, 55) if subtle else rng.uniform(100, 220)
    if organ.name in ("liver", "kidney"):
        sign = -1.0 if rng.random() < 0.75 else 1.0
    elif organ.name == "mediastinum":
        sign = 1.0
    else:
        sign = 1.0 if rng.random() < 0.7 else -1.0
    return float(bg + sign * mag)


def _sample_point_in(e: _Ellipse, rng, frac: float = 0.7):
    for _ in range(100):
        u, v = rng.uniform(-1, 1, 2)
        if u * u + v * v <= 1:
            break
    ca, sa = math.cos(e.angle), math.sin(e.angle)
    x, y = u * e.a * frac, v * e.b * frac
    return e.cx + x * ca - y * sa, e.cy + x * sa + y * ca


def _inside(e: _Ellipse, x, y, margin=0.0) -> bool:
    ca, sa = math.cos(e.angle), math.sin(e.angle)
    u = (x - e.cx) * ca + (y - e.cy) * sa
    v = -(x - e.cx) * sa + (y - e.cy) * ca
    return math.hypot(u / max(e.a - margin, 1e-3), v / max(e.b - margin, 1e-3)) <= 1


def _smooth_field(S: int, rng, amp: float) -> np.ndarray:
    small = rng.normal(0, 1, (6, 6)).astype(np.float32)
    return cv2.resize(small, (S, S), interpolation=cv2.INTER_CUBIC) * np.float32(amp)


@dataclass
class _Layout:
    """One series: its region's anatomy, slice interval and pixel size, key slices and stored range."""

    S: int  # image side, px
    region: str
    interval: float  # mm between slices
    px: float  # mm per pixel
    body: _Ellipse
    inner: _Ellipse
    organs: list
    paint: list
    keys: list
    srange: tuple[int, int]
    z0: float  # normalised z of the range's first slice

    @property
    def organ_by(self) -> dict:
        return {o.name: o for o in self.organs}

    @property
    def zc(self) -> float:
        return (self.srange[0] + self.srange[1]) / 2 * self.interval

    def slice_image(self, z: float) -> np.ndarray:
        """(S, S) float32 HU of the anatomy alone at height z (mm): it breathes a little along z."""
        S = self.S
        scale = 1.0 + 0.03 * math.sin(z / 37.0)
        img = np.full((S, S), -1000.0, dtype=np.float32)
        _paint(img, self.body.cx, self.body.cy, self.body.a * scale, self.body.b * scale, 0.0, self.body.hu)
        _paint(img, self.inner.cx, self.inner.cy, self.inner.a * scale, self.inner.b * scale, 0.0, self.inner.hu)
        for e in self.paint:
            _paint(img, e.cx, e.cy, e.a * scale, e.b * scale, e.angle, e.hu)
        return img


def _layout(rng: np.random.Generator, S: int) -> _Layout:
    region = str(rng.choice(["chest", "abdomen", "pelvis"], p=[0.4, 0.45, 0.15]))
    interval = float(rng.choice(INTERVALS, p=_INTERVAL_P))
    px = float(rng.uniform(0.6, 0.9) * 512 / S)  # mm per pixel
    body, inner, organs, paint = _anatomy(region, S, rng)
    half = int(math.ceil(15.0 / interval))
    n_keys = 2 if rng.random() < 0.25 else 1
    gap = int(math.ceil(rng.uniform(50, 70) / interval))
    first = int(rng.integers(max(1, half), 80))
    keys = [first + half + g * gap for g in range(n_keys)]
    srange = (first, keys[-1] + half)
    z0 = {"chest": 0.25, "abdomen": 0.5, "pelvis": 0.75}[region] + rng.uniform(-0.08, 0.08)
    return _Layout(S, region, interval, px, body, inner, organs, paint, keys, srange, z0)
