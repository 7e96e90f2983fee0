"""DeepLesion FROC (spec section 6): hand-worked cases and a naive loop implementation to agree with."""

from __future__ import annotations

import numpy as np
import pytest

from a3d.errors import A3DError
from a3d.evaluation import (
    bootstrap_ci,
    bootstrap_sensitivities,
    classify,
    froc,
    iou_inclusive,
    sensitivity_at,
)

E = np.zeros((0, 4))
FAR = [400.0, 400.0, 420.0, 420.0]  # overlaps nothing in these tests


def A(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


# --------------------------------------------------------------------------- naive reference


def naive_iou(a, b):
    """Inclusive-pixel IoU, written out with scalars."""
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    ua = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / ua


def naive_froc(pred_boxes, pred_scores, gt_boxes, fps, ignore=None, th=0.5):
    """One prediction at a time, python lists, explicit hit flags; interpolation by a walk."""
    items = []
    for i, (bs, ss) in enumerate(zip(pred_boxes, pred_scores)):
        for j, (b, s) in enumerate(zip(bs, ss)):
            items.append((-float(s), i, j, list(b)))
    items.sort(key=lambda t: (t[0], t[1], t[2]))  # score desc, then image, then within-image order
    hit = [[False] * len(g) for g in gt_boxes]
    ign = ignore or [[False] * len(g) for g in gt_boxes]
    n_gt = sum(1 for flags in ign for f in flags if not f)
    n_img = len(gt_boxes)
    tp = fp = 0
    pts = []
    for _, i, _, b in items:
        ious = [naive_iou(b, g) for g in gt_boxes[i]]
        if not ious or max(ious) < th:
            fp += 1
        else:
            for k, v in enumerate(ious):
                if v >= th and not hit[i][k] and not ign[i][k]:
                    hit[i][k] = True
                    tp += 1
        pts.append((fp / n_img, tp / n_gt if n_gt else float("nan")))
    if n_gt == 0:  # sensitivity undefined without a counted lesion
        return np.full(len(fps), np.nan), pts
    out = []
    for x in fps:
        # walk: the curve starts at (0, 0); take the last point with fp <= x, interpolate to the next
        prev = (0.0, 0.0)
        val = None
        for k, p in enumerate(pts):
            if p[0] <= x:
                prev = p
                continue
            val = prev[1] + (p[1] - prev[1]) * (x - prev[0]) / (p[0] - prev[0])
            break
        if val is None:
            val = prev[1]
        out.append(val)
    return np.array(out), pts


# --------------------------------------------------------------------------- IoU


def test_iou_inclusive_hand_computed():
    # 10x10 boxes offset by 5: intersection 5x5 = 25, union 100 + 100 - 25 = 175
    assert iou_inclusive(A([0, 0, 9, 9])[0], A([5, 5, 14, 14]))[0] == pytest.approx(25 / 175)
    # 2x2 boxes sharing one pixel: inclusive counts it (1 / 7); the exclusive convention would give 0
    assert iou_inclusive(A([0, 0, 1, 1])[0], A([1, 1, 2, 2]))[0] == pytest.approx(1 / 7)
    # a single pixel is a 1x1 box
    assert iou_inclusive(A([3, 3, 3, 3])[0], A([3, 3, 3, 3]))[0] == 1.0
    # disjoint
    assert iou_inclusive(A([0, 0, 1, 1])[0], A([2, 2, 3, 3]))[0] == 0.0
    # IoU exactly 0.5 counts as a hit: [0,0,9,9] (100 px) vs [0,0,9,19] (200 px) -> 100 / 200
    r = froc([A([0, 0, 9, 9])], [np.array([1.0])], [A([0, 0, 9, 19])], fps=(1,))
    assert r.sensitivities[0] == 1.0 and r.n_false_positives == 0


# --------------------------------------------------------------------------- protocol rules


def test_one_box_hits_two_lesions():
    # gt2 is gt1 one pixel taller: IoU of the prediction with them is 1.0 and 100/110
    gt = [A([0, 0, 9, 9], [0, 0, 9, 10])]
    r = froc([A([0, 0, 9, 9])], [np.array([0.9])], gt, fps=(0.5, 1))
    assert r.n_hits == 2
    np.testing.assert_allclose(r.curve_sensitivity, [1.0])
    np.testing.assert_allclose(r.curve_fps, [0.0])
    np.testing.assert_allclose(r.sensitivities, [1.0, 1.0])


def test_second_box_on_hit_lesion_is_neither():
    gt = [A([0, 0, 9, 9])]
    preds = A([0, 0, 9, 9], [0, 0, 9, 10], FAR)
    r = froc([preds], [np.array([0.9, 0.8, 0.7])], gt, fps=(1,))
    c = r.classification
    np.testing.assert_array_equal(c.new_hits, [1, 0, 0])
    np.testing.assert_array_equal(c.is_fp, [False, False, True])  # the second box is neither
    np.testing.assert_allclose(r.curve_fps, [0, 0, 1])
    np.testing.assert_allclose(r.curve_sensitivity, [1, 1, 1])
    assert r.n_false_positives == 1


def test_overlapping_hit_and_unhit_box_marks_the_unhit_one():
    # two lesions; the first prediction hits only A; the second overlaps A (hit) and B (not yet hit)
    gt = [A([0, 0, 9, 9], [0, 0, 9, 11])]  # IoU(A, B) = 100/120
    # pred1: A 50/100 = .5 (hit), B 50/120 < .5; pred2: A 100/110 (already hit), B 110/120 -> hits B
    preds = A([0, 0, 9, 4], [0, 0, 9, 10])
    r = froc([preds], [np.array([0.9, 0.8])], gt, fps=(1,))
    np.testing.assert_array_equal(r.classification.new_hits, [1, 1])
    assert r.n_hits == 2 and r.n_false_positives == 0


def test_images_without_predictions_and_without_lesions():
    # image 0: one lesion, one hit; image 1: one lesion, no prediction; image 2: no lesion, one prediction (FP)
    gt = [A([0, 0, 9, 9]), A([0, 0, 9, 9]), E]
    pb = [A([0, 0, 9, 9]), E, A([0, 0, 9, 9])]
    ps = [np.array([0.5]), np.zeros(0), np.array([0.9])]
    r = froc(pb, ps, gt, fps=(0.1, 1 / 3, 1))
    assert r.n_images == 3 and r.n_lesions == 2
    # sorted: FP (image 2, .9) then hit (image 0, .5): points (1/3, 0), (1/3, 1/2)
    np.testing.assert_allclose(r.curve_fps, [1 / 3, 1 / 3])
    np.testing.assert_allclose(r.curve_sensitivity, [0, 0.5])
    np.testing.assert_allclose(r.sensitivities, [0.0, 0.5, 0.5])


def test_ties_in_score_follow_image_then_within_image_order():
    # image 0: an FP, image 1: a hit, same score; two images, two lesions (image 0's lesion missed)
    gt = [A([0, 0, 9, 9]), A([0, 0, 9, 9])]
    s = [np.array([0.5]), np.array([0.5])]
    fp_first = froc([A(FAR), A([0, 0, 9, 9])], s, gt, fps=(0.25, 0.5))
    # image order: the FP comes first -> points (0.5, 0), (0.5, 0.5)
    np.testing.assert_allclose(fp_first.curve_fps, [0.5, 0.5])
    np.testing.assert_allclose(fp_first.curve_sensitivity, [0.0, 0.5])
    np.testing.assert_allclose(fp_first.sensitivities, [0.0, 0.5])  # 0.25: before the FP level
    # swap the images: the hit comes first -> (0, 0.5), (0.5, 0.5)
    hit_first = froc([A([0, 0, 9, 9]), A(FAR)], s, gt[::-1], fps=(0.25, 0.5))
    np.testing.assert_allclose(hit_first.curve_fps, [0.0, 0.5])
    np.testing.assert_allclose(hit_first.sensitivities, [0.5, 0.5])
    # within one image, equal scores keep the listed order
    one = froc([A(FAR, [0, 0, 9, 9])], [np.array([0.3, 0.3])], [A([0, 0, 9, 9])], fps=(0.5, 1))
    np.testing.assert_allclose(one.curve_fps, [1, 1])
    np.testing.assert_allclose(one.curve_sensitivity, [0, 1])
    np.testing.assert_allclose(one.sensitivities, [0.0, 1.0])
    # ties between images are broken by image order even when scores are exactly equal in other images
    c = classify([A(FAR, FAR), A(FAR)], [np.array([0.2, 0.7]), np.array([0.7])], [E, E])
    np.testing.assert_array_equal(c.order, [1, 2, 0])


def test_interpolation_between_past_and_at_tied_points():
    # 4 images, 4 lesions (one per image); predictions in score order:
    # hit(img0) .9, FP(img1) .8, hit(img1) .7, FP(img2) .6, FP(img3) .5, hit(img2) .4  (img3's lesion missed)
    les = [0, 0, 9, 9]
    gt = [A(les), A(les), A(les), A(les)]
    pb = [A(les), A(FAR, les), A(FAR, les), A(FAR)]
    ps = [np.array([0.9]), np.array([0.8, 0.7]), np.array([0.6, 0.4]), np.array([0.5])]
    fps = (0.125, 0.25, 0.5, 0.6, 0.75, 1.0, 16.0)
    r = froc(pb, ps, gt, fps=fps)
    np.testing.assert_allclose(r.curve_fps, [0, 0.25, 0.25, 0.5, 0.75, 0.75])
    np.testing.assert_allclose(r.curve_sensitivity, [0.25, 0.25, 0.5, 0.5, 0.5, 0.75])
    # 0.125: between (0, .25) and (.25, .25) -> .25; 0.25: shared by two points -> the last, .5;
    # 0.6: between (.5, .5) and (.75, .5) -> .5; 0.75: last of the tie -> .75; past the end -> .75
    np.testing.assert_allclose(r.sensitivities, [0.25, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75])
    assert r.average == pytest.approx(np.mean([0.25, 0.5, 0.5, 0.5]))
    np.testing.assert_allclose(r.sensitivities, np.interp(fps, r.curve_fps, r.curve_sensitivity))


def test_sensitivity_at_linear_and_origin():
    # a general (non-step) sequence: linear between points, from the origin before the first
    np.testing.assert_allclose(sensitivity_at([1, 2], [0.2, 0.6], [0.5, 1, 1.5, 2, 3]), [0.1, 0.2, 0.4, 0.6, 0.6])
    # repeated FP rate: the last at the rate itself, interpolation towards the first from below
    np.testing.assert_allclose(sensitivity_at([1, 1, 2], [0.2, 0.4, 0.4], [0.5, 1]), [0.1, 0.4])
    np.testing.assert_allclose(sensitivity_at([], [], [1, 2]), [0, 0])


def test_no_predictions_and_no_lesions():
    r = froc([E, E], [np.zeros(0), np.zeros(0)], [A([0, 0, 9, 9]), E])
    np.testing.assert_allclose(r.sensitivities, 0.0)
    assert r.average == 0.0 and r.curve_fps.size == 0
    r = froc([A([0, 0, 9, 9])], [np.array([1.0])], [E])
    assert np.isnan(r.sensitivities).all() and r.n_false_positives == 1


def test_input_validation():
    with pytest.raises(A3DError, match="image 0.*finite"):
        froc([A([0, 0, 9, 9])], [np.array([np.nan])], [E])
    with pytest.raises(A3DError, match="x2 >= x1"):
        froc([A([9, 0, 0, 9])], [np.array([1.0])], [E])
    with pytest.raises(A3DError, match="one entry per image"):
        froc([E], [np.zeros(0)], [E, E])
    with pytest.raises(A3DError, match="2 boxes but 1 scores"):
        froc([A(FAR, FAR)], [np.array([1.0])], [E])


# --------------------------------------------------------------------------- against the naive loop


def random_case(rng, n_img=None, ties=True, ignore=False):
    n_img = n_img or int(rng.integers(1, 25))
    gts, pbs, pss, igns = [], [], [], []
    for _ in range(n_img):
        g = int(rng.integers(0, 4))
        xy = rng.uniform(0, 60, size=(g, 2))
        wh = rng.uniform(3, 30, size=(g, 2))
        gb = np.round(np.concatenate([xy, xy + wh], axis=1))
        if g and rng.random() < 0.3:  # a near-duplicate lesion: one box can hit both
            gb = np.concatenate([gb, gb[:1] + [0, 0, 1, 1]])
            g += 1
        gts.append(gb)
        n = int(rng.integers(0, 7))
        boxes = []
        for _ in range(n):
            if g and rng.random() < 0.6:  # jitter a lesion box: hits, near misses, duplicates
                b = gb[rng.integers(g)] + rng.normal(0, 3, size=4)
            else:
                p = rng.uniform(0, 80, size=2)
                b = np.concatenate([p, p + rng.uniform(2, 30, size=2)])
            b = np.round(b)
            b[2], b[3] = max(b[2], b[0]), max(b[3], b[1])
            boxes.append(b)
        pbs.append(np.array(boxes).reshape(-1, 4))
        s = rng.random(n)
        pss.append(np.round(s, 1) if ties else s)
        igns.append(rng.random(g) < 0.3 if ignore else np.zeros(g, dtype=bool))
    return pbs, pss, gts, igns


@pytest.mark.parametrize("ignore", [False, True])
def test_vectorised_agrees_with_naive_loop(ignore):
    rng = np.random.default_rng(1234 + ignore)
    fps = (0.125, 0.25, 0.5, 1, 2, 4, 8, 16)
    for case in range(300):
        pbs, pss, gts, igns = random_case(rng, ties=case % 2 == 0, ignore=ignore)
        want, pts = naive_froc(pbs, pss, gts, fps, [list(m) for m in igns])
        got = froc(pbs, pss, gts, fps=fps, gt_ignore=igns if ignore else None)
        if pts:
            np.testing.assert_allclose(got.curve_fps, [p[0] for p in pts], err_msg=f"case {case}")
            np.testing.assert_allclose(got.curve_sensitivity, [p[1] for p in pts], err_msg=f"case {case}")
        np.testing.assert_allclose(got.sensitivities, want, err_msg=f"case {case}")


# --------------------------------------------------------------------------- bootstrap


def detector(rng, n_img):
    """A toy detector: each image one lesion, found with probability .8, plus 0-4 false positives."""
    pbs, pss, gts = [], [], []
    for _ in range(n_img):
        gts.append(A([10, 10, 29, 29]))
        boxes, scores = [], []
        if rng.random() < 0.8:
            boxes.append([10, 10, 29, 29])
            scores.append(rng.uniform(0.3, 1.0))
        for _ in range(int(rng.integers(0, 5))):
            boxes.append(FAR)
            scores.append(rng.uniform(0.0, 0.8))
        pbs.append(A(*boxes) if boxes else E)
        pss.append(np.array(scores))
    return pbs, pss, gts


def test_bootstrap_equals_froc_of_resampled_image_lists():
    rng = np.random.default_rng(7)
    pbs, pss, gts = detector(rng, 40)  # continuous scores: no ties
    r = froc(pbs, pss, gts)
    samples = bootstrap_sensitivities(r.classification, r.fps, n_bootstrap=20, seed=3)
    draws = np.random.default_rng(3).integers(0, 40, size=(20, 40))  # the same draws, by construction
    for b in range(20):
        idx = draws[b]
        rb = froc([pbs[i] for i in idx], [pss[i] for i in idx], [gts[i] for i in idx])
        np.testing.assert_allclose(samples[b], rb.sensitivities, err_msg=f"resample {b}")


def test_bootstrap_ci_contains_estimate_and_narrows():
    rng = np.random.default_rng(11)
    widths = []
    for n in (60, 1500):
        pbs, pss, gts = detector(rng, n)
        r = froc(pbs, pss, gts)
        ci = bootstrap_ci(r.classification, r.fps, n_bootstrap=400, seed=0)
        lo, hi = ci["average"]
        assert lo <= r.average <= hi
        for (l, h), s in zip(ci["sensitivity"], r.sensitivities):
            assert l <= s <= h
        widths.append(hi - lo)
        # seeded: the same call gives the same interval
        assert bootstrap_ci(r.classification, r.fps, n_bootstrap=400, seed=0)["average"] == ci["average"]
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(25) = 0.2 expected


def test_interpolated_froc_is_the_step_formula():
    """sensitivity(x) = hits before the (floor(x * images) + 1)-th false positive / lesions."""
    rng = np.random.default_rng(99)
    fps = (0.1, 0.5, 1, 1.5, 2, 4, 8, 16)
    for _ in range(100):
        pbs, pss, gts, _ = random_case(rng, ties=True)
        r = froc(pbs, pss, gts, fps=fps)
        if r.n_lesions == 0:
            continue
        c = r.classification
        want = []
        for x in fps:
            allowed = int(np.floor(x * r.n_images))
            fp_seen = hits = 0
            for h, f in zip(c.new_hits, c.is_fp):
                if f:
                    fp_seen += 1
                    if fp_seen > allowed:
                        break
                hits += h
            want.append(hits / r.n_lesions)
        np.testing.assert_allclose(r.sensitivities, want)


def test_evaluation_does_not_import_torch():
    """a3d.evaluation needs numpy (and matplotlib) only. The parent package's __init__ is skipped
    (it may import the converter), so this checks the evaluation modules' own imports."""
    import subprocess
    import sys

    code = (
        "import importlib.util, sys, types\n"
        "locs = importlib.util.find_spec('a3d').submodule_search_locations\n"
        "pkg = types.ModuleType('a3d'); pkg.__path__ = list(locs); pkg.__version__ = '0'; sys.modules['a3d'] = pkg\n"
        "import a3d.evaluation, a3d.evaluation.report, a3d.evaluation.plots\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'a3d.models', 'a3d.engine', 'a3d.data', 'a3d.ops'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
