"""Bootstrap intervals of the LUNA16 FROC over scans (official ``computeFROC_bootstrap``).

Resample the scans with replacement, keep the scan count, recompute the curve and read the seven
sensitivities; the interval is the official order statistics of the sorted samples (not
``np.percentile``). numpy only.
"""

from __future__ import annotations

import math

import numpy as np

from a3d.evaluation.froc3d import FROC3DResult, operating_points


def bootstrap_froc3d(r: FROC3DResult, n_bootstrap: int = 1000, seed: int = 0) -> np.ndarray:
    """Sensitivities at ``r.fps`` for ``n_bootstrap`` resamples of the scans: (B, len(fps)).

    Resample b is row b of ``np.random.default_rng(seed).integers(0, S, size=(B, S))`` (S scans);
    a scan drawn w times counts w times: its nodules, hits and false positives are weighted by w,
    the FP rate still divides by S (as the official script's ``len(FROCImList)``). Every resample
    keeps the thresholds of ``r``'s curve, so the curve is the weighted counts at each. A resample
    with no nodule gives NaN.
    """
    S, B = len(r.scans), int(n_bootstrap)
    out = np.full((B, r.fps.size), np.nan)
    if B <= 0:
        return out
    draws = np.random.default_rng(seed).integers(0, S, size=(B, S))
    t = r.curve_threshold
    h_order, f_order = np.argsort(-r.hit_score, kind="stable"), np.argsort(-r.fp_score, kind="stable")
    hs, fs = r.hit_scan[h_order], r.fp_scan[f_order]
    h_end = r.hit_score.size - np.searchsorted(np.sort(r.hit_score), t, side="left")  # hits >= each threshold
    f_end = r.fp_score.size - np.searchsorted(np.sort(r.fp_score), t, side="left")
    rows = max(1, 4_000_000 // max(t.size, hs.size, fs.size, S, 1))
    for s in range(0, B, rows):
        d = draws[s : s + rows]
        b = d.shape[0]
        w = np.bincount((d + np.arange(b)[:, None] * S).ravel(), minlength=b * S).reshape(b, S).astype(np.float64)
        lesions = w @ r.nodules_per_scan
        tp = np.concatenate([np.zeros((b, 1)), np.cumsum(w[:, hs], axis=1)], axis=1)[:, h_end]
        fp = np.concatenate([np.zeros((b, 1)), np.cumsum(w[:, fs], axis=1)], axis=1)[:, f_end]
        for i in np.nonzero(lesions > 0)[0]:
            out[s + i] = operating_points(fp[i] / S, tp[i] / lesions[i], r.fps)
    return out


def _interval(v: np.ndarray, level: float) -> list[float | None]:
    """The official order-statistic interval of the finite samples (``compute_mean_ci``)."""
    v = np.sort(v[np.isfinite(v)])
    if v.size == 0:
        return [None, None]
    pz = (1.0 - level) / 2.0
    lo, hi = int(math.floor(pz * v.size)), min(int(math.floor((1.0 - pz) * v.size)), v.size - 1)
    return [float(v[lo]), float(v[hi])]


def froc3d_ci(r: FROC3DResult, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Bootstrap intervals over scans: {"level", "n_bootstrap", "seed", "n_valid", "sensitivity":
    [[low, high] per FP rate], "cpm": [low, high]}; resamples without a nodule are skipped."""
    samples = bootstrap_froc3d(r, n_bootstrap, seed)
    cpm = samples.mean(axis=1) if samples.shape[1] else np.full(samples.shape[0], np.nan)
    return {
        "level": float(level),
        "n_bootstrap": int(n_bootstrap),
        "seed": int(seed),
        "n_valid": int(np.isfinite(cpm).sum()),
        "sensitivity": [_interval(samples[:, j], level) for j in range(samples.shape[1])],
        "cpm": _interval(cpm, level),
    }
