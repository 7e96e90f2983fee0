"""The DeepLesion FROC (spec section 6), vectorised over all predictions of all images.

Protocol, in the order it is applied:

1. Pool the predictions of every image and sort them by descending score. Ties in score keep a
   deterministic order: image order first (the order of the lists passed in), then the order of the
   predictions inside their image (a stable sort of the concatenation).
2. Walk down the list. A prediction with IoU >= ``iou_threshold`` against a not-yet-hit ground-truth
   box of its own image marks *every* such box hit (true positive); a prediction whose best IoU with
   every box of its image is below the threshold (or whose image has no boxes) is a false positive;
   a prediction that overlaps (>= threshold) only boxes already hit counts as neither.
   IoU uses the inclusive-pixel convention: width = x2 - x1 + 1, height = y2 - y1 + 1.
3. The curve has one point per prediction, in sorted order:
   (false positives so far / images, hits so far / ground-truth boxes).
4. The sensitivity at a FP rate x follows numpy ``interp`` along that point sequence (written out in
   :func:`sensitivity_at`): the last point whose FP rate is <= x, so where several points share x
   exactly, the last of them; past the end, the last sensitivity (the authors' AlignShift code
   extrapolated linearly there; the spec and Ke Yan's code hold it); otherwise linear towards the
   next point. Before the first point the curve starts at (0, 0): the first point is either (0, s)
   (a hit or "neither" came first) or (1/images, 0) (a false positive came first), so prepending
   (0, 0) gives the same numbers as numpy's "hold the first value" to the left. With no
   predictions at all every sensitivity is 0. Between two FP levels the sensitivity is flat (a false
   positive adds no hit), so the interpolated FROC is a step function: sensitivity(x) = hits found
   before the (floor(x * images) + 1)-th false positive / ground-truth boxes.
5. ``average`` is the mean of the first four sensitivities (the paper's "Avg.", 0.5, 1, 2, 4).

Vectorisation: the hit state is per image, and the pooled order restricted to one image is that
image's own score order, so each ground-truth box is hit by the *first* prediction (in pooled
order) of its image that overlaps it >= threshold. Every (prediction, box-of-its-image) pair is
formed once, the first hitter of each box found with ``np.unique``, and the curve is two cumsums.

Ignored boxes (``gt_ignore``): used by per-lesion subsets. An ignored box is never counted as a
ground truth nor as a hit, but a prediction overlapping it >= threshold is not a false positive
(it counts as neither unless it also hits a counted box). The false positives are then exactly
those of the evaluation with every box counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from a3d.errors import A3DError

DEFAULT_FPS: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16)


def iou_inclusive(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against boxes (G, 4), x1 y1 x2 y2, inclusive pixels (w = x2 - x1 + 1)."""
    box = np.asarray(box, dtype=np.float64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return _pair_iou(np.broadcast_to(box, boxes.shape), boxes)


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of a (K, 4) and b (K, 4), inclusive pixels."""
    iw = np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1.0
    ih = np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1.0
    inter = np.clip(iw, 0.0, None) * np.clip(ih, 0.0, None)
    area_a = (a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
    area_b = (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)
    return inter / (area_a + area_b - inter)


@dataclass
class Classification:
    """Every prediction classified, in pooled sorted order (see the module docstring).

    ``order``: indices into the concatenation of all images' predictions (image order, then
    within-image order), sorted by descending score with the tie rule. ``image``: image index of
    each sorted prediction. ``new_hits``: how many counted boxes it hits first. ``is_fp``: false
    positive. ``n_gt``: counted boxes per image.
    """

    order: np.ndarray
    image: np.ndarray
    scores: np.ndarray
    new_hits: np.ndarray
    is_fp: np.ndarray
    n_gt: np.ndarray
    # Pairs (sorted prediction position, flat box index) with IoU >= threshold, in position order;
    # the image of every flat box; the flat ignore mask. They let subsets reuse the IoU work.
    over_pred: np.ndarray | None = field(default=None, repr=False)
    over_gt: np.ndarray | None = field(default=None, repr=False)
    gt_image: np.ndarray | None = field(default=None, repr=False)
    gt_ignored: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_images(self) -> int:
        return int(self.n_gt.shape[0])

    @property
    def n_lesions(self) -> int:
        return int(self.n_gt.sum())

    def ignoring(self, ignored: np.ndarray) -> "Classification":
        """The same predictions with another flat ignore mask over the boxes (a lesion subset).

        False positives do not depend on it (an overlap with an ignored box is not an FP); only the
        hits and the counted boxes change.
        """
        ignored = np.asarray(ignored, dtype=bool).reshape(-1)
        if self.over_pred is None or ignored.shape != self.gt_image.shape:
            raise ValueError("ignoring() needs a Classification from classify() and one flag per box")
        P = self.order.shape[0]
        counted = ~ignored[self.over_gt]
        new_hits = _first_hitters(self.over_pred[counted], self.over_gt[counted], P)
        n_gt = np.bincount(self.gt_image[~ignored], minlength=self.n_images).astype(np.int64)
        return Classification(self.order, self.image, self.scores, new_hits, self.is_fp, n_gt,
                              self.over_pred, self.over_gt, self.gt_image, ignored)

    def images_subset(self, keep: np.ndarray) -> "Classification":
        """Only the images where ``keep`` (one flag per image) is true, with their predictions
        (an image subset). Classes are per image, so they carry over; images are renumbered."""
        keep = np.asarray(keep, dtype=bool).reshape(-1)
        if keep.shape[0] != self.n_images:
            raise ValueError(f"images_subset: {keep.shape[0]} flags for {self.n_images} images")
        sel = keep[self.image]
        renum = np.cumsum(keep) - 1
        return Classification(self.order[sel], renum[self.image[sel]], self.scores[sel], self.new_hits[sel],
                              self.is_fp[sel], self.n_gt[keep])


def _first_hitters(pred_pos: np.ndarray, gt_idx: np.ndarray, P: int) -> np.ndarray:
    """Boxes hit first by each position: pairs come in increasing position, so the first occurrence
    of a box is its first hitter."""
    _, first_idx = np.unique(gt_idx, return_index=True)
    return np.bincount(pred_pos[first_idx], minlength=P).astype(np.int64)


@dataclass
class FROCResult:
    """Sensitivities at ``fps`` FPs per image, their ``average`` (first four) and the full curve."""

    fps: np.ndarray
    sensitivities: np.ndarray
    average: float
    curve_fps: np.ndarray
    curve_sensitivity: np.ndarray
    n_images: int
    n_lesions: int
    n_predictions: int
    n_hits: int
    n_false_positives: int
    classification: Classification | None = field(default=None, repr=False)

    @property
    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(FPs per image, sensitivity), one point per prediction in score order."""
        return self.curve_fps, self.curve_sensitivity

    def as_dict(self) -> dict:
        return {
            "fps": [float(f) for f in self.fps],
            "sensitivity": [_num(s) for s in self.sensitivities],
            "average": _num(self.average),
            "n_images": self.n_images,
            "n_lesions": self.n_lesions,
            "n_predictions": self.n_predictions,
            "n_hits": self.n_hits,
            "n_false_positives": self.n_false_positives,
        }


