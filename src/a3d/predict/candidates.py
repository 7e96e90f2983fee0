"""3D lesion candidates: detections on adjacent slices joined into one lesion, then described.

Four steps, each a function:

1. :func:`suppress_duplicates`, per slice: a detection is dropped when a higher-scoring one on the
   same slice overlaps it with IoU > ``SUPPRESS_IOU`` or holds at least ``INSIDE_FRACTION`` of its box
   (:func:`a3d.boxes.box_iou`, :func:`a3d.boxes.box_iomin`). The model's own NMS (0.5) keeps
   near-duplicates that, linked to the next slice, would chain neighbouring lesions together.
2. :func:`link_tracks`: one-to-one links between adjacent processed slices: each detection joins
   at most one on the next slice, pairs taken greedily by decreasing IoU among those that overlap
   (IoU > ``link_iou``, or the smaller box at least half covered: a lesion's tip is smaller than its
   middle); interpolated slices are stepped over, a slice that was not run ends the track.
3. :func:`suppress_fragments`: track-level suppression, greedy by max score: a track is a part of a
   higher-scoring track that was kept (a detector's partial boxes of one lesion, overlapping too
   little to be suppressed per slice) when its centre lies inside that track's mask, or when on
   more than half of its slices at least ``TRACK_INSIDE`` of its mask lies inside that track's mask
   on the same slice (a parallel track) or, for a short fragment (at most ``FRAGMENT_SLICES``
   slices) beside a longer track, on the same or an adjacent slice. Its detections are dropped, never merged: only
   kept tracks suppress, so a dropped track can neither chain two others nor bridge two lesions.
4. :func:`candidate_info`: slices, volume, diameters (on the key slice: the one of largest mask
   area), centroid and bounding box in patient (LPS) millimetres.
"""

from __future__ import annotations

import numpy as np

from a3d.boxes import box_area, box_iomin, box_iou
from a3d.data.scans import Scan
from a3d.predict.geometry import interpolated_canonical
from a3d.predict.results import Candidate, Detection

# Two boxes on one slice overlapping as much as one lesion's boxes on adjacent slices do (the link
# threshold's default) are one finding; so is a box lying mostly (70 %) inside a higher-scoring one.
SUPPRESS_IOU = 0.3
INSIDE_FRACTION = 0.7
LINK_IOMIN = 0.5  # a box at least half covered by one on the next slice is linked to it (a tip)
# A track with a fifth of its mask inside a better track's mask on more than half of its slices is
# a part of it: lesions do not interpenetrate, so the masks of two that touch share a rim at most,
# and only on the slices where they touch (boxes would not do: a small lesion touching a big one
# diagonally has a third of its box or more inside the big one's). On a demo model's detections 0.4
# left 93 candidates and 8 of 11 lesions split, 0.2 leaves 73 and 7 (benchmarks/results/candidates.md).
TRACK_INSIDE = 0.2
# A track this short, beside a longer one, may be the detector's stray box at the lesion's end, on
# the slice beyond the longer track's last (overlapping too little to be linked): its masks are
# compared with the longer track's on the same or an adjacent slice.
FRAGMENT_SLICES = 2


def suppress_duplicates(dets: list[Detection]) -> list[Detection]:
    """The detections that survive per-slice suppression (module docstring, step 1), in input order."""
    keep: set[int] = set()
    by_z: dict[int, list[int]] = {}
    for i, d in enumerate(dets):
        by_z.setdefault(d.z, []).append(i)
    for idx in by_z.values():
        idx = sorted(idx, key=lambda i: -dets[i].score)  # stable: ties keep the input order
        boxes = np.stack([dets[i].box for i in idx])
        area = box_area(boxes)
        inter = box_iomin(boxes, boxes) * np.minimum(area[:, None], area[None, :])
        # [n, k]: n is a duplicate of k (overlaps it, or lies mostly inside it)
        dup = (box_iou(boxes, boxes) > SUPPRESS_IOU) | (inter >= INSIDE_FRACTION * area[:, None])
        kept: list[int] = []
        for n in range(len(idx)):
            if not dup[n, kept].any():
                kept.append(n)
        keep.update(idx[n] for n in kept)
    return [d for i, d in enumerate(dets) if i in keep]


def _next_slice(z: int, skipped: set[int]) -> int:
    """The slice after ``z``, stepping over interpolated slices (no source image, never key slices)."""
    z += 1
    while z in skipped:
        z += 1
    return z


def _one_to_one(a: np.ndarray, b: np.ndarray, link_iou: float) -> list[tuple[int, int]]:
    """Pairs (i, j) of boxes ``a`` (N, 4) and ``b`` (M, 4) that overlap, each index used at most once,
    taken by decreasing IoU (greedy assignment)."""
    iou, iomin = box_iou(a, b), box_iomin(a, b)
    ok = (iou > link_iou) | (iomin >= LINK_IOMIN)
    pairs = sorted(zip(*np.nonzero(ok)), key=lambda p: (-iou[p], -iomin[p], p))
    used_a: set[int] = set()
    used_b: set[int] = set()
    out = []
    for i, j in pairs:
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            out.append((int(i), int(j)))
    return out


