"""FROC on subsets: by slice interval (per image), lesion long diameter and coarse type (per lesion).

Two kinds of subset, because the properties live at two levels:

- Image subsets (slice interval, a property of the key slice's series): the subset keeps the images
  whose interval falls in the bin, with all their lesions and all their predictions; other images
  and their predictions are left out, so FPs per image are counted over the subset's images. This
  is the authors' "<= 2 mm" / "5 mm" analysis (spec section 6: a subset filters the ground truth
  and its images, not the predictions of other images). Images with an unknown interval are in no bin.
- Lesion subsets (long diameter, lesion type, properties of one lesion; an image can hold lesions of
  several kinds): every image and every prediction stay; only the subset's lesions count as ground
  truth. A prediction overlapping (IoU >= threshold) a lesion outside the subset is "neither", not a
  false positive: it found a real lesion. Hence the false positives, and the FP-per-image axis, are
  exactly those of the overall evaluation, and the subset sensitivity at k FPs/image is the fraction
  of the subset's lesions found at the operating point where the detector makes k FPs per image
  overall (the usual per-type / per-size sensitivity of DeepLesion papers). Counting those
  predictions as false positives instead would penalise a detector for finding lesions.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from a3d.evaluation.froc import DEFAULT_FPS, Classification, FROCResult, classify, froc, froc_from_classification
from a3d.evaluation.groundtruth import GroundTruth

# (label, low, high): slice intervals in [low, high] mm (closed, with a 1e-3 mm tolerance).
DEFAULT_INTERVAL_BINS: tuple[tuple[str, float, float], ...] = (("<= 2 mm", 0.0, 2.0), ("5 mm", 5.0, 5.0))
# Long-diameter thresholds in mm: bins [0, 10), [10, 30), [30, inf).
DEFAULT_DIAMETER_THRESHOLDS: tuple[float, ...] = (10.0, 30.0)
LESION_TYPES: dict[int, str] = {
    1: "bone",
    2: "abdomen",
    3: "mediastinum",
    4: "liver",
    5: "lung",
    6: "kidney",
    7: "soft tissue",
    8: "pelvis",
    -1: "unlabelled",
}
_TOL = 1e-3


def diameter_bins(thresholds: Sequence[float] = DEFAULT_DIAMETER_THRESHOLDS) -> list[tuple[str, float, float]]:
    """(label, low, high) half-open [low, high) bins from sorted thresholds, e.g. "< 10 mm", "10-30 mm", ">= 30 mm"."""
    t = sorted(float(x) for x in thresholds)
    if not t:
        return [("all", 0.0, float("inf"))]
    out = [(f"< {t[0]:g} mm", 0.0, t[0])]
    out += [(f"{a:g}-{b:g} mm", a, b) for a, b in zip(t[:-1], t[1:])]
    out.append((f">= {t[-1]:g} mm", t[-1], float("inf")))
    return out


def _arrays(preds_by_image, gt: GroundTruth, images: Sequence[int]):
    pb = [preds_by_image[i][0] for i in images]
    ps = [preds_by_image[i][1] for i in images]
    gb = [gt.images[i].boxes for i in images]
    return pb, ps, gb


def image_subset(preds_by_image, gt: GroundTruth, keep: np.ndarray, fps=DEFAULT_FPS, iou_threshold=0.5) -> FROCResult:
    """FROC over the images where ``keep`` is true (their lesions and predictions only)."""
    idx = np.nonzero(keep)[0]
    pb, ps, gb = _arrays(preds_by_image, gt, idx)
    return froc(pb, ps, gb, fps, iou_threshold=iou_threshold)


def lesion_subset(preds_by_image, gt: GroundTruth, in_subset: list[np.ndarray], fps=DEFAULT_FPS, iou_threshold=0.5) -> FROCResult:
    """FROC over all images counting only lesions flagged in ``in_subset`` (others are ignored)."""
    idx = np.arange(len(gt))
    pb, ps, gb = _arrays(preds_by_image, gt, idx)
    ignore = [~np.asarray(m, dtype=bool) for m in in_subset]
    return froc(pb, ps, gb, fps, iou_threshold=iou_threshold, gt_ignore=ignore)


def _entry(name: str, kind: str, r: FROCResult) -> dict:
    d = r.as_dict()
    return {
        "name": name,
        "kind": kind,
        "n_images": d["n_images"],
        "n_lesions": d["n_lesions"],
        "sensitivity": d["sensitivity"],
        "average": d["average"],
    }


def breakdowns(
    preds_by_image: Sequence[tuple[np.ndarray, np.ndarray]],
    gt: GroundTruth,
    fps: Sequence[float] = DEFAULT_FPS,
    iou_threshold: float = 0.5,
    interval_bins: Sequence[tuple[str, float, float]] = DEFAULT_INTERVAL_BINS,
    diameter_thresholds: Sequence[float] = DEFAULT_DIAMETER_THRESHOLDS,
    lesion_types: Sequence[int] = tuple(LESION_TYPES),
    classification: Classification | None = None,
) -> dict[str, list[dict]]:
    """{"slice_interval": [...], "diameter": [...], "lesion_type": [...]}: one entry per subset.

    ``preds_by_image[i]`` = (boxes, scores) of ``gt.images[i]``. Each entry: name, kind ("image" or
    "lesion"), n_images, n_lesions, sensitivity (list, NaN -> None when the subset has no lesion),
    average. Subsets with no lesion at all are still listed (sensitivities None).
    ``classification``: the overall :func:`classify` result of the same inputs, if already computed
    (its IoU pairs are reused: every subset is derived from it without recomputing overlaps).
    """
    c = classification
    if c is None:
        c = classify([p[0] for p in preds_by_image], [p[1] for p in preds_by_image], [im.boxes for im in gt.images],
                     iou_threshold)
    out: dict[str, list[dict]] = {"slice_interval": [], "diameter": [], "lesion_type": []}
    intervals = np.array([im.slice_interval for im in gt.images], dtype=np.float64)
    for label, lo, hi in interval_bins:
        keep = (intervals >= float(lo) - _TOL) & (intervals <= float(hi) + _TOL)
        out["slice_interval"].append(_entry(label, "image", froc_from_classification(c.images_subset(keep), fps)))
    diam = np.concatenate([im.diameters_mm for im in gt.images]) if len(gt) else np.zeros(0)
    types = np.concatenate([im.lesion_types for im in gt.images]) if len(gt) else np.zeros(0, np.int64)
    for label, lo, hi in diameter_bins(diameter_thresholds):
        inside = (diam >= lo) & (diam < hi)
        out["diameter"].append(_entry(label, "lesion", froc_from_classification(c.ignoring(~inside), fps)))
    for t in lesion_types:
        name = LESION_TYPES.get(int(t), f"type {t}")
        entry = _entry(name, "lesion", froc_from_classification(c.ignoring(types != int(t)), fps))
        entry["type"] = int(t)
        out["lesion_type"].append(entry)
    return out