def _num(x: float) -> float | None:
    x = float(x)
    return None if not np.isfinite(x) else x


def _as_boxes(b, what: str, i: int) -> np.ndarray:
    a = np.asarray(b, dtype=np.float64)
    if a.size == 0:
        return np.zeros((0, 4))
    if a.ndim != 2 or a.shape[1] != 4:
        raise A3DError(f"{what} of image {i}: expected an (N, 4) array x1 y1 x2 y2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise A3DError(f"{what} of image {i}: box coordinates must be finite (found NaN or inf)")
    bad = np.nonzero((a[:, 2] < a[:, 0]) | (a[:, 3] < a[:, 1]))[0]
    if bad.size:
        raise A3DError(f"{what} of image {i}, box {bad[0]}: expected x2 >= x1 and y2 >= y1, got {a[bad[0]].tolist()}")
    return a


def classify(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    gt_boxes: Sequence,
    iou_threshold: float = 0.5,
    gt_ignore: Sequence | None = None,
) -> Classification:
    """Classify every prediction as hit (with how many boxes), false positive or neither."""
    n_img = len(gt_boxes)
    if len(pred_boxes) != n_img or len(pred_scores) != n_img:
        raise A3DError(
            f"froc: expected one entry per image in pred_boxes, pred_scores and gt_boxes, "
            f"got {len(pred_boxes)}, {len(pred_scores)} and {n_img}"
        )
    pb = [_as_boxes(b, "predicted boxes", i) for i, b in enumerate(pred_boxes)]
    gb = [_as_boxes(b, "ground-truth boxes", i) for i, b in enumerate(gt_boxes)]
    ps = []
    for i, s in enumerate(pred_scores):
        s = np.asarray(s, dtype=np.float64).reshape(-1)
        if s.shape[0] != pb[i].shape[0]:
            raise A3DError(f"predictions of image {i}: {pb[i].shape[0]} boxes but {s.shape[0]} scores")
        if not np.isfinite(s).all():
            raise A3DError(f"predictions of image {i}, box {int(np.nonzero(~np.isfinite(s))[0][0])}: score is not finite")
        ps.append(s)
    if gt_ignore is None:
        ign = [np.zeros(len(g), dtype=bool) for g in gb]
    else:
        if len(gt_ignore) != n_img:
            raise A3DError(f"froc: gt_ignore has {len(gt_ignore)} entries for {n_img} images")
        ign = [np.asarray(m, dtype=bool).reshape(-1) for m in gt_ignore]
        for i, (m, g) in enumerate(zip(ign, gb)):
            if m.shape[0] != g.shape[0]:
                raise A3DError(f"froc: gt_ignore of image {i} has {m.shape[0]} flags for {g.shape[0]} boxes")

    n_pred = np.array([len(s) for s in ps], dtype=np.int64)
    n_box = np.array([len(g) for g in gb], dtype=np.int64)
    boxes = np.concatenate(pb) if n_img else np.zeros((0, 4))
    scores = np.concatenate(ps) if n_img else np.zeros(0)
    img_of_pred = np.repeat(np.arange(n_img), n_pred)
    all_gt = np.concatenate(gb) if n_img else np.zeros((0, 4))
    all_ign = np.concatenate(ign) if n_img else np.zeros(0, dtype=bool)
    gt_start = np.concatenate([[0], np.cumsum(n_box)[:-1]]).astype(np.int64) if n_img else np.zeros(0, np.int64)

    # Stable sort of -score: ties keep concatenation order = image order, then within-image order.
    order = np.argsort(-scores, kind="stable")
    boxes, scores, img = boxes[order], scores[order], img_of_pred[order]
    P = len(order)

    # All (prediction, box of its image) pairs, grouped by prediction in sorted order.
    per = n_box[img]
    pair_pred = np.repeat(np.arange(P), per)
    first = np.repeat(np.cumsum(per) - per, per)
    pair_gt = np.repeat(gt_start[img], per) + (np.arange(pair_pred.shape[0]) - first)
    iou = _pair_iou(boxes[pair_pred], all_gt[pair_gt])
    over = iou >= iou_threshold

    overlapping = np.zeros(P, dtype=bool)
    overlapping[pair_pred[over]] = True
    is_fp = ~overlapping

    op, og = pair_pred[over], pair_gt[over]
    counted = ~all_ign[og]
    new_hits = _first_hitters(op[counted], og[counted], P)
    n_gt = np.array([int((~m).sum()) for m in ign], dtype=np.int64)
    gt_image = np.repeat(np.arange(n_img), n_box)
    return Classification(order=order, image=img, scores=scores, new_hits=new_hits, is_fp=is_fp, n_gt=n_gt,
                          over_pred=op, over_gt=og, gt_image=gt_image, gt_ignored=all_ign)


def sensitivity_at(curve_fps: np.ndarray, curve_sensitivity: np.ndarray, fps: Sequence[float]) -> np.ndarray:
    """Sensitivity at ``fps`` along a point sequence with numpy ``interp`` semantics (module docstring, step 4).

    The sequence is taken to start at (0, 0) and its FP rates must not decrease. For a query q:
    j = the last point with FP <= q (so at an FP rate shared by several points, the last of them);
    past the last point its sensitivity; otherwise linear between point j and point j + 1 (the first
    point of the next FP rate). Written out rather than relying on ``np.interp`` with repeated x
    values, which numpy does not document; it agrees with ``np.interp`` on such sequences. An empty
    curve gives zeros.
    """
    x = np.asarray(curve_fps, dtype=np.float64).reshape(-1)
    y = np.asarray(curve_sensitivity, dtype=np.float64).reshape(-1)
    q = np.asarray(fps, dtype=np.float64)
    if x.size == 0:
        return np.zeros(q.shape)
    x = np.concatenate([[0.0], x])
    y = np.concatenate([[0.0], y])
    qc = np.maximum(q, 0.0)
    j = np.searchsorted(x, qc, side="right") - 1  # last index with x <= q (>= 0 thanks to the origin)
    last = j >= x.size - 1
    jn = np.minimum(j + 1, x.size - 1)
    dx = x[jn] - x[j]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(last | (dx <= 0), 0.0, (qc - x[j]) / np.where(dx > 0, dx, 1.0))
    return np.where(last, y[-1], y[j] + t * (y[jn] - y[j]))


def _average(sens: np.ndarray) -> float:
    return float(np.mean(sens[:4])) if sens.size else float("nan")


def froc_from_classification(c: Classification, fps: Sequence[float] = DEFAULT_FPS) -> FROCResult:
    fps_arr = np.asarray(fps, dtype=np.float64)
    n_images, n_lesions = c.n_images, c.n_lesions
    cum_fp = np.cumsum(c.is_fp)
    cum_hit = np.cumsum(c.new_hits)
    curve_fps = cum_fp / n_images if n_images else cum_fp.astype(np.float64)
    if n_lesions:
        curve_sens = cum_hit / n_lesions
        sens = sensitivity_at(curve_fps, curve_sens, fps_arr)
    else:  # no ground truth: sensitivity undefined
        curve_sens = np.full(cum_hit.shape, np.nan)
        sens = np.full(fps_arr.shape, np.nan)
    return FROCResult(
        fps=fps_arr,
        sensitivities=sens,
        average=_average(sens),
        curve_fps=curve_fps,
        curve_sensitivity=curve_sens,
        n_images=n_images,
        n_lesions=n_lesions,
        n_predictions=int(c.order.shape[0]),
        n_hits=int(cum_hit[-1]) if cum_hit.size else 0,
        n_false_positives=int(cum_fp[-1]) if cum_fp.size else 0,
        classification=c,
    )


def froc(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    gt_boxes: Sequence,
    fps: Sequence[float] = DEFAULT_FPS,
    *,
    iou_threshold: float = 0.5,
    gt_ignore: Sequence | None = None,
) -> FROCResult:
    """DeepLesion FROC over images; each argument is a list with one array per image.

    ``pred_boxes[i]``: (N_i, 4) x1 y1 x2 y2 (0-based, inclusive pixels); ``pred_scores[i]``: (N_i,);
    ``gt_boxes[i]``: (G_i, 4). ``gt_ignore[i]`` (optional, (G_i,) bool): boxes that are neither
    counted nor false-positive-making (per-lesion subsets). With no counted box at all the
    sensitivities are NaN. See the module docstring for the exact protocol.
    """
    return froc_from_classification(classify(pred_boxes, pred_scores, gt_boxes, iou_threshold, gt_ignore), fps)


def bootstrap_sensitivities(
    c: Classification,
    fps: Sequence[float] = DEFAULT_FPS,
    n_bootstrap: int = 1000,
    seed: int = 0,
    rows_per_chunk: int = 256,
) -> np.ndarray:
    """Sensitivities at ``fps`` for ``n_bootstrap`` resamples of the images (with replacement).

    Returns (n_bootstrap, len(fps)). Resample b draws N images uniformly with replacement
    (``np.random.default_rng(seed).integers(0, N, size=(n_bootstrap, N))``, row b); image i then
    appears w_i times. Its FROC is that of the pooled predictions with every prediction repeated
    w_i times: per-prediction classes are per image, so they do not change, and false positives and
    hits are the classes weighted by w. The copies of one prediction are processed together, which
    equals evaluating the duplicated image list exactly whenever no two scores tie.

    Uses the step form of the interpolation (module docstring, step 4): the sensitivity at x is the
    weighted hits before the first false positive that takes the weighted FP count above
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
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, N, size=(B, N))
    draws += np.arange(B, dtype=draws.dtype)[:, None] * N
    W = np.bincount(draws.ravel(), minlength=B * N).reshape(B, N).astype(np.float64)
    del draws
    G = W @ c.n_gt.astype(np.float64)  # (B,) lesions per resample
    limits = np.floor(fps_arr * N)  # the FP weight allowed at each x
    Q = limits.size

    hit_pos = np.nonzero(c.new_hits)[0]
    H = hit_pos.size
    # (N, H) would be large; hits are few (at most the lesions), so weight them by gathering.
    hit_img, hit_n = c.image[hit_pos], c.new_hits[hit_pos].astype(np.float64)
    fp_pos = np.nonzero(c.is_fp)[0]
    F = fp_pos.size
    hits_before_fp = np.searchsorted(hit_pos, fp_pos)  # hit events strictly before each FP event
    if F:
        K = max(16, int(np.sqrt(F)) + 1)  # block size
        nblk = -(-F // K)
        fp_img = np.full(nblk * K, N, dtype=np.int64)  # padding points at a zero-weight column
        fp_img[:F] = c.image[fp_pos]
        blk = np.arange(F) // K
        M = np.bincount(fp_img[:F] * nblk + blk, minlength=N * nblk).reshape(N, nblk).astype(np.float64)
        fp_blocks = fp_img.reshape(nblk, K)

    for s in range(0, B, rows_per_chunk):
        w = W[s : s + rows_per_chunk]
        b = w.shape[0]
        cum_h = np.zeros((b, H + 1))
        if H:
            np.cumsum(w[:, hit_img] * hit_n, axis=1, out=cum_h[:, 1:])
        if F:
            per_blk = w @ M  # (b, nblk) FP weight per block
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
            ev = fp_blocks[kbc]  # (b, Q, K) image of each FP in the block
            cw = before[..., None] + np.cumsum(np.take_along_axis(w_ext[:, None, :], ev, axis=2), axis=2)
            j = (cw <= limits[None, :, None]).sum(axis=2)  # FPs of the block within the limit
            e = np.minimum(kbc * K + j, F - 1)  # the FP that crosses the limit
            idx = np.where(inside, H, hits_before_fp[e])
        else:
            idx = np.full((b, Q), H)
        hits = np.take_along_axis(cum_h, idx, axis=1)
        g = G[s : s + b, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + b] = np.where(g > 0, hits / np.where(g > 0, g, 1.0), np.nan)
    return out


def bootstrap_ci(
    c: Classification,
    fps: Sequence[float] = DEFAULT_FPS,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
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
