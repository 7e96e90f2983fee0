"""Bootstrap confidence intervals of the DeepLesion FROC, resampling images (see :mod:`a3d.evaluation.froc`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from a3d.evaluation.froc import DEFAULT_FPS, Classification


def _resample_weights(n_images: int, n_bootstrap: int, seed: int) -> np.ndarray:
    """(B, N): how many times resample b draws image i (``default_rng(seed).integers(0, N, (B, N))``, row b)."""
    draws = np.random.default_rng(seed).integers(0, n_images, size=(n_bootstrap, n_images))
    draws += np.arange(n_bootstrap, dtype=draws.dtype)[:, None] * n_images
    counts = np.bincount(draws.ravel(), minlength=n_bootstrap * n_images)
    return counts.reshape(n_bootstrap, n_images).astype(np.float64)


@dataclass
class _Events:
    """The hit and false-positive events of a classification, laid out for weighted counting.

    Hits: positions ``hit_img`` (image of each hit event) and ``hit_n`` (boxes it hits). False
    positives: ``hits_before_fp`` (hit events strictly before each FP), grouped in ``nblk`` blocks of
    ``K``; ``M`` (N, nblk) counts each image's FPs per block, ``fp_blocks`` (nblk, K) the image of
    each FP (N, a zero-weight column, for padding).
    """

    hit_img: np.ndarray
    hit_n: np.ndarray
    hits_before_fp: np.ndarray
    K: int = 0
    nblk: int = 0
    M: np.ndarray | None = None
    fp_blocks: np.ndarray | None = None

    @property
    def n_hits(self) -> int:
        return int(self.hit_img.size)

    @property
    def n_fps(self) -> int:
        return int(self.hits_before_fp.size)


def _events(c: Classification) -> _Events:
    N = c.n_images
    hit_pos = np.nonzero(c.new_hits)[0]
    # (N, H) would be large; hits are few (at most the lesions), so weight them by gathering.
    ev = _Events(c.image[hit_pos], c.new_hits[hit_pos].astype(np.float64), np.zeros(0, np.int64))
    fp_pos = np.nonzero(c.is_fp)[0]
    F = fp_pos.size
    ev.hits_before_fp = np.searchsorted(hit_pos, fp_pos)
    if F:
        K = max(16, int(np.sqrt(F)) + 1)  # block size
        nblk = -(-F // K)
        fp_img = np.full(nblk * K, N, dtype=np.int64)  # padding points at a zero-weight column
        fp_img[:F] = c.image[fp_pos]
        blk = np.arange(F) // K
        ev.M = np.bincount(fp_img[:F] * nblk + blk, minlength=N * nblk).reshape(N, nblk).astype(np.float64)
        ev.K, ev.nblk, ev.fp_blocks = K, nblk, fp_img.reshape(nblk, K)
    return ev


def _hit_index(w: np.ndarray, ev: _Events, limits: np.ndarray) -> np.ndarray:
    """(b, Q): per resample (weights ``w`` (b, N)) and FP limit, how many hit events come before the
    false positive that takes the weighted FP count above the limit (all of them if none does)."""
    b, Q, H, F = w.shape[0], limits.size, ev.n_hits, ev.n_fps
    if not F:
        return np.full((b, Q), H)
    K, nblk = ev.K, ev.nblk
    per_blk = w @ ev.M  # (b, nblk) FP weight per block
    cum_blk = np.cumsum(per_blk, axis=1)
    span = float(max(cum_blk[:, -1].max(), limits.max())) + 1.0
    off = np.arange(b)[:, None] * span
    # blocks entirely within the limit, per row and x
    kb = np.searchsorted((cum_blk + off).ravel(), (off + limits[None, :]).ravel(), side="right")
    kb = kb.reshape(b, Q) - np.arange(b)[:, None] * nblk
    inside = kb >= nblk  # the whole FP list is within the limit: all hits count
    kbc = np.minimum(kb, nblk - 1)
    before = np.take_along_axis(cum_blk - per_blk, kbc, axis=1)  # FP weight before the block
    w_ext = np.concatenate([w, np.zeros((b, 1))], axis=1)
    fp_img = ev.fp_blocks[kbc]  # (b, Q, K) image of each FP in the block
    cw = before[..., None] + np.cumsum(np.take_along_axis(w_ext[:, None, :], fp_img, axis=2), axis=2)
    j = (cw <= limits[None, :, None]).sum(axis=2)  # FPs of the block within the limit
    e = np.minimum(kbc * K + j, F - 1)  # the FP that crosses the limit
    return np.where(inside, H, ev.hits_before_fp[e])


def bootstrap_sensitivities(c: Classification, fps: Sequence[float] = DEFAULT_FPS, n_bootstrap: int = 1000,
                            seed: int = 0, rows_per_chunk: int = 256) -> np.ndarray:
    """Sensitivities at ``fps`` for ``n_bootstrap`` resamples of the images (with replacement).

    Returns (n_bootstrap, len(fps)). Resample b draws N images uniformly with replacement
    (``np.random.default_rng(seed).integers(0, N, size=(n_bootstrap, N))``, row b); image i then
    appears w_i times. Its FROC is that of the pooled predictions with every prediction repeated
    w_i times: per-prediction classes are per image, so they do not change, and false positives and
    hits are the classes weighted by w. The copies of one prediction are processed together, which
    equals evaluating the duplicated image list exactly whenever no two scores tie.

    Uses the step form of the interpolation (:mod:`a3d.evaluation.froc`, step 4): the sensitivity at
    x is the weighted hits before the first false positive that takes the weighted FP count above
    floor(x * N). That false positive is found in two stages: FPs are grouped in blocks of ~sqrt(F);
    one matrix product gives every resample's FP weight per block, a cumulative sum and a
    ``searchsorted`` find the block, and a cumulative sum inside that block finds the FP.
    """
    fps_arr = np.asarray(fps, dtype=np.float64)
    N = c.n_images
    B = int(n_bootstrap)
    out = np.full((B, fps_arr.size), np.nan)
    if N == 0 or B <= 0:
        return out
    W = _resample_weights(N, B, seed)
    G = W @ c.n_gt.astype(np.float64)  # (B,) lesions per resample
    limits = np.floor(fps_arr * N)  # the FP weight allowed at each x
    ev = _events(c)
    for s in range(0, B, rows_per_chunk):
        w = W[s : s + rows_per_chunk]
        b = w.shape[0]
        cum_h = np.zeros((b, ev.n_hits + 1))
        if ev.n_hits:
            np.cumsum(w[:, ev.hit_img] * ev.hit_n, axis=1, out=cum_h[:, 1:])
        hits = np.take_along_axis(cum_h, _hit_index(w, ev, limits), axis=1)
        g = G[s : s + b, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + b] = np.where(g > 0, hits / np.where(g > 0, g, 1.0), np.nan)
    return out


def bootstrap_ci(c: Classification, fps: Sequence[float] = DEFAULT_FPS, n_bootstrap: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict:
    """Percentile bootstrap CI over images: {"level", "n_bootstrap", "seed", "average", "sensitivity"}.

    ``average`` is [low, high] for the mean of the first four sensitivities; ``sensitivity`` one
    [low, high] per FP rate. Resamples whose sensitivity is undefined (no lesion drawn) are skipped.
    """
    samples = bootstrap_sensitivities(c, fps, n_bootstrap, seed)
    avg = samples[:, :4].mean(axis=1)
    lo, hi = 50 * (1 - level), 50 * (1 + level)

    def pct(v: np.ndarray) -> list[float | None]:
        v = v[np.isfinite(v)]
        if v.size == 0:
            return [None, None]
        return [float(np.percentile(v, lo)), float(np.percentile(v, hi))]

    return {
        "level": float(level),
        "n_bootstrap": int(n_bootstrap),
        "seed": int(seed),
        "average": pct(avg),
        "sensitivity": [pct(samples[:, j]) for j in range(samples.shape[1])],
    }
