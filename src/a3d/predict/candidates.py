"""3D lesion candidates: detections on adjacent slices joined into one lesion, then described.

:func:`group_candidates` unions detections on adjacent processed slices whose boxes overlap
(:func:`a3d.boxes.box_iou` above ``link_iou``, or :func:`a3d.boxes.box_iomin` >= 0.5: a lesion's tip
is smaller than its middle); :func:`candidate_info` gives each group its slices, volume, diameters,
centroid and bounding box in patient (LPS) millimetres.
"""

from __future__ import annotations

import numpy as np

from a3d.boxes import box_iomin, box_iou
from a3d.data.scans import Scan
from a3d.predict.geometry import interpolated_canonical
from a3d.predict.results import Candidate, Detection


def _next_slice(z: int, skipped: set[int]) -> int:
    """The slice after ``z``, stepping over interpolated slices (no source image, never key slices)."""
    z += 1
    while z in skipped:
        z += 1
    return z


def _linked_groups(dets: list[Detection], processed: set[int], link_iou: float,
                   skipped: set[int] = frozenset()) -> list[list[Detection]]:
    """Connected components (union-find) of the 'overlaps on the next processed slice' relation;
    ``skipped``: interpolated slices, bridged."""
    parent = list(range(len(dets)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_z: dict[int, list[int]] = {}
    for i, d in enumerate(dets):
        by_z.setdefault(d.z, []).append(i)
    for z, idx in by_z.items():
        zn = _next_slice(z, skipped)
        nxt = by_z.get(zn)
        if not nxt or zn not in processed:
            continue
        ba = np.stack([dets[i].box for i in idx])
        bb = np.stack([dets[j].box for j in nxt])
        link = (box_iou(ba, bb) > link_iou) | (box_iomin(ba, bb) >= 0.5)
        for a, b in zip(*np.nonzero(link)):
            ra, rb = find(idx[a]), find(nxt[b])
            if ra != rb:
                parent[rb] = ra
    groups: dict[int, list[Detection]] = {}
    for i, d in enumerate(dets):
        groups.setdefault(find(i), []).append(d)
    return list(groups.values())


def group_candidates(dets: list[Detection], processed: set[int], link_iou: float, scan: Scan) -> list[Candidate]:
    """Candidates numbered from 1 by decreasing max score; sets each detection's ``candidate``."""
    skipped = interpolated_canonical(scan)
    groups = _linked_groups(dets, processed, link_iou, skipped)
    cands = [Candidate(0, sorted(g, key=lambda d: (d.z, -d.score))) for g in groups]
    cands.sort(key=lambda c: -max(d.score for d in c.detections))
    for cid, c in enumerate(cands, 1):
        c.id = cid
        for d in c.detections:
            d.candidate = cid
        c.info = candidate_info(c, scan)
    return cands


def _volume_mm3(c: Candidate, scan: Scan, zs: list[int]) -> float:
    """Sum over its slices of the union of the candidate's masks on that slice, times the slice
    interval; an interpolated slice inside the candidate counts as the mean of its neighbours."""
    sx, sy, sz = scan.spacing
    area = {}
    for z in zs:
        ds = [d for d in c.detections if d.z == z]
        if len(ds) == 1:
            area[z] = ds[0].measures.get("area_mm2", 0.0)
        else:
            m = np.zeros(scan.hu.shape[1:], dtype=bool)
            for d in ds:
                m |= d.full_mask(m.shape)
            area[z] = float(m.sum()) * sx * sy
    bridged = [(a, b) for a, b in zip(zs, zs[1:]) if b > a + 1]  # only interpolated slices lie between
    return (sum(area.values()) + sum((b - a - 1) * (area[a] + area[b]) / 2 for a, b in bridged)) * sz


def _centroid(c: Candidate, best: Detection) -> tuple[float, float, float]:
    """Mask-weighted centroid (x, y, z) in canonical voxel indices; the best box's centre without masks."""
    tot = 0.0
    acc = np.zeros(3)
    for d in c.detections:
        if d.mask is None:
            continue
        ys, xs = np.nonzero(d.mask)
        n = len(xs)
        acc += [xs.sum() + n * (d.mask_origin[0]), ys.sum() + n * d.mask_origin[1], n * d.z]
        tot += n
    if tot > 0:
        cx, cy, cz = acc / tot
        return cx, cy, cz
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
    """The detection a candidate's diameters come from: the one with the longest long axis."""
    return max(c.detections, key=lambda d: d.measures.get("long_mm", 0.0))


def candidate_info(c: Candidate, scan: Scan) -> dict:
    """JSON-ready description of one candidate (docs/predict.md lists the keys)."""
    sz = scan.spacing[2]
    zs = sorted({d.z for d in c.detections})
    best = max(c.detections, key=lambda d: d.score)
    largest = measured_detection(c)
    volume = _volume_mm3(c, scan, zs)
    cx, cy, cz = _centroid(c, best)
    lo, hi = _bbox_lps(c, scan, zs)
    return {
        "key_detection": best.id,
        "key_slice": best.slice,
        "key_canonical_slice": best.z,
        "max_score": float(best.score),
        "mean_score": float(np.mean([d.score for d in c.detections])),
        "n_detections": len(c.detections),
        "n_slices": len(zs),
        "canonical_slices": [int(zs[0]), int(zs[-1])],
        "slices": sorted({int(d.slice) for d in c.detections}),
        "z_extent_mm": float((zs[-1] - zs[0] + 1) * sz),
        "volume_mm3": float(volume),
        "volume_ml": float(volume / 1000.0),
        "long_axis_mm": float(largest.measures.get("long_mm", 0.0)),
        "short_axis_mm": float(largest.measures.get("short_mm", 0.0)),
        "measured_on_slice": int(largest.slice),
        "centroid_lps": [float(v) for v in scan.physical_point(cx, cy, cz)],
        "centroid_canonical_index": [float(v) for v in (cx, cy, cz)],
        "bbox_lps_min": [float(v) for v in lo],
        "bbox_lps_max": [float(v) for v in hi],
    }
