"""Volume-level FROC with the LUNA16 protocol (numpy only).

Follows the official LUNA16 evaluation script, ``noduleCADEvaluationLUNA16.py`` (``evaluateCAD``,
``computeFROC``, ``computeFROC_bootstrap``); what it does, in the order it is applied:

1. **Scans.** Only the listed scans are evaluated; FPs per scan divide by their number, scans
   without candidates included. Candidates and nodules on other scans are left out (the official
   script never reads them; here each is named in a warning).
2. **At most ``max_per_scan`` candidates per scan** (official: 100). A scan with more keeps the
   candidates whose probability is strictly above its (max_per_scan + 1)-th highest, the official
   rule: where ties straddle the cut, all the tied ones go (so a scan may keep fewer).
3. **Hit.** A candidate hits a finding when the squared distance between their centres (world mm)
   is strictly below the squared radius: ``dx² + dy² + dz² < (d / 2)²`` (official ``dist <
   radiusSquared``), so a centre exactly on the sphere is not a hit. A negative diameter means
   10 mm (official ``if diameter < 0.0: diameter = 10.0``, in both files).
4. **Nodules.** A nodule with at least one hit is detected with the highest probability among its
   hits (official ``maxProb``); its other hits are neither true nor false positives. A candidate
   within the radius of two nodules hits both (official: it is appended to each nodule's matches,
   with the "CAD mark detected two nodules" message).
5. **Excluded findings** (``annotations_excluded.csv``): a candidate that hits one and no nodule
   is ignored, neither TP nor FP (official ``bOtherNodulesAsIrrelevant``); excluded findings are
   never counted as nodules.
6. **False positives**: candidates that hit neither a nodule nor an excluded finding.
7. **Curve** (official ``computeFROC`` through ``sklearn.metrics.roc_curve``): one point per
   distinct probability t, in descending order, (FPs with probability >= t / scans, detected
   nodules with probability >= t / nodules), after the origin (0, 0). Ties in probability are one
   point, so the result does not depend on the order of the rows.
8. **Sensitivity at 1/8, 1/4, 1/2, 1, 2, 4, 8 FPs per scan**: ``np.interp`` along the curve (as the
   official script interpolates its curve; :func:`a3d.evaluation.froc.sensitivity_at`): at an FP
   rate shared by several points, the last of them; past the end of the curve, its last
   sensitivity. **CPM** = the mean of the seven.

Bootstrap intervals over scans: :mod:`a3d.evaluation.froc3d_bootstrap`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from a3d.errors import A3DError
from a3d.evaluation.froc import sensitivity_at

LUNA16_FPS: tuple[float, ...] = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
DEFAULT_MAX_PER_SCAN = 100
UNKNOWN_DIAMETER_MM = 10.0  # a finding with a negative diameter


@dataclass(frozen=True, eq=False)
class Findings:
    """Nodules (or excluded findings): ``seriesuid`` (K strings), ``centers`` (K, 3) world mm
    x y z, ``diameters`` (K,) mm (negative: 10 mm), ``rows`` the source file's line numbers."""

    seriesuid: tuple[str, ...]
    centers: np.ndarray
    diameters: np.ndarray
    rows: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "seriesuid", tuple(str(s) for s in self.seriesuid))
        object.__setattr__(self, "centers", _points(self.centers, len(self.seriesuid), "findings"))
        object.__setattr__(self, "diameters", _values(self.diameters, len(self.seriesuid), "finding diameters"))

    @property
    def radius_squared(self) -> np.ndarray:
        d = np.where(self.diameters < 0, UNKNOWN_DIAMETER_MM, self.diameters)
        return (d / 2.0) ** 2


@dataclass(frozen=True, eq=False)
class Candidates:
    """CAD marks: ``seriesuid`` (M strings), ``centers`` (M, 3) world mm, ``probability`` (M,)."""

    seriesuid: tuple[str, ...]
    centers: np.ndarray
    probability: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "seriesuid", tuple(str(s) for s in self.seriesuid))
        object.__setattr__(self, "centers", _points(self.centers, len(self.seriesuid), "candidates"))
        object.__setattr__(self, "probability", _values(self.probability, len(self.seriesuid), "candidate probabilities"))


def _points(a, n: int, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1, 3) if np.size(a) else np.zeros((0, 3))
    if a.shape[0] != n or not np.isfinite(a).all():
        raise A3DError(f"{what}: expected {n} finite x y z centres, got shape {a.shape}")
    return a