def link_tracks(dets: list[Detection], processed: set[int], link_iou: float,
                skipped: set[int] = frozenset()) -> list[list[Detection]]:
    """Tracks of detections, one per slice at most, linked one-to-one between each processed slice and
    the next (``skipped``: interpolated slices, stepped over); each track sorted by slice."""
    by_z: dict[int, list[int]] = {}
    for i, d in enumerate(dets):
        by_z.setdefault(d.z, []).append(i)
    track = list(range(len(dets)))  # track id of each detection: its first detection's index
    for z in sorted(by_z):
        zn = _next_slice(z, skipped)
        nxt = by_z.get(zn)
        if not nxt or zn not in processed:
            continue
        cur = by_z[z]
        pairs = _one_to_one(np.stack([dets[i].box for i in cur]), np.stack([dets[j].box for j in nxt]), link_iou)
        for a, b in pairs:
            track[nxt[b]] = track[cur[a]]
    groups: dict[int, list[Detection]] = {}
    for i, d in enumerate(dets):
        groups.setdefault(track[i], []).append(d)
    return [sorted(g, key=lambda d: d.z) for g in groups.values()]


def _inside(track: list[Detection], x: float, y: float, z: float) -> bool:
    """Whether the point (canonical voxel indices) lies in the track's mask (its box without one)."""
    zi, xi, yi = int(round(z)), int(round(x)), int(round(y))
    for d in track:
        if d.z != zi:
            continue
        if d.mask is None:
            return bool(d.box[0] <= xi + 0.5 <= d.box[2] and d.box[1] <= yi + 0.5 <= d.box[3])
        x0, y0 = d.mask_origin
        h, w = d.mask.shape
        return bool(0 <= yi - y0 < h and 0 <= xi - x0 < w and d.mask[yi - y0, xi - x0])
    return False


def _inside_fraction(d: Detection, e: Detection) -> float:
    """The fraction of ``d``'s mask inside ``e``'s (of its box inside ``e``'s box where either has no mask)."""
    if d.mask is None or e.mask is None:
        area = box_area(d.box[None])[0]
        inter = box_iomin(d.box[None], e.box[None])[0, 0] * min(area, box_area(e.box[None])[0])
        return float(inter / area) if area > 0 else 0.0
    (dx, dy), (ex, ey) = d.mask_origin, e.mask_origin
    x0, y0 = max(dx, ex), max(dy, ey)
    x1, y1 = min(dx + d.mask.shape[1], ex + e.mask.shape[1]), min(dy + d.mask.shape[0], ey + e.mask.shape[0])
    if x1 <= x0 or y1 <= y0:
        return 0.0
    both = d.mask[y0 - dy : y1 - dy, x0 - dx : x1 - dx] & e.mask[y0 - ey : y1 - ey, x0 - ex : x1 - ex]
    return float(both.sum() / max(1, d.mask.sum()))


def _mostly_inside(track: list[Detection], other: list[Detection], dz: int, fraction: float) -> bool:
    """Whether on more than half of its slices at least ``fraction`` of the track's mask lies inside
    ``other``'s mask on a slice at most ``dz`` away. A count, not the mean fraction: one small box
    lying wholly inside a neighbour (where two lesions meet) does not make a lesion a part of it."""
    by_z = {d.z: d for d in other}
    inside = [max((_inside_fraction(d, by_z[z]) for z in range(d.z - dz, d.z + dz + 1) if z in by_z), default=0.0)
              for d in track]
    return 2 * sum(f >= fraction for f in inside) > len(inside)


def _part_of(track: list[Detection], kept: list[Detection]) -> bool:
    """Whether ``track`` is a part of the higher-scoring ``kept`` (module docstring, step 3)."""
    cx, cy, cz = _centroid(track)
    dz = 1 if len(track) <= FRAGMENT_SLICES < len(kept) else 0
    return _inside(kept, cx, cy, cz) or _mostly_inside(track, kept, dz, TRACK_INSIDE)


def suppress_fragments(dets: list[Detection], processed: set[int], link_iou: float, scan: Scan) -> list[Detection]:
    """The detections of the tracks (:func:`link_tracks`) that are not parts of a higher-scoring
    track (module docstring, step 3), in input order."""
    tracks = link_tracks(dets, processed, link_iou, interpolated_canonical(scan))
    tracks.sort(key=lambda t: -max(d.score for d in t))
    kept: list[list[Detection]] = []
    for t in tracks:
        if not any(_part_of(t, k) for k in kept):
            kept.append(t)
    keep = {id(d) for t in kept for d in t}
    return [d for d in dets if id(d) in keep]


