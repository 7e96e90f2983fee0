"""Synthetic lesions (3D ellipsoids, sometimes two-lobed) and look-alike vessels."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from a3d.data.synth.anatomy import _ORGAN_P, _Layout, _Organ, _inside, _lesion_hu, _paint, _sample_point_in


@dataclass
class _Blob:  # a 3D ellipsoid (possibly two-lobed) lesion
    cx: float
    cy: float
    cz: float  # mm
    a: float  # px
    b: float  # px
    c: float  # mm (z semi-axis)
    angle: float
    hu: float
    lobes: list = field(default_factory=list)  # extra (dx, dy, dz, a, b, c, angle) ellipsoids


@dataclass
class _Tube:  # a vessel: circle-ish cross-section drifting linearly with z
    cx: float
    cy: float
    dx: float  # px per mm
    dy: float
    r: float
    hu: float


def _blob_sections(blob: _Blob, z: float):
    """In-plane ellipses (cx, cy, a, b, angle) of a lesion at height z (mm)."""
    out = []
    parts = [(0.0, 0.0, 0.0, blob.a, blob.b, blob.c, blob.angle)] + list(blob.lobes)
    for dx, dy, dz, a, b, c, ang in parts:
        t = (z - (blob.cz + dz)) / c
        if abs(t) >= 1:
            continue
        s = math.sqrt(1 - t * t)
        out.append((blob.cx + dx, blob.cy + dy, a * s, b * s, ang))
    return out


def _organ_choice(lay: _Layout):
    names = list(_ORGAN_P[lay.region])
    return names, np.array([_ORGAN_P[lay.region][n] for n in names])


def _lesion_site(lay: _Layout, template: np.ndarray, placed: list, rng):
    """(organ, cx, cy, a, b, background values) for one lesion on a key slice, or None after 30 tries:
    inside the body, apart from the lesions already ``placed``, on a homogeneous background."""
    S = lay.S
    organ_by = lay.organ_by
    names, probs = _organ_choice(lay)
    for _attempt in range(30):
        organ = organ_by[str(rng.choice(names, p=probs))]
        if rng.random() < 0.05:
            frac = 0.05
        else:
            frac = math.exp(rng.uniform(math.log(0.075), math.log(0.3)))
        a = frac * S / 2
        if organ.name == "bone":
            a = min(a, 0.6 * organ.shape.b)
        b = a * rng.uniform(0.6, 1.0)
        cx, cy = _sample_point_in(organ.shape, rng, 0.6)
        if not _inside(lay.inner, cx, cy, margin=a + 2):
            continue
        if any(math.hypot(cx - x, cy - y) < a + r + 4 for x, y, r in placed):
            continue
        # a homogeneous background under and around the lesion (no organ boundary through it)
        foot = np.zeros((S, S), bool)
        _paint(np.zeros((S, S), np.float32), cx, cy, a + 3, a + 3, 0.0, 1.0, foot)
        vals = template[foot]
        if vals.size and float(vals.max() - vals.min()) > 60:
            continue
        return organ, cx, cy, a, b, vals
    return None


def _blob(lay: _Layout, key: int, organ: _Organ, cx, cy, a, b, vals, rng) -> _Blob:
    # flattened in z (3-15 mm semi-axis) so that +-6 mm of context (D=7) sees it shrink or end,
    # unlike the look-alike vessels running through every slice
    c_mm = min(max(a * lay.px * rng.uniform(0.25, 0.6), 3.0), 15.0)
    bg = float(np.median(vals)) if vals.size else None
    blob = _Blob(cx, cy, key * lay.interval + rng.uniform(-0.3, 0.3) * lay.interval, a, b, c_mm,
                 rng.uniform(0, math.pi), _lesion_hu(organ, rng, bg))
    if rng.random() < 0.3:  # a second lobe makes an irregular shape
        la = a * rng.uniform(0.45, 0.7)
        ang = rng.uniform(0, 2 * math.pi)
        blob.lobes.append((math.cos(ang) * a * 0.6, math.sin(ang) * b * 0.6,
                           rng.uniform(-0.2, 0.2) * blob.c, la, la * rng.uniform(0.7, 1.0),
                           blob.c * 0.7, rng.uniform(0, math.pi)))
    return blob


def _place_lesions(lay: _Layout, rng) -> list[tuple[int, _Blob, _Organ]]:
    """1-3 lesions per key slice, as (key slice, lesion, organ)."""
    templates = {k: lay.slice_image(k * lay.interval) for k in lay.keys}
    lesions: list[tuple[int, _Blob, _Organ]] = []
    for key in lay.keys:
        n_les = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        placed: list[tuple[float, float, float]] = []
        for _ in range(n_les):
            site = _lesion_site(lay, templates[key], placed, rng)
            if site is None:
                continue
            organ, cx, cy, a, b, vals = site
            placed.append((cx, cy, a))
            lesions.append((key, _blob(lay, key, organ, cx, cy, a, b, vals, rng), organ))
    return lesions


def _place_tubes(lay: _Layout, lesions: list, rng) -> list[_Tube]:
    """Look-alike vessels: through every slice, lesion-like intensity and calibre, apart from the lesions."""
    organ_by = lay.organ_by
    names, probs = _organ_choice(lay)
    placed = [(b.cx, b.cy, b.a) for _, b, _ in lesions]
    tubes: list[_Tube] = []
    for _ in range(int(rng.integers(1, 4))):
        organ = organ_by[str(rng.choice(names, p=probs))]
        if organ.name == "bone":
            continue
        cx, cy = _sample_point_in(organ.shape, rng, 0.6)
        r = math.exp(rng.uniform(math.log(0.035), math.log(0.09))) * lay.S / 2
        if not _inside(lay.inner, cx, cy, margin=r + 2):
            continue
        if any(math.hypot(cx - x, cy - y) < r + ra + 6 for x, y, ra in placed):
            continue
        ang = rng.uniform(0, 2 * math.pi)
        drift = rng.uniform(0, 0.15) / lay.px  # px per mm
        tubes.append(_Tube(cx, cy, math.cos(ang) * drift, math.sin(ang) * drift, r, _lesion_hu(organ, rng)))
    return tubes
