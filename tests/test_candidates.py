"""3D candidates from hand-built detections: per-slice suppression, one-to-one linking, measurements.

Each test builds the detections a detector gives in one failure mode of the former grouping (union of
every "overlaps a box on the next slice" pair, measured on the union: issue 20) and checks the lesions
come out one candidate each, measured on their own masks.
"""

from __future__ import annotations

import numpy as np
import pytest

from a3d import predict as P
from a3d.data import scans as S
from test_predict_support import make_image

SPACING = (1.0, 1.0, 2.0)


def _scan(n_slices: int = 6, interpolated: tuple[int, ...] = ()) -> S.Scan:
    hu = np.zeros((n_slices, 80, 80), np.float32)
    img = make_image(hu, SPACING, (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    return S.Scan(hu=hu, image=img, original=img, source="x", kind="nifti", name="x", interpolated=list(interpolated))


def _det(z: int, box, score: float) -> P.Detection:
    """A detection whose mask fills its box (1 mm pixels)."""
    b = np.array(box, float)
    mask = np.ones((int(b[3] - b[1]), int(b[2] - b[0])), bool)
    full = np.zeros((80, 80), bool)
    full[int(b[1]) : int(b[3]), int(b[0]) : int(b[2])] = True
    return P.Detection(0, z, z, score, b, mask, (int(b[0]), int(b[1])), P.diameters(full, 1.0, 1.0))


def _candidates(dets: list[P.Detection], scan: S.Scan, processed=None) -> list[P.Candidate]:
    """What predict_scan does after the model: suppression, numbering, grouping."""
    processed = set(range(scan.hu.shape[0])) if processed is None else processed
    dets = P.suppress_fragments(P.suppress_duplicates(dets), processed, 0.3, scan)
    for i, d in enumerate(dets, 1):
        d.id = i
    return P.group_candidates(dets, processed, 0.3, scan)


def _members(c: P.Candidate) -> list[tuple[int, float]]:
    """(slice, box x1) of each detection: which lesion it came from."""
    return [(d.z, float(d.box[0])) for d in c.detections]


def test_chain_of_drifting_boxes_stays_three_lesions():
    """Three lesions side by side (x = 0, 24, 48) on six slices, and between them, on every slice,
    lower-scoring boxes drifting by 8 px, each overlapping its neighbours (IoU 0.43). The former
    union-find chained all 42 boxes into one candidate spanning everything."""
    scan = _scan()
    lesion_score = {0: 0.9, 24: 0.85, 48: 0.8}
    dets = [_det(z, [x, 10, x + 20, 30], lesion_score.get(x, 0.6)) for z in range(6) for x in range(0, 56, 8)]
    kept = P.suppress_duplicates(dets)
    assert sorted({float(d.box[0]) for d in kept}) == [0.0, 24.0, 48.0] and len(kept) == 18
    cands = _candidates(dets, scan)
    assert [sorted(_members(c)) for c in cands] == [[(z, x) for z in range(6)] for x in (0.0, 24.0, 48.0)]
    for c in cands:
        assert c.info["n_slices"] == c.info["n_detections"] == 6
        assert c.info["long_axis_mm"] == pytest.approx(np.hypot(20, 20))
        assert c.info["volume_mm3"] == pytest.approx(6 * 400 * 2.0)


def test_small_box_inside_big_one():
    """(1) A lower-scoring box lying inside a higher-scoring one on the same slice is a duplicate:
    suppressed, so it adds nothing to the volume. (2) Two lesions (x 0-18 and 22-40) on slices 0-2 and,
    on slice 1, a lower-scoring box around both: the former grouping linked it to both lesions on
    slices 0 and 2 (each is inside it: intersection over the smaller box 1) and measured the union."""
    scan = _scan()
    big, small = _det(4, [10, 40, 40, 70], 0.9), _det(4, [20, 50, 28, 58], 0.6)
    assert P.suppress_duplicates([small, big]) == [big]
    dets = [_det(z, [x, 0, x + 18, 20], 0.8) for z in range(3) for x in (0, 22)] + [_det(1, [0, 0, 40, 20], 0.5)]
    cands = _candidates(dets, scan)
    assert sorted(sorted(_members(c)) for c in cands) == [[(z, 0.0) for z in range(3)], [(z, 22.0) for z in range(3)]]
    for c in cands:
        assert c.info["long_axis_mm"] == pytest.approx(np.hypot(18, 20))
        assert c.info["volume_mm3"] == pytest.approx(3 * 360 * 2.0)


def test_two_lesions_touching_on_one_slice():
    """A 30 px lesion on slices 1-2 and a 12 px one on slices 2-3, touching on slice 2 (half of the
    small box lies in the big one's). Each big box is linked to the small box on the next slice by
    intersection over the smaller box (0.5), which chained both lesions into one candidate measured
    on the big one; one-to-one linking gives each box on slice 2 to its own lesion."""
    scan = _scan()
    dets = [_det(1, [10, 10, 40, 40], 0.9), _det(2, [10, 10, 40, 40], 0.9),
            _det(2, [34, 20, 46, 32], 0.7), _det(3, [34, 20, 46, 32], 0.7)]
    cands = _candidates(dets, scan)
    assert [sorted(_members(c)) for c in cands] == [[(1, 10.0), (2, 10.0)], [(2, 34.0), (3, 34.0)]]
    small = cands[1].info
    assert small["long_axis_mm"] == pytest.approx(np.hypot(12, 12)) and small["short_axis_mm"] == pytest.approx(np.hypot(12, 12), rel=0.1)
    assert small["volume_mm3"] == pytest.approx(2 * 144 * 2.0) and small["key_slice"] in (2, 3)


def test_partial_track_inside_a_lesion_is_a_fragment():
    """A lesion on slices 1-4 (20 px boxes, score 0.9) and, on slices 2-3, a lower-scoring partial box
    sticking out of it (IoU 0.18, 58 % inside: it survives the per-slice rules). Its track's centre lies
    in the lesion's mask, so it is a fragment of it and dropped: one lesion, one candidate, measured
    on its own masks. (The former grouping joined them, 6 detections in one candidate.)"""
    scan = _scan()
    lesion = [_det(z, [10, 10, 30, 30], 0.9) for z in range(1, 5)]
    part = [_det(z, [15, 5, 27, 17], 0.6) for z in (2, 3)]
    assert len(P.suppress_duplicates(lesion + part)) == 6
    cands = _candidates(lesion + part, scan)
    assert [_members(c) for c in cands] == [[(z, 10.0) for z in range(1, 5)]]
    assert cands[0].info["volume_mm3"] == pytest.approx(4 * 400 * 2.0)


def test_one_to_one_takes_best_overlap_and_measures_key_slice():
    """A lesion growing then shrinking over slices 0-4, its largest mask (20 x 20 px) on slice 2 and an
    elongated tip (28 x 8 px: a longer diagonal, a smaller area) on slice 4, with a neighbour box on
    slice 3 that also overlaps it: the track takes the best-overlapping box on each slice; the key
    slice is the one of largest mask area, where both diameters are measured (the former rule took
    the longest long axis: the tip's)."""
    scan = _scan()
    boxes = [[26, 26, 34, 34], [23, 23, 37, 37], [20, 20, 40, 40], [23, 23, 37, 37], [16, 26, 44, 34]]
    dets = [_det(z, b, 0.9 if z == 1 else 0.8) for z, b in enumerate(boxes)]
    dets.append(_det(3, [30, 25, 50, 45], 0.95))  # overlaps the 20 px box of slice 2 (IoU 0.2, iomin 0.35): not linked
    cands = _candidates(dets, scan)
    lesion = next(c for c in cands if len(c.detections) == 5)
    assert [d.z for d in lesion.detections] == [0, 1, 2, 3, 4]
    assert lesion.info["key_slice"] == lesion.info["measured_on_slice"] == 2
    assert lesion.info["long_axis_mm"] == pytest.approx(np.hypot(20, 20))
    assert lesion.info["max_score"] == pytest.approx(0.9)
    assert lesion.info["volume_mm3"] == pytest.approx((64 + 196 + 400 + 196 + 224) * 2.0)


def test_links_cross_interpolated_slices_not_unprocessed_ones():
    """An interpolated slice (no source image, never run) is stepped over; a slice that was not run
    (air only, or outside --slices) ends the track. The volume counts the interpolated slice with
    the mean area of its neighbours."""
    scan = _scan(interpolated=(2,))
    dets = [_det(z, [10, 10, 20, 20], 0.9) for z in (1, 3, 5)]
    cands = _candidates(dets, scan, processed={0, 1, 3, 5})  # 4: not run
    assert sorted(len(c.detections) for c in cands) == [1, 2]
    pair = next(c for c in cands if len(c.detections) == 2)
    assert [d.z for d in pair.detections] == [1, 3] and pair.info["z_extent_mm"] == 6.0
    assert pair.info["volume_mm3"] == pytest.approx(3 * 100 * 2.0)


def _blob(z: int, box, score: float) -> P.Detection:
    """A detection whose mask is the ellipse inscribed in its box (as a lesion's is; 1 mm pixels)."""
    x1, y1, x2, y2 = box
    yy, xx = np.mgrid[0:80, 0:80] + 0.5
    full = ((xx - (x1 + x2) / 2) / ((x2 - x1) / 2)) ** 2 + ((yy - (y1 + y2) / 2) / ((y2 - y1) / 2)) ** 2 <= 1
    return P.Detection(0, z, z, score, np.array(box, float), full[y1:y2, x1:x2].copy(), (x1, y1), P.diameters(full, 1.0, 1.0))


LESION = [10, 10, 40, 40]
PART = [31, 15, 51, 35]  # sticks out of LESION: IoU 0.16, 45 % of the box and 37 % of the mask inside, its centre outside


def test_parallel_track_of_one_lesion_is_one_candidate():
    """A lesion on slices 0-4 and beside it, on the same slices, a lower-scoring partial box of it (IoU
    0.16, 45 % inside: it survives the per-slice rules; its centre lies outside the lesion's mask). As
    two tracks side by side they were two candidates for one lesion; 37 % of the lower one's mask lies
    inside the better one's on every slice, so it is a part of it."""
    scan = _scan(8)
    dets = [_blob(z, LESION, 0.9) for z in range(5)] + [_blob(z, PART, 0.6) for z in range(5)]
    assert len(P.suppress_duplicates(dets)) == 10
    cands = _candidates(dets, scan)
    assert [_members(c) for c in cands] == [[(z, 10.0) for z in range(5)]]


def test_lesions_touching_on_one_slice_stay_two_and_lose_their_parts():
    """A lesion on slices 0-3 with a partial parallel track (absorbed), and a small lesion below it on
    slices 3-6 meeting it on slice 3 (27 % of its mask inside the big one's there): on its other slices
    it lies outside, so it stays a candidate of its own."""
    scan = _scan(8)
    big = [_blob(z, LESION, 0.9) for z in range(4)]
    small = [_blob(z, [20, 36, 32, 48], 0.7) for z in range(3, 7)]
    cands = _candidates(big + [_blob(z, PART, 0.6) for z in range(4)] + small, scan)
    assert [_members(c) for c in cands] == [[(z, 10.0) for z in range(4)], [(z, 20.0) for z in range(3, 7)]]


def test_small_box_inside_a_big_one_does_not_bridge():
    """A lesion on slices 0-4 (with an absorbed partial track) and a neighbour on slices 2-4 whose track
    starts with a small box lying inside the lesion (94 % of its mask; its higher score keeps it per
    slice) and then lies 6 % inside: its mean fraction inside, 0.35, would make it a part; on most of
    its slices it is not one, and it stays."""
    scan = _scan(8)
    lesion = [_blob(z, LESION, 0.8 if z == 2 else 0.9) for z in range(5)]
    neighbour = [_blob(2, [31, 31, 37, 37], 0.85)] + [_blob(z, [31, 31, 51, 51], 0.85) for z in (3, 4)]
    cands = _candidates(lesion + [_blob(z, PART, 0.6) for z in range(5)] + neighbour, scan)
    assert [_members(c) for c in cands] == [[(z, 10.0) for z in range(5)], [(2, 31.0), (3, 31.0), (4, 31.0)]]


def test_parallel_tracks_do_not_chain():
    """Three parallel tracks, each partly inside the next better one (37 % and 34 % of the mask; the
    third not inside the first): the second is a part of the first, and the third, inside only the
    dropped second, stays. Suppression by kept tracks only: merging would have made one of all three."""
    scan = _scan(8)
    dets = [_blob(z, b, s) for z in range(5) for b, s in ((LESION, 0.9), (PART, 0.7), ([42, 15, 62, 35], 0.5))]
    assert len(P.suppress_duplicates(dets)) == 15
    cands = _candidates(dets, scan)
    assert [_members(c) for c in cands] == [[(z, 10.0) for z in range(5)], [(z, 42.0) for z in range(5)]]


def test_short_fragment_beyond_a_lesions_end_is_absorbed():
    """A lesion on slices 0-4 and, on slice 5, a lower-scoring box with 24 % of its mask inside the
    lesion's last mask (too little to link: IoU 0.12, 36 % of the smaller box): a one-slice fragment
    beside a longer track, absorbed. A two-slice lesion beyond the end touching its box (no mask
    inside) stays."""
    scan = _scan(8)
    dets = [_blob(z, LESION, 0.9) for z in range(5)] + [_blob(5, [28, 28, 48, 48], 0.5)]
    dets += [_blob(z, [0, 36, 14, 50], 0.6) for z in (5, 6)]
    cands = _candidates(dets, scan)
    assert [_members(c) for c in cands] == [[(z, 10.0) for z in range(5)], [(5, 0.0), (6, 0.0)]]
