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
   exactly, the last of them; past the end, the last sensitivity (held, as the authors' AlignShift
   code, the spec and Ke Yan's code do); otherwise linear towards the
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

from a3d.boxes import box_iou, box_iou_pairs
from a3d.errors import A3DError

DEFAULT_FPS: tuple[float, ...] = (0.5, 1, 2, 4, 8, 16)


def iou_inclusive(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) against boxes (G, 4), x1 y1 x2 y2, inclusive pixels (w = x2 - x1 + 1)."""
    return box_iou(box, boxes, inclusive=True)[0]


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


def _checked_inputs(pred_boxes: Sequence, pred_scores: Sequence, gt_boxes: Sequence, gt_ignore: Sequence | None):
    """Per image: predicted boxes (N_i, 4), scores (N_i,), ground-truth boxes (G_i, 4) and ignore flags
    (G_i,), as float64 / bool arrays; A3DError naming the image for anything malformed."""
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
        return pb, ps, gb, [np.zeros(len(g), dtype=bool) for g in gb]
    if len(gt_ignore) != n_img:
        raise A3DError(f"froc: gt_ignore has {len(gt_ignore)} entries for {n_img} images")
    ign = [np.asarray(m, dtype=bool).reshape(-1) for m in gt_ignore]
    for i, (m, g) in enumerate(zip(ign, gb)):
        if m.shape[0] != g.shape[0]:
            raise A3DError(f"froc: gt_ignore of image {i} has {m.shape[0]} flags for {g.shape[0]} boxes")
    return pb, ps, gb, ign


def _same_image_pairs(img: np.ndarray, n_box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (prediction, box of its image) pair, grouped by prediction: (prediction index, flat box
    index); ``img`` is each prediction's image, ``n_box`` the boxes per image."""
    gt_start = np.concatenate([[0], np.cumsum(n_box)[:-1]]).astype(np.int64)
    per = n_box[img]
    pair_pred = np.repeat(np.arange(img.shape[0]), per)
    first = np.repeat(np.cumsum(per) - per, per)
    pair_gt = np.repeat(gt_start[img], per) + (np.arange(pair_pred.shape[0]) - first)
    return pair_pred, pair_gt


def classify(
    pred_boxes: Sequence,
    pred_scores: Sequence,
    gt_boxes: Sequence,
    iou_threshold: float = 0.5,
    gt_ignore: Sequence | None = None,
) -> Classification:
    """Classify every prediction as hit (with how many boxes), false positive or neither."""
    pb, ps, gb, ign = _checked_inputs(pred_boxes, pred_scores, gt_boxes, gt_ignore)
    n_img = len(gb)
    n_pred = np.array([len(s) for s in ps], dtype=np.int64)
    n_box = np.array([len(g) for g in gb], dtype=np.int64)
    boxes = np.concatenate(pb) if n_img else np.zeros((0, 4))
    scores = np.concatenate(ps) if n_img else np.zeros(0)
    all_gt = np.concatenate(gb) if n_img else np.zeros((0, 4))
    all_ign = np.concatenate(ign) if n_img else np.zeros(0, dtype=bool)

    # Stable sort of -score: ties keep concatenation order = image order, then within-image order.
    order = np.argsort(-scores, kind="stable")
    boxes, scores, img = boxes[order], scores[order], np.repeat(np.arange(n_img), n_pred)[order]
    P = len(order)

    pair_pred, pair_gt = _same_image_pairs(img, n_box)
    over = box_iou_pairs(boxes[pair_pred], all_gt[pair_gt], inclusive=True) >= iou_threshold
    is_fp = np.ones(P, dtype=bool)
    is_fp[pair_pred[over]] = False

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
