"""Synthetic DeepLesion-format data: CT-like series with 3D lesions, look-alike vessels and a DL_info.csv.

``generate(out, patients, seed, size=512)`` writes

- ``Images_png/<patient:06d>_<study:02d>_<series:02d>/<slice:03d>.png``: 16-bit PNGs, HU + 32768;
- ``DL_info.csv``: all 18 DeepLesion columns (1-based pixel coordinates, like the real file);
- ``masks_true/<image_id>.npz``: the true key-slice lesion masks, same format as ``a3d data masks``
  writes (``masks`` uint8 (N, H, W), ``boxes`` float32 (N, 4) 0-based, lesions in CSV row order,
  noisy rows included), so ``DeepLesionDataset(..., mask_dir="masks_true")`` trains on them and
  GrabCut masks can be scored against them.

Anatomy: an elliptical body (fat rim, soft tissue) in one of three regions (chest: lungs, mediastinum,
heart, spine; abdomen: liver, spleen, kidneys, spine, aorta, bowel; pelvis: bladder, iliac bones),
with smooth texture and Gaussian noise. Lesions are (sometimes two-lobed) ellipsoids in an organ, flattened in z
(semi-axis 3-15 mm) so that 2-mm neighbours show them shrink or end,
with organ-typical contrast (mostly strong, about 10% subtle), long diameters mostly 7.5%-30% of
the image width (10-40 px at 128 px). Look-alikes: tubes (vessels) running through every slice of a
series with the same intensity and calibre as that organ's lesions: on one slice they look like a
round lesion; only the neighbouring slices tell them apart. Slice intervals 1, 1.25, 2, 2.5, 5 mm,
folders span about +-15 mm around the key slices; ~4% rows are flagged Possibly_noisy; a
patient-level 70/15/15 split (at least one val and one test patient when N >= 3). Same seed, same bytes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from a3d.data.dl_info import format_dl_info_row, write_dl_info
from a3d.data.slices import write_png_hu
from a3d.errors import A3DError
from a3d.data._npz import save_npz

__all__ = ["generate", "recist_from_mask", "INTERVALS"]

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


def _split_of(n: int, rng: np.random.Generator) -> list[int]:
    """Patient-level 70/15/15 split codes (1/2/3) for n patients; >= 1 val and test when n >= 3."""
    if n >= 3:
        n_val = max(1, int(round(0.15 * n)))
        n_test = max(1, int(round(0.15 * n)))
    elif n == 2:
        n_val, n_test = 0, 1
    else:
        n_val = n_test = 0
    codes = np.array([1] * (n - n_val - n_test) + [2] * n_val + [3] * n_test)
    return rng.permutation(codes).tolist()


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


def generate(out: str | os.PathLike, patients: int, seed: int, size: int = 512, *, progress: bool = False,
             max_series: int = 3) -> Path:
    """Write a synthetic DeepLesion-format dataset to ``out``; returns ``out`` as a Path.

    Deterministic: the same (patients, seed, size) gives byte-identical files.
    """
    out = Path(out)
    if patients < 1:
        raise A3DError(f"--patients must be >= 1, got {patients}")
    if not 64 <= size <= 1024:
        raise A3DError(f"--size must be within 64..1024, got {size}")
    if patients > 999_999:
        raise A3DError("--patients must be < 1,000,000 (6-digit patient index)")
    root_ss = np.random.SeedSequence(int(seed))
    split_rng = np.random.default_rng(root_ss.spawn(1)[0])
    splits = _split_of(patients, split_rng)
    pss = np.random.SeedSequence([int(seed), 7919]).spawn(patients)
    rows = []
    it = range(patients)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="synth", unit="patient")
    for pi in it:
        rows += _patient(out, pi + 1, splits[pi], np.random.default_rng(pss[pi]), size, max_series)
    write_dl_info(out / "DL_info.csv", rows)
    return out


def _patient(out: Path, pid: int, split: int, rng: np.random.Generator, S: int, max_series: int) -> list:
    gender = "M" if rng.random() < 0.55 else "F"
    age = None if rng.random() < 0.06 else float(int(rng.integers(18, 90)))
    n_series = int(rng.integers(1, max_series + 1))
    rows = []
    study, series = 1, 0
    for k in range(n_series):
        if k > 0 and rng.random() < 0.5:
            study += 1
            series = 0
        series += 1
        rows += _series(out, pid, study, series, split, gender, age, rng, S)
    return rows


def _series(out, pid, study, series_id, split, gender, age, rng, S) -> list:
    region = str(rng.choice(["chest", "abdomen", "pelvis"], p=[0.4, 0.45, 0.15]))
    interval = float(rng.choice(INTERVALS, p=_INTERVAL_P))
    px = float(rng.uniform(0.6, 0.9) * 512 / S)  # mm per pixel
    body, inner, organs, paint = _anatomy(region, S, rng)
    organ_by = {o.name: o for o in organs}
    half = int(math.ceil(15.0 / interval))
    n_keys = 2 if rng.random() < 0.25 else 1
    gap = int(math.ceil(rng.uniform(50, 70) / interval))
    first = int(rng.integers(max(1, half), 80))
    keys = [first + half + g * gap for g in range(n_keys)]
    srange = (first, keys[-1] + half)
    z0 = {"chest": 0.25, "abdomen": 0.5, "pelvis": 0.75}[region] + rng.uniform(-0.08, 0.08)

    zc = (srange[0] + srange[1]) / 2 * interval

    def anatomy(z: float) -> np.ndarray:
        scale = 1.0 + 0.03 * math.sin(z / 37.0)
        img = np.full((S, S), -1000.0, dtype=np.float32)
        _paint(img, body.cx, body.cy, body.a * scale, body.b * scale, 0.0, body.hu)
        _paint(img, inner.cx, inner.cy, inner.a * scale, inner.b * scale, 0.0, inner.hu)
        for e in paint:
            _paint(img, e.cx, e.cy, e.a * scale, e.b * scale, e.angle, e.hu)
        return img

    templates = {k: anatomy(k * interval) for k in keys}
    # lesions per key slice
    names = list(_ORGAN_P[region])
    probs = np.array([_ORGAN_P[region][n] for n in names])
    lesions: list[tuple[int, _Blob, _Organ]] = []
    for key in keys:
        n_les = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
        placed: list[tuple[float, float, float]] = []
        for _ in range(n_les):
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
                if not _inside(inner, cx, cy, margin=a + 2):
                    continue
                if any(math.hypot(cx - x, cy - y) < a + r + 4 for x, y, r in placed):
                    continue
                # a homogeneous background under and around the lesion (no organ boundary through it)
                foot = np.zeros((S, S), bool)
                _paint(np.zeros((S, S), np.float32), cx, cy, a + 3, a + 3, 0.0, 1.0, foot)
                vals = templates[key][foot]
                if vals.size and float(vals.max() - vals.min()) > 60:
                    continue
                break
            else:
                continue
            placed.append((cx, cy, a))
            # flattened in z (3-15 mm semi-axis) so that +-6 mm of context (D=7) sees it shrink or end,
            # unlike the look-alike vessels running through every slice
            c_mm = min(max(a * px * rng.uniform(0.25, 0.6), 3.0), 15.0)
            bg = float(np.median(vals)) if vals.size else None
            blob = _Blob(cx, cy, key * interval + rng.uniform(-0.3, 0.3) * interval, a, b, c_mm,
                         rng.uniform(0, math.pi), _lesion_hu(organ, rng, bg))
            if rng.random() < 0.3:  # a second lobe makes an irregular shape
                la = a * rng.uniform(0.45, 0.7)
                ang = rng.uniform(0, 2 * math.pi)
                blob.lobes.append((math.cos(ang) * a * 0.6, math.sin(ang) * b * 0.6,
                                   rng.uniform(-0.2, 0.2) * blob.c, la, la * rng.uniform(0.7, 1.0),
                                   blob.c * 0.7, rng.uniform(0, math.pi)))
            lesions.append((key, blob, organ))
    # look-alike vessels: through every slice, lesion-like intensity and calibre
    tubes: list[_Tube] = []
    for _ in range(int(rng.integers(1, 4))):
        organ = organ_by[str(rng.choice(names, p=probs))]
        if organ.name == "bone":
            continue
        cx, cy = _sample_point_in(organ.shape, rng, 0.6)
        r = math.exp(rng.uniform(math.log(0.035), math.log(0.09))) * S / 2
        if not _inside(inner, cx, cy, margin=r + 2):
            continue
        if any(math.hypot(cx - x, cy - y) < r + ra + 6 for x, y, ra in placed_all(lesions)):
            continue
        ang = rng.uniform(0, 2 * math.pi)
        drift = rng.uniform(0, 0.15) / px  # px per mm
        tubes.append(_Tube(cx, cy, math.cos(ang) * drift, math.sin(ang) * drift, r, _lesion_hu(organ, rng)))
    noise_sd = float(rng.uniform(8, 18))
    series_dir = f"{pid:06d}_{study:02d}_{series_id:02d}"
    folder = out / "Images_png" / series_dir
    key_masks: dict[int, list[np.ndarray]] = {k: [] for k in keys}
    for n in range(srange[0], srange[1] + 1):
        z = n * interval
        img = anatomy(z)
        img += _smooth_field(S, rng, 6.0) * (img > -500)
        for t in tubes:
            _paint(img, t.cx + t.dx * (z - zc), t.cy + t.dy * (z - zc), t.r, t.r * 0.95, 0.0, t.hu)
        for key, blob, _organ in lesions:
            m = np.zeros((S, S), dtype=bool) if n == key else None
            for sx, sy, a, b, ang in _blob_sections(blob, z):
                _paint(img, sx, sy, a, b, ang, blob.hu, m)
            if m is not None:
                key_masks[key].append(m)
        img += rng.normal(0.0, noise_sd, (S, S)).astype(np.float32)
        write_png_hu(folder / f"{n:03d}.png", np.round(img).astype(np.int32))

    rows = []
    for key in keys:
        ms = []
        boxes = []
        for (k, blob, organ), m in zip([x for x in lesions if x[0] == key], key_masks[key]):
            if not m.any():  # cannot happen (centre on the key slice); keep the CSV consistent anyway
                continue
            recist, diam = recist_from_mask(m)
            recist = np.round(recist, 2)
            ys, xs = np.nonzero(m)
            box = np.array([max(xs.min() - 5, 0), max(ys.min() - 5, 0), min(xs.max() + 5, S - 1),
                            min(ys.max() + 5, S - 1)], dtype=np.float64)
            noisy = bool(rng.random() < 0.04)
            loc = (round(blob.cx / S, 4), round(blob.cy / S, 4),
                   round(min(max(z0 + (key - srange[0]) * interval / 1500.0, 0.0), 1.0), 4))
            rows.append(format_dl_info_row(
                patient=pid, study=study, series=series_id, key_slice=key, recist_1based=recist + 1,
                box_1based=box + 1, diameters_px=np.round(diam, 2), location=loc,
                lesion_type=organ.lesion_type if split != 1 else -1, noisy=noisy, slice_range=srange,
                spacing=(round(px, 6), round(px, 6), interval), image_size=(S, S),
                window=_WINDOWS[organ.window], gender=gender, age=age, split=split))
            ms.append(m.astype(np.uint8))
            boxes.append(box)
        if ms:
            save_npz(out / "masks_true" / f"{series_dir}_{key:03d}.npz", masks=np.stack(ms),
                     boxes=np.stack(boxes).astype(np.float32))
    return rows


def placed_all(lesions):
    return [(b.cx, b.cy, b.a) for _, b, _ in lesions]