def _values(a, n: int, what: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.shape[0] != n or not np.isfinite(a).all():
        raise A3DError(f"{what}: expected {n} finite numbers, got shape {a.shape}")
    return a


@dataclass(frozen=True, eq=False)
class FROC3DResult:
    """Sensitivities at ``fps`` FPs per scan, ``cpm`` (their mean), the curve and the counts.

    ``curve_*``: the points of step 7, origin first (threshold +inf). ``nodule_index``: the
    evaluated nodules (rows of the annotations), ``nodule_probability``: the probability each is
    detected with (NaN: missed). ``hit_*``/``fp_*`` (scan index and score of each detected nodule
    and each false positive) and ``nodules_per_scan`` are what the bootstrap resamples.
    """

    fps: np.ndarray
    sensitivity: np.ndarray
    cpm: float
    curve_fps: np.ndarray
    curve_sensitivity: np.ndarray
    curve_threshold: np.ndarray
    scans: tuple[str, ...]
    nodule_index: np.ndarray
    nodule_probability: np.ndarray
    counts: dict
    hit_scan: np.ndarray = field(repr=False)
    hit_score: np.ndarray = field(repr=False)
    fp_scan: np.ndarray = field(repr=False)
    fp_score: np.ndarray = field(repr=False)
    nodules_per_scan: np.ndarray = field(repr=False)
    warnings: list[str] = field(default_factory=list)


def _scan_index(scans: Sequence[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for s in scans:
        s = str(s)
        if not s:
            raise A3DError("scans: a seriesuid is empty")
        if s in index:
            raise A3DError(f"scans: seriesuid {s!r} is listed twice")
        index[s] = len(index)
    if not index:
        raise A3DError("scans: no scan to evaluate (FPs per scan would divide by zero)")
    return index


def _unlisted_warning(ids: Sequence[str], what: str) -> str:
    names = sorted(set(ids))
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"{len(ids)} {what} on {len(names)} scan(s) not in the scan list left out: {shown}"


def _locate(ids: Sequence[str], index: dict[str, int], what: str, warnings: list[str] | None) -> np.ndarray:
    """Scan index of each id (-1: not listed, with a warning naming the scans when asked)."""
    idx = np.array([index.get(s, -1) for s in ids], dtype=np.int64)
    if warnings is not None and (idx < 0).any():
        warnings.append(_unlisted_warning([s for s, i in zip(ids, idx) if i < 0], what))
    return idx


def cap_per_scan(scan: np.ndarray, prob: np.ndarray, max_per_scan: int | None) -> np.ndarray:
    """Keep mask of step 2: on a scan with more than ``max_per_scan`` candidates, those strictly
    above the (max_per_scan + 1)-th highest probability of that scan."""
    keep = np.ones(scan.shape[0], dtype=bool)
    if not max_per_scan or scan.size == 0:
        return keep
    order = np.lexsort((-prob, scan))  # by scan, then descending probability
    s_sorted = scan[order]
    first = np.searchsorted(s_sorted, s_sorted, side="left")
    rank = np.arange(order.size) - first  # 0-based rank inside the scan
    cut_at = order[rank == max_per_scan]  # the (max + 1)-th candidate of each over-full scan
    threshold = np.full(int(scan.max()) + 1, -np.inf)
    threshold[scan[cut_at]] = prob[cut_at]
    return prob > threshold[scan]


def _match_scan(cand_xyz, cand_p, nod_xyz, nod_r2, exc_xyz, exc_r2):
    """One scan: (max probability per nodule, NaN if missed; hits per nodule; candidate hits a
    nodule; candidate hits an excluded finding). Distances in the official order dx² + dy² + dz²."""

    def within(xyz, r2):
        d = cand_xyz[:, None, :] - xyz[None, :, :]
        return d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2] < r2[None, :]

    inc, exc = within(nod_xyz, nod_r2), within(exc_xyz, exc_r2)
    best = np.where(inc, cand_p[:, None], -np.inf).max(axis=0, initial=-np.inf)
    best = np.where(np.isfinite(best), best, np.nan)
    return best, inc.sum(axis=0), inc.any(axis=1), exc.any(axis=1)


def _groups(scan: np.ndarray, n_scans: int) -> list[np.ndarray]:
    """Row indices of each scan (stable)."""
    order = np.argsort(scan, kind="stable")
    bounds = np.searchsorted(scan[order], np.arange(n_scans + 1))
    return [order[bounds[i] : bounds[i + 1]] for i in range(n_scans)]


def _listed(f: Findings, scan: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row indices, scan, centres, squared radii) of the findings on listed scans."""
    idx = np.nonzero(scan >= 0)[0]
    return idx, scan[idx], f.centers[idx], f.radius_squared[idx]


def _classify(cs, cx, cp, nod, exc, n_scans: int):
    """Steps 3-6, scan by scan: (probability per nodule, NaN if missed; hits per nodule;
    candidate hits a nodule; candidate hits an excluded finding)."""
    (_, ns, nx, nr2), (_, es, ex, er2) = nod, exc
    nod_prob = np.full(ns.size, np.nan)
    n_matches = np.zeros(ns.size, dtype=np.int64)
    hits_nodule = np.zeros(cs.size, dtype=bool)
    hits_excluded = np.zeros(cs.size, dtype=bool)
    for c, n, e in zip(_groups(cs, n_scans), _groups(ns, n_scans), _groups(es, n_scans)):
        if c.size and (n.size or e.size):
            nod_prob[n], n_matches[n], hits_nodule[c], hits_excluded[c] = _match_scan(
                cx[c], cp[c], nx[n], nr2[n], ex[e], er2[e])
    return nod_prob, n_matches, hits_nodule, hits_excluded


def froc3d(
    annotations: Findings,
    candidates: Candidates,
    scans: Sequence[str],
    excluded: Findings | None = None,
    *,
    fps: Sequence[float] = LUNA16_FPS,
    max_per_scan: int | None = DEFAULT_MAX_PER_SCAN,
) -> FROC3DResult:
    """The LUNA16 FROC of ``candidates`` against ``annotations`` over ``scans`` (module docstring).

    ``excluded``: findings whose candidates are ignored. ``max_per_scan``: None or 0 keeps every
    candidate. With no nodule on the listed scans the sensitivities and CPM are NaN.
    """
    index = _scan_index(scans)
    n_scans = len(index)
    warnings: list[str] = []
    excluded = excluded or Findings((), np.zeros((0, 3)), np.zeros(0))
    nod = _listed(annotations, _locate(annotations.seriesuid, index, "nodule(s)", warnings))
    exc = _listed(excluded, _locate(excluded.seriesuid, index, "excluded finding(s)", None))
    cand_scan = _locate(candidates.seriesuid, index, "candidate(s)", warnings)
    listed = cand_scan >= 0
    keep = listed.copy()
    keep[listed] = cap_per_scan(cand_scan[listed], candidates.probability[listed], max_per_scan)
    cand_idx = np.nonzero(keep)[0]
    cs, cp, cx = cand_scan[cand_idx], candidates.probability[cand_idx], candidates.centers[cand_idx]
    nod_prob, n_matches, hits_nodule, hits_excluded = _classify(cs, cx, cp, nod, exc, n_scans)

    is_fp = ~(hits_nodule | hits_excluded)
    detected = np.isfinite(nod_prob)
    n_nodules = int(nod[0].size)
    thresholds, tp, fp = froc_counts(nod_prob[detected], cp[is_fp])
    curve_sensitivity = tp / n_nodules if n_nodules else np.full(tp.shape, np.nan)
    sensitivity = operating_points(fp / n_scans, curve_sensitivity, fps)
    counts = {
        "n_scans": n_scans,
        "n_nodules": n_nodules,
        "n_candidates": int(cand_idx.size),
        "n_candidates_dropped": int(listed.sum() - cand_idx.size),
        "n_detected": int(detected.sum()),
        "n_false_positives": int(is_fp.sum()),
        "n_ignored_excluded": int((hits_excluded & ~hits_nodule).sum()),
        "n_double_hits": int(np.maximum(n_matches - 1, 0).sum()),
    }
    return FROC3DResult(
        fps=np.asarray(fps, dtype=np.float64), sensitivity=sensitivity,
        cpm=float(np.mean(sensitivity)) if sensitivity.size else math.nan,
        curve_fps=fp / n_scans, curve_sensitivity=curve_sensitivity, curve_threshold=thresholds,
        scans=tuple(index), nodule_index=nod[0], nodule_probability=nod_prob, counts=counts, warnings=warnings,
        hit_scan=nod[1][detected], hit_score=nod_prob[detected], fp_scan=cs[is_fp], fp_score=cp[is_fp],
        nodules_per_scan=np.bincount(nod[1], minlength=n_scans).astype(np.float64),
    )


def froc_counts(hit_score: np.ndarray, fp_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, TPs >= each, FPs >= each): +inf then every distinct score, descending."""
    t = np.unique(np.concatenate([hit_score, fp_score]))[::-1]
    t = np.concatenate([[np.inf], t])
    tp = hit_score.size - np.searchsorted(np.sort(hit_score), t, side="left")
    fp = fp_score.size - np.searchsorted(np.sort(fp_score), t, side="left")
    return t, tp.astype(np.float64), fp.astype(np.float64)


def operating_points(curve_fps: np.ndarray, curve_sensitivity: np.ndarray, fps: Sequence[float]) -> np.ndarray:
    """Step 8 on a curve that starts at the origin (NaN when the sensitivity is undefined)."""
    if curve_sensitivity.size and not np.isfinite(curve_sensitivity).all():
        return np.full(len(fps), np.nan)
    return sensitivity_at(curve_fps[1:], curve_sensitivity[1:], fps)