def group_candidates(dets: list[Detection], processed: set[int], link_iou: float, scan: Scan) -> list[Candidate]:
    """Candidates numbered from 1 by decreasing max score; sets each detection's ``candidate``.
    ``dets`` should already be the survivors of :func:`suppress_duplicates` and :func:`suppress_fragments`
    (``predict_scan`` does so)."""
    skipped = interpolated_canonical(scan)
    cands = [Candidate(0, g) for g in link_tracks(dets, processed, link_iou, skipped)]
    cands.sort(key=lambda c: -max(d.score for d in c.detections))
    for cid, c in enumerate(cands, 1):
        c.id = cid
        for d in c.detections:
            d.candidate = cid
        c.info = candidate_info(c, scan)
    return cands


def _volume_mm3(c: Candidate, scan: Scan) -> float:
    """Sum of its detections' mask areas (one detection per slice) times the slice interval; an
    interpolated slice inside the candidate counts as the mean of its neighbours."""
    area = {d.z: d.measures.get("area_mm2", 0.0) for d in c.detections}
    zs = sorted(area)
    bridged = [(a, b) for a, b in zip(zs, zs[1:]) if b > a + 1]  # only interpolated slices lie between
    return (sum(area.values()) + sum((b - a - 1) * (area[a] + area[b]) / 2 for a, b in bridged)) * scan.spacing[2]


def _centroid(dets: list[Detection]) -> tuple[float, float, float]:
    """Mask-weighted centroid (x, y, z) in canonical voxel indices; the best box's centre without masks."""
    tot = 0.0
    acc = np.zeros(3)
    for d in dets:
        if d.mask is None:
            continue
        ys, xs = np.nonzero(d.mask)
        n = len(xs)
        acc += [xs.sum() + n * (d.mask_origin[0]), ys.sum() + n * d.mask_origin[1], n * d.z]
        tot += n
    if tot > 0:
        cx, cy, cz = acc / tot
        return cx, cy, cz
    best = max(dets, key=lambda d: d.score)
    b = best.box
    return (b[0] + b[2]) / 2 - 0.5, (b[1] + b[3]) / 2 - 0.5, best.z


def _bbox_lps(c: Candidate, scan: Scan, zs: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Corners (min, max) in LPS mm of the box around all its boxes and slices."""
    x1 = min(d.box[0] for d in c.detections)
    y1 = min(d.box[1] for d in c.detections)
    x2 = max(d.box[2] for d in c.detections)
    y2 = max(d.box[3] for d in c.detections)
    # pixel-edge coordinates -> ITK continuous index (voxel centres at integers): minus 0.5
    corners = [scan.physical_point(x - 0.5, y - 0.5, z) for x, y, z in ((x1, y1, zs[0] - 0.5), (x2, y2, zs[-1] + 0.5))]
    return np.minimum(corners[0], corners[1]), np.maximum(corners[0], corners[1])


def measured_detection(c: Candidate) -> Detection:
    """The candidate's key detection, where its diameters are measured: the one of largest mask
    area (the slice where the lesion is largest, as a reader measures it); the higher score on ties."""
    return max(c.detections, key=lambda d: (d.measures.get("area_mm2", 0.0), d.score))


def candidate_info(c: Candidate, scan: Scan) -> dict:
    """JSON-ready description of one candidate (docs/predict.md lists the keys)."""
    sz = scan.spacing[2]
    zs = [d.z for d in c.detections]
    best = max(c.detections, key=lambda d: d.score)
    key = measured_detection(c)
    volume = _volume_mm3(c, scan)
    cx, cy, cz = _centroid(c.detections)
    lo, hi = _bbox_lps(c, scan, zs)
    return {
        "key_detection": key.id,
        "key_slice": key.slice,
        "key_canonical_slice": key.z,
        "max_score": float(best.score),
        "mean_score": float(np.mean([d.score for d in c.detections])),
        "n_detections": len(c.detections),
        "n_slices": len(zs),
        "canonical_slices": [int(zs[0]), int(zs[-1])],
        "slices": sorted({int(d.slice) for d in c.detections}),
        "z_extent_mm": float((zs[-1] - zs[0] + 1) * sz),
        "volume_mm3": float(volume),
        "volume_ml": float(volume / 1000.0),
        "long_axis_mm": float(key.measures.get("long_mm", 0.0)),
        "short_axis_mm": float(key.measures.get("short_mm", 0.0)),
        "measured_on_slice": int(key.slice),
        "centroid_lps": [float(v) for v in scan.physical_point(cx, cy, cz)],
        "centroid_canonical_index": [float(v) for v in (cx, cy, cz)],
        "bbox_lps_min": [float(v) for v in lo],
        "bbox_lps_max": [float(v) for v in hi],
    }
