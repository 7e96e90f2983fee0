"""The LUNA16 volume-level FROC (a3d.evaluation.froc3d): hand-worked cases, the official script's
rules, and a naive per-threshold implementation written here on a few hundred random cases."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from a3d.errors import A3DError
from a3d.evaluation import Candidates, Findings, bootstrap_froc3d, froc3d, froc3d_ci
from a3d.evaluation.froc3d import LUNA16_FPS, cap_per_scan


def F(*rows):
    """Findings from (seriesuid, x, y, z, diameter_mm) rows."""
    return Findings(tuple(r[0] for r in rows), np.array([r[1:4] for r in rows], float).reshape(-1, 3),
                    np.array([r[4] for r in rows], float))


def C(*rows):
    """Candidates from (seriesuid, x, y, z, probability) rows."""
    return Candidates(tuple(r[0] for r in rows), np.array([r[1:4] for r in rows], float).reshape(-1, 3),
                      np.array([r[4] for r in rows], float))


# --- hand-worked cases -------------------------------------------------------------------------

def test_hit_on_the_radius_boundary_is_not_a_hit():
    """Nodule at (10, 20, 30), 10 mm: a centre at distance exactly 5 (3-4-0 triangle) is a false
    positive, as the official ``dist < radiusSquared``. Fails if the test becomes ``<=``."""
    ann = F(("a", 10, 20, 30, 10))
    on = froc3d(ann, C(("a", 13, 24, 30, 0.9)), ["a"])
    assert on.counts["n_detected"] == 0 and on.counts["n_false_positives"] == 1
    np.testing.assert_allclose(on.sensitivity, 0.0)


def test_hit_just_outside_the_radius():
    """Distance sqrt(3² + 4.001²), just over 5 mm from a 10 mm nodule's centre: a false positive.
    Fails if the diameter is taken as the radius."""
    r = froc3d(F(("a", 0, 0, 0, 10)), C(("a", 3, 4.001, 0, 0.5)), ["a"])
    assert r.counts["n_detected"] == 0 and r.counts["n_false_positives"] == 1


def test_hit_just_inside_the_radius():
    """Distance just under 5 is a hit detected with the candidate's probability; sensitivity 1 at
    every rate with no false positive. Fails if the radius is taken as a quarter of the diameter."""
    r = froc3d(F(("a", 0, 0, 0, 10)), C(("a", 3, 3.999, 0, 0.5)), ["a"])
    assert r.counts["n_detected"] == 1 and r.counts["n_false_positives"] == 0
    np.testing.assert_allclose(r.nodule_probability, [0.5])
    np.testing.assert_allclose(r.sensitivity, 1.0)
    assert r.cpm == pytest.approx(1.0)


def test_candidates_on_excluded_findings_are_ignored_and_minus_one_means_10_mm():
    """Excluded finding with diameter -1 (= 10 mm, radius 5): a candidate 4.9 mm away is ignored
    (neither TP nor FP), one 5.1 mm away is a false positive; an excluded finding of 4 mm ignores
    nothing 3 mm away; a candidate on an excluded finding *and* a nodule detects the nodule.
    Fails if excluded findings are dropped (4.9 mm becomes an FP), if -1 is used as a diameter
    (4.9 mm becomes an FP) or if a negative diameter is taken as its absolute value."""
    ann = F(("s", 100, 0, 0, 6))
    exc = F(("s", 0, 0, 0, -1), ("s", 0, 50, 0, 4), ("s", 102, 0, 0, 8))
    cand = C(("s", 4.9, 0, 0, 0.9), ("s", 0, 5.1, 0, 0.8), ("s", 0, 53, 0, 0.7), ("s", 101, 0, 0, 0.6))
    r = froc3d(ann, cand, ["s"], exc)
    assert r.counts["n_ignored_excluded"] == 1
    assert r.counts["n_false_positives"] == 2
    assert r.counts["n_detected"] == 1 and r.counts["n_nodules"] == 1  # excluded findings are not nodules
    np.testing.assert_allclose(r.fp_score, [0.8, 0.7])
    np.testing.assert_allclose(r.nodule_probability, [0.6])


def test_double_hits_count_once_with_the_highest_probability():
    """Scan A: nodule N1 hit by three candidates (0.2, 0.9, 0.5); scan B: an FP at 0.7 and nodule
    N2 hit at 0.3. Entries N1 0.9, FP 0.7, N2 0.3 over 2 scans: curve (0,0) (0,.5) (.5,.5) (.5,1),
    so the sensitivities are .5 .5 1 1 1 1 1 and the CPM 6/7. Fails if a nodule takes its lowest
    hit (CPM 5/7)."""
    ann = F(("A", 0, 0, 0, 10), ("B", 0, 0, 0, 10))
    cand = C(("A", 1, 0, 0, 0.2), ("A", 0, 1, 0, 0.9), ("A", 0, 0, 1, 0.5), ("B", 50, 0, 0, 0.7), ("B", 0, 0, 0, 0.3))
    r = froc3d(ann, cand, ["A", "B"])
    np.testing.assert_allclose(r.sensitivity, [0.5, 0.5, 1, 1, 1, 1, 1])
    assert r.cpm == pytest.approx(6 / 7)
    assert r.counts["n_false_positives"] == 1 and r.counts["n_double_hits"] == 2 and r.counts["n_detected"] == 2
    np.testing.assert_allclose(r.nodule_probability, [0.9, 0.3])


def test_scans_without_candidates_count_in_fps_per_scan():
    """One nodule hit at 0.5 and one FP at 0.9 on scan A. Over [A]: curve (0,0) (1,0) (1,1): CPM
    4/7. Over [A, B, C, D] (three scans with no candidate): (0,0) (.25,0) (.25,1): sensitivities
    0 1 1 1 1 1 1, CPM 6/7. Fails if FPs per scan divide by the scans that have candidates."""
    ann, cand = F(("A", 0, 0, 0, 10)), C(("A", 0, 0, 0, 0.5), ("A", 40, 0, 0, 0.9))
    one = froc3d(ann, cand, ["A"])
    assert one.cpm == pytest.approx(4 / 7)
    np.testing.assert_allclose(one.sensitivity, [0, 0, 0, 1, 1, 1, 1])
    four = froc3d(ann, cand, ["A", "B", "C", "D"])
    np.testing.assert_allclose(four.sensitivity, [0, 1, 1, 1, 1, 1, 1])
    assert four.cpm == pytest.approx(6 / 7)
    assert four.counts["n_scans"] == 4


def test_series_ids_are_strings_leading_zeros_matter():
    """Scans "007" and "7" are different: a candidate on "7" at the nodule's place (of "007") is a
    false positive, the one on "007" a hit. Fails if series IDs are compared as numbers."""
    ann = F(("007", 0, 0, 0, 10))
    r = froc3d(ann, C(("7", 0, 0, 0, 0.9), ("007", 0, 0, 0, 0.4)), ["007", "7"])
    assert r.counts["n_detected"] == 1 and r.counts["n_false_positives"] == 1
    np.testing.assert_allclose(r.nodule_probability, [0.4])
    np.testing.assert_allclose(r.fp_score, [0.9])


def test_a_candidate_inside_two_nodules_hits_both():
    """Official rule (the candidate is appended to every nodule whose sphere holds it; the script
    only prints "CAD mark detected two nodules"): nodules at x = 0 and 4 (10 mm), one candidate at
    x = 2 detects both, with no false positive. Fails if a candidate may hit only one nodule."""
    r = froc3d(F(("a", 0, 0, 0, 10), ("a", 4, 0, 0, 10)), C(("a", 2, 0, 0, 0.8)), ["a"])
    assert r.counts["n_detected"] == 2 and r.counts["n_false_positives"] == 0
    np.testing.assert_allclose(r.sensitivity, 1.0)


def interpolation_case():
    """8 scans, 4 nodules (s0..s3). Thresholds: 0.95 hit; 0.9 hit + 3 FPs (a tie: one diagonal
    segment); 0.7 FP; 0.6 hit; 0.5 four FPs; 0.4 hit + four FPs. FP step 1/8 per scan."""
    ann = F(*[(f"s{i}", 0, 0, 0, 10) for i in range(4)])
    far = lambda s, k, p: (s, 200 + 20 * k, 0, 0, p)  # noqa: E731  (no nodule there)
    cand = [("s0", 0, 0, 0, 0.95), ("s1", 0, 0, 0, 0.9), ("s2", 0, 0, 0, 0.6), ("s3", 0, 0, 0, 0.4)]
    cand += [far("s4", 0, 0.9), far("s5", 0, 0.9), far("s6", 0, 0.9), far("s7", 0, 0.7)]
    cand += [far(f"s{i}", 1, 0.5) for i in range(4, 8)] + [far(f"s{i}", 2, 0.4) for i in range(4, 8)]
    return ann, C(*cand), [f"s{i}" for i in range(8)]


def test_interpolation_at_the_seven_rates_and_cpm_by_hand():
    """Curve (0,0) (0,1/4) (3/8,1/2) (1/2,1/2) (1/2,3/4) (1,3/4) (3/2,1). By hand: at 1/8 on the
    diagonal 1/4 + (1/8)/(3/8)/4 = 1/3; at 1/4, 5/12; at 1/2 the last point there, 3/4; at 1,
    3/4; past the end (2, 4, 8) 1. CPM = (1/3 + 5/12 + 3/4 + 3/4 + 3) / 7 = 3/4. Fails if ties are
    walked one candidate at a time (1/8 -> 1/2), if the first point of a shared FP rate is taken
    (1/2 -> 1/2), or if the curve is extrapolated past its end."""
    r = froc3d(*interpolation_case())
    np.testing.assert_allclose(r.curve_fps, [0, 0, 3 / 8, 1 / 2, 1 / 2, 1, 3 / 2])
    np.testing.assert_allclose(r.curve_sensitivity, [0, 1 / 4, 1 / 2, 1 / 2, 3 / 4, 3 / 4, 1])
    np.testing.assert_allclose(r.sensitivity, [1 / 3, 5 / 12, 3 / 4, 3 / 4, 1, 1, 1])
    assert r.cpm == pytest.approx(0.75)
    np.testing.assert_allclose(r.fps, LUNA16_FPS)


def test_max_per_scan_keeps_those_above_the_next_probability():
    """Official cap: probabilities [0.9, 0.8, 0.8, 0.1] with at most 2 keeps only 0.9 (those
    strictly above the 3rd highest, 0.8); with at most 3, the three above 0.1; other scans are
    untouched. Fails if the cap keeps the top k by rank (0.9 and one 0.8)."""
    scan = np.array([0, 0, 0, 0, 1])
    prob = np.array([0.8, 0.9, 0.1, 0.8, 0.05])
    np.testing.assert_array_equal(cap_per_scan(scan, prob, 2), [False, True, False, False, True])
    np.testing.assert_array_equal(cap_per_scan(scan, prob, 3), [True, True, False, True, True])
    np.testing.assert_array_equal(cap_per_scan(scan, prob, 0), [True] * 5)
    r = froc3d(F(("a", 0, 0, 0, 10)), C(*[("a", 50, 0, 0, p) for p in (0.8, 0.9, 0.1, 0.8)]), ["a"], max_per_scan=2)
    assert r.counts["n_candidates"] == 1 and r.counts["n_candidates_dropped"] == 3


def test_unlisted_scans_are_left_out_with_a_warning_naming_them():
    """A candidate and a nodule on scan "x9" (not listed) are left out; the warnings name "x9".
    Fails if they are counted, or dropped silently."""
    r = froc3d(F(("a", 0, 0, 0, 10), ("x9", 0, 0, 0, 10)), C(("a", 0, 0, 0, 0.5), ("x9", 9, 9, 9, 0.7)), ["a"])
    assert r.counts["n_nodules"] == 1 and r.counts["n_candidates"] == 1 and r.counts["n_false_positives"] == 0
    assert len(r.warnings) == 2 and all("x9" in w for w in r.warnings)
    assert "nodule" in r.warnings[0] and "candidate" in r.warnings[1]


def test_no_nodule_gives_undefined_sensitivity_and_no_candidate_zero():
    """No nodule: NaN (not 0 or 1). Nodules but no candidate: 0 everywhere. Fails if the empty
    cases divide by zero into 0/inf or crash."""
    r = froc3d(F(), C(("a", 0, 0, 0, 0.5)), ["a"])
    assert np.isnan(r.sensitivity).all() and math.isnan(r.cpm)
    r = froc3d(F(("a", 0, 0, 0, 10)), C(), ["a", "b"])
    np.testing.assert_array_equal(r.sensitivity, 0.0)


def test_bad_scan_lists_are_errors():
    """An empty list (FPs per scan undefined) or a repeated scan is an A3DError. Fails if a repeat
    silently counts a scan twice."""
    with pytest.raises(A3DError, match="no scan"):
        froc3d(F(), C(), [])
    with pytest.raises(A3DError, match="'a' is listed twice"):
        froc3d(F(), C(), ["a", "b", "a"])


# --- against a naive implementation ----------------------------------------------------------

def naive_cpm(ann, exc, cand, scans, max_per_scan):
    """Per threshold: the system reporting every candidate with probability >= t; count the
    nodules with a reported candidate strictly inside and the reported candidates inside no
    nodule and no excluded finding; np.interp at the seven rates. Plain Python, one candidate
    and one finding at a time. ``ann``/``exc``/``cand``: lists of (uid, x, y, z, d or p)."""
    listed = set(scans)
    by_scan = defaultdict(list)
    for c in cand:
        if c[0] in listed:
            by_scan[c[0]].append(c)
    kept = []
    for cs in by_scan.values():
        if max_per_scan and len(cs) > max_per_scan:
            cut = sorted((c[4] for c in cs), reverse=True)[max_per_scan]
            cs = [c for c in cs if c[4] > cut]
        kept += cs

    def inside(c, f):
        d = 10.0 if f[4] < 0 else f[4]
        return (c[1] - f[1]) ** 2 + (c[2] - f[2]) ** 2 + (c[3] - f[3]) ** 2 < (d / 2) ** 2

    nodules = [a for a in ann if a[0] in listed]
    findings = nodules + [e for e in exc if e[0] in listed]
    xs, ys = [0.0], [0.0]
    for t in sorted({c[4] for c in kept}, reverse=True):
        on = [c for c in kept if c[4] >= t]
        found = sum(any(c[0] == n[0] and inside(c, n) for c in on) for n in nodules)
        fp = sum(not any(c[0] == f[0] and inside(c, f) for f in findings) for c in on)
        xs.append(fp / len(scans))
        ys.append(found / len(nodules))
    sens = np.interp(LUNA16_FPS, xs, ys)
    return sens, float(np.mean(sens))


def random_case(rng):
    """Scans with leading-zero names, nodules, excluded findings (some -1), candidates near and on
    the spheres, on unlisted scans, with tied probabilities."""
    n_scans = int(rng.integers(1, 7))
    scans = [f"{i:03d}" for i in range(n_scans)]
    ann, exc, cand = [], [], []
    for s in scans + ["999"]:
        for _ in range(int(rng.integers(0, 4))):
            ann.append((s, *rng.integers(-60, 60, 3).astype(float), float(rng.choice([4, 6, 10, 12.5]))))
        for _ in range(int(rng.integers(0, 3))):
            exc.append((s, *rng.integers(-60, 60, 3).astype(float), float(rng.choice([-1, 4, 8]))))
        targets = [f for f in ann + exc if f[0] == s]
        for _ in range(int(rng.integers(0, 12))):
            p = float(rng.integers(0, 12)) / 11  # ties on purpose
            if targets and rng.random() < 0.6:
                f = targets[int(rng.integers(len(targets)))]
                r = (10.0 if f[4] < 0 else f[4]) / 2
                # inside, exactly on the sphere (axis-aligned, exact in binary), or just outside
                off = float(rng.choice([0.0, 0.5 * r, r, r + 0.25, rng.uniform(-r, r)]))
                axis = int(rng.integers(3))
                xyz = list(f[1:4])
                xyz[axis] += off
                cand.append((s, *xyz, p))
            else:
                cand.append((s, *rng.integers(-80, 80, 3).astype(float), p))
    return scans, ann, exc, cand


def to_findings(rows):
    return F(*rows) if rows else F()


def to_candidates(rows):
    return C(*rows) if rows else C()


def test_against_a_naive_per_threshold_implementation():
    """300 seeded random cases (ties, boundary hits, excluded findings, unlisted scans, caps of
    0, 2 and 100 per scan): sensitivities and CPM equal the naive loop's. Fails on any of the
    rules above (e.g. ``<=`` at the boundary, ignoring excluded findings, the cap by rank)."""
    rng = np.random.default_rng(2024)
    checked = 0
    for _ in range(300):
        scans, ann, exc, cand = random_case(rng)
        cap = int(rng.choice([0, 2, 100]))
        r = froc3d(to_findings(ann), to_candidates(cand), scans, to_findings(exc), max_per_scan=cap)
        if not any(a[0] in scans for a in ann):
            assert math.isnan(r.cpm)
            continue
        sens, cpm = naive_cpm(ann, exc, cand, scans, cap)
        np.testing.assert_allclose(r.sensitivity, sens, atol=1e-12)
        assert r.cpm == pytest.approx(cpm, abs=1e-12)
        checked += 1
    assert checked > 200


def test_bootstrap_rows_equal_the_naive_froc_of_the_resampled_scans():
    """Row b of the bootstrap is the FROC of the scan list ``default_rng(seed).integers(0, S,
    (B, S))[b]``, each draw a separate copy of its scan (renamed, so the naive loop counts it
    again). Fails if resampled scans are not weighted by their draw count, or if the FP rate
    divides by the distinct scans drawn."""
    rng = np.random.default_rng(7)
    for _ in range(6):
        scans, ann, exc, cand = random_case(rng)
        r = froc3d(to_findings(ann), to_candidates(cand), scans, to_findings(exc), max_per_scan=0)
        samples = bootstrap_froc3d(r, n_bootstrap=15, seed=11)
        draws = np.random.default_rng(11).integers(0, len(scans), size=(15, len(scans)))
        for b in range(15):
            copy = lambda rows, k, s: [(f"{s}#{k}", *x[1:]) for x in rows if x[0] == s]  # noqa: E731
            picked = [scans[i] for i in draws[b]]
            a2 = [x for k, s in enumerate(picked) for x in copy(ann, k, s)]
            e2 = [x for k, s in enumerate(picked) for x in copy(exc, k, s)]
            c2 = [x for k, s in enumerate(picked) for x in copy(cand, k, s)]
            if not a2:
                assert np.isnan(samples[b]).all()
                continue
            sens, _ = naive_cpm(a2, e2, c2, [f"{s}#{k}" for k, s in enumerate(picked)], 0)
            np.testing.assert_allclose(samples[b], sens, atol=1e-12)


def test_ci_is_the_official_order_statistic_and_seeded():
    """The interval is sorted(samples)[floor(0.025 n)] and [floor(0.975 n)] over the valid
    resamples (the official compute_mean_ci), for each rate and for the CPM; the same seed gives
    the same numbers, another seed other numbers. Fails if np.percentile is used instead, or if
    the seed is ignored."""
    ann, cand, scans = interpolation_case()
    r = froc3d(ann, cand, scans)
    ci = froc3d_ci(r, n_bootstrap=200, seed=5)
    s = bootstrap_froc3d(r, 200, seed=5)
    valid = s[np.isfinite(s[:, 0])]
    n = valid.shape[0]
    assert ci["n_valid"] == n and ci["level"] == 0.95 and ci["seed"] == 5
    for j in range(7):
        v = np.sort(valid[:, j])
        assert ci["sensitivity"][j] == [v[math.floor(0.025 * n)], v[math.floor(0.975 * n)]]
    cpm = np.sort(valid.mean(axis=1))
    assert ci["cpm"] == [cpm[math.floor(0.025 * n)], cpm[math.floor(0.975 * n)]]
    assert ci["cpm"][0] <= r.cpm <= ci["cpm"][1]
    assert froc3d_ci(r, 200, seed=5) == ci
    assert not np.array_equal(bootstrap_froc3d(r, 200, seed=6), s, equal_nan=True)
