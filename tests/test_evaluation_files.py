"""Predictions files, ground truth from lesion records, subsets and the metrics dict."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from a3d.errors import A3DError
from a3d.evaluation import (
    ImagePredictions,
    evaluate_predictions,
    froc,
    ground_truth_from_records,
    load_predictions,
    metrics_to_markdown,
    read_metrics,
    save_predictions,
    write_metrics,
)
from a3d.evaluation.breakdown import DEFAULT_INTERVAL_BINS, breakdowns, diameter_bins, image_subset, lesion_subset


@dataclass
class Rec:
    """A LesionRecord look-alike (duck typed by ground_truth_from_records)."""

    file_name: str
    box: np.ndarray
    lesion_type: int = -1
    noisy: bool = False
    split: int = 3
    diameters_px: tuple = (20.0, 10.0)
    spacing: tuple = (0.8, 0.8, 5.0)
    line: int = 0

    @property
    def image_id(self) -> str:
        return self.file_name[:-4]


def P(iid, boxes, scores):
    return ImagePredictions(iid, np.array(boxes, dtype=float).reshape(-1, 4), np.array(scores, dtype=float))


# --------------------------------------------------------------------------- predictions files


def sample_preds():
    return [
        P("000001_01_01_010", [[1.5, 2, 30.25, 40], [0, 0, 5, 5]], [0.9, 0.1]),
        P("000002_01_01_020", [], []),
        P("000003_01_01_030", [[10, 10, 10, 10]], [1e-5]),
    ]


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_predictions_round_trip(tmp_path, suffix):
    preds = sample_preds()
    path = save_predictions(tmp_path / f"p{suffix}", preds)
    back = load_predictions(path)
    want = preds if suffix == ".json" else [p for p in preds if len(p.scores)]  # CSV cannot list empty images
    assert [p.image_id for p in back] == [p.image_id for p in want]
    for a, b in zip(back, want):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
    if suffix == ".json":
        doc = json.loads(path.read_text())
        assert doc["format"] == "a3d-predictions" and doc["version"] == 1
        assert doc["images"][1] == {"image_id": "000002_01_01_020", "boxes": [], "scores": []}
    else:
        assert path.read_text().splitlines()[0] == "image_id,x1,y1,x2,y2,score"
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temporary


def _json(images):
    return json.dumps({"format": "a3d-predictions", "version": 1, "images": images})


@pytest.mark.parametrize(
    "name,text,match",
    [
        ("empty.json", "", "empty"),
        ("blank.json", "  \n", "empty"),
        ("broken.json", '{"format": "a3d-predictions", "images": [', "not valid JSON at line 1"),
        ("other.json", '{"format": "coco"}', '"format": "a3d-predictions"'),
        ("ver.json", '{"format": "a3d-predictions", "version": 9, "images": []}', "version"),
        ("inv.json", _json([{"image_id": "a", "boxes": [[10, 0, 5, 5]], "scores": [1]}]), r"image 0 \('a'\), box 0: expected x2 >= x1"),
        ("nan.json", '{"format": "a3d-predictions", "version": 1, "images": [{"image_id": "a", "boxes": [[0,0,1,1]], "scores": [NaN]}]}', "score must be a finite"),
        ("count.json", _json([{"image_id": "a", "boxes": [[0, 0, 1, 1]], "scores": [1, 2]}]), "1 boxes but 2 scores"),
        ("three.json", _json([{"image_id": "a", "boxes": [[0, 0, 1]], "scores": [1]}]), "4 numbers"),
        ("dup.json", _json([{"image_id": "a", "boxes": [], "scores": []}] * 2), "repeated"),
        ("noid.json", _json([{"boxes": [], "scores": []}]), "image 0: missing or non-string image_id"),
        ("str.json", _json([{"image_id": "a", "boxes": [["x", 0, 1, 1]], "scores": [1]}]), "numbers"),
        ("hdr.csv", "id,a,b\n", "line 1: expected the header"),
        ("row.csv", "image_id,x1,y1,x2,y2,score\na,0,0,1,1,0.5\nb,0,0,1\n", "line 3: expected 6 fields"),
        ("inv.csv", "image_id,x1,y1,x2,y2,score\na,0,0,1,1,0.5\nb,0,9,1,1,0.5\n", r"line 3 \('b'\): expected x2 >= x1 and y2 >= y1"),
        ("nan.csv", "image_id,x1,y1,x2,y2,score\na,0,0,1,1,nan\n", "line 2 .*finite"),
        ("txt.csv", "image_id,x1,y1,x2,y2,score\na,0,0,1,1,high\n", "line 2 .*numbers"),
    ],
)
def test_bad_predictions_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(A3DError, match=match) as e:
        load_predictions(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_predictions_file(tmp_path):
    with pytest.raises(A3DError, match="not found"):
        load_predictions(tmp_path / "nope.json")


def test_save_rejects_bad_predictions(tmp_path):
    with pytest.raises(A3DError, match="finite"):
        save_predictions(tmp_path / "p.json", [P("a", [[0, 0, 1, 1]], [float("nan")])])
    assert not (tmp_path / "p.json").exists()


# --------------------------------------------------------------------------- ground truth


def records():
    b = lambda *v: np.array(v, dtype=np.float32)  # noqa: E731
    return [
        Rec("000001_01_01_010.png", b(0, 0, 9, 9), lesion_type=4, diameters_px=(10, 5), spacing=(0.7, 0.7, 1.25), line=2),
        Rec("000001_01_01_010.png", b(50, 50, 69, 69), lesion_type=5, diameters_px=(50, 20), spacing=(0.7, 0.7, 1.25), line=3),
        Rec("000002_01_01_020.png", b(0, 0, 19, 19), lesion_type=4, diameters_px=(20, 10), spacing=(1.0, 1.0, 5.0), line=4),
        Rec("000002_01_01_020.png", b(30, 30, 39, 39), noisy=True, line=5),
        Rec("000003_01_01_030.png", b(0, 0, 9, 9), noisy=True, line=6),  # only noisy: no image
        Rec("000004_01_01_040.png", b(0, 0, 9, 9), split=2, line=7),
    ]


def test_ground_truth_from_records():
    gt = ground_truth_from_records(records(), "test")
    assert gt.image_ids == ["000001_01_01_010", "000002_01_01_020"]
    assert gt.n_lesions == 3
    im0, im1 = gt.images
    np.testing.assert_array_equal(im0.boxes, [[0, 0, 9, 9], [50, 50, 69, 69]])
    np.testing.assert_array_equal(im0.lesion_types, [4, 5])
    np.testing.assert_allclose(im0.diameters_mm, [7.0, 35.0], rtol=1e-6)  # long px x x-spacing
    assert im0.slice_interval == 1.25 and im1.slice_interval == 5.0
    assert im0.lines == [2, 3]
    assert len(ground_truth_from_records(records(), "test", drop_noisy=False).images) == 3
    assert ground_truth_from_records(records(), 2).image_ids == ["000004_01_01_040"]
    assert len(ground_truth_from_records(records())) == 3  # all splits
    with pytest.raises(A3DError, match="unknown split"):
        ground_truth_from_records(records(), "dev")


# --------------------------------------------------------------------------- evaluate + subsets


def test_evaluate_predictions_overall_and_subsets():
    gt = ground_truth_from_records(records(), "test")
    preds = [
        # image 1 (1.25 mm): hits the lung lesion (35 mm) first, then an FP, then the liver lesion (7 mm)
        P("000001_01_01_010", [[50, 50, 69, 69], [200, 200, 220, 220], [0, 0, 9, 9]], [0.9, 0.8, 0.7]),
        # image 2 (5 mm): one FP, lower than everything, and its liver lesion (14 mm) missed
        P("000002_01_01_020", [[300, 300, 310, 310]], [0.6]),
    ]
    m = evaluate_predictions(preds, gt, fps=(0.5, 1, 2, 4), n_bootstrap=50, seed=1)
    # pooled: hit(.9) FP(.8) hit(.7) FP(.6); 2 images, 3 lesions -> (0,1/3) (.5,1/3) (.5,2/3) (1,2/3)
    np.testing.assert_allclose(m["sensitivity"], [2 / 3] * 4)
    assert m["n_images"] == 2 and m["n_lesions"] == 3 and m["n_false_positives"] == 2
    lo, hi = m["ci"]["average"]
    assert lo <= m["average"] <= hi

    bd = m["breakdowns"]
    thin, thick = bd["slice_interval"]
    # <= 2 mm keeps image 1 alone: (0, 1/2) (1, 1/2) (1, 1) -> .5 at 0.5 FP, 1 from 1 FP
    assert (thin["name"], thin["n_images"], thin["n_lesions"]) == ("<= 2 mm", 1, 2)
    np.testing.assert_allclose(thin["sensitivity"], [0.5, 1, 1, 1])
    # 5 mm keeps image 2 alone: its FP, no hit
    assert (thick["n_images"], thick["n_lesions"]) == (1, 1)
    np.testing.assert_allclose(thick["sensitivity"], [0, 0, 0, 0])

    by_type = {e["type"]: e for e in bd["lesion_type"]}
    liver, lung = by_type[4], by_type[5]
    # liver: the first box overlaps the lung lesion -> neither (not an FP); FP(.8) FP(.6) stay;
    # 2 images, 2 liver lesions: (0, 0) (.5, 0) (.5, 1/2) (1, 1/2)
    assert liver["n_images"] == 2 and liver["n_lesions"] == 2 and liver["kind"] == "lesion"
    np.testing.assert_allclose(liver["sensitivity"], [0.5] * 4)
    np.testing.assert_allclose(lung["sensitivity"], [1.0] * 4)
    assert by_type[1]["n_lesions"] == 0 and by_type[1]["sensitivity"] == [None] * 4

    small, mid, large = bd["diameter"]
    assert [e["name"] for e in bd["diameter"]] == ["< 10 mm", "10-30 mm", ">= 30 mm"]
    assert (small["n_lesions"], mid["n_lesions"], large["n_lesions"]) == (1, 1, 1)
    np.testing.assert_allclose(small["sensitivity"], [1.0] * 4)  # 7 mm liver lesion, hit at .7
    np.testing.assert_allclose(mid["sensitivity"], [0.0] * 4)  # 20 mm, missed
    np.testing.assert_allclose(large["sensitivity"], [1.0] * 4)


def test_lesion_subset_equals_froc_with_other_lesions_ignored():
    # the liver subset by hand through froc(gt_ignore=...): the neither rule, not deleting the other lesion
    gt = [np.array([[0, 0, 9, 9], [50, 50, 69, 69]], float)]
    pb = [np.array([[50, 50, 69, 69], [200, 200, 220, 220], [0, 0, 9, 9]], float)]
    ps = [np.array([0.9, 0.8, 0.7])]
    ignored = froc(pb, ps, gt, fps=(0.5, 1), gt_ignore=[np.array([False, True])])
    np.testing.assert_allclose(ignored.sensitivities, [0.0, 1.0])
    assert ignored.n_false_positives == 1
    deleted = froc(pb, ps, [gt[0][:1]], fps=(0.5, 1))  # counting the lung hit as an FP instead
    assert deleted.n_false_positives == 2


def test_diameter_bins():
    assert diameter_bins((10, 30)) == [("< 10 mm", 0.0, 10.0), ("10-30 mm", 10.0, 30.0), (">= 30 mm", 30.0, float("inf"))]


def test_evaluate_rejects_unknown_and_missing_images():
    gt = ground_truth_from_records(records(), "test")
    with pytest.raises(A3DError, match=r"image 0 \('000004_01_01_040'\) is not among the 2 evaluated images of split test"):
        evaluate_predictions([P("000004_01_01_040", [], [])], gt, n_bootstrap=0)
    only = [P("000001_01_01_010", [], [])]
    with pytest.raises(A3DError, match="no entry for 1 of the 2 evaluated images"):
        evaluate_predictions(only, gt, n_bootstrap=0)
    both = [P("000001_01_01_010.png", [], []), P("000001_01_01_010", [], [])]
    with pytest.raises(A3DError, match="appears more than once"):
        evaluate_predictions(both, gt, n_bootstrap=0, missing="empty")
    m = evaluate_predictions(only, gt, n_bootstrap=0, missing="empty")
    assert m["n_images"] == 2 and m["ci"] is None and m["sensitivity"] == [0.0] * 6


def test_metrics_files(tmp_path):
    gt = ground_truth_from_records(records(), "test")
    preds = [P("000001_01_01_010", [[0, 0, 9, 9]], [0.5]), P("000002_01_01_020", [[0, 0, 19, 19]], [0.4])]
    m = evaluate_predictions(preds, gt, n_bootstrap=20, run={"operator": "a3d", "slices": 3, "name": "r1"})
    j, md = write_metrics(m, tmp_path)
    back = read_metrics(j)
    assert back["format"] == "a3d-metrics" and back["run"] == {"operator": "a3d", "slices": 3, "name": "r1"}
    assert back["sensitivity"] == pytest.approx([2 / 3] * 6)
    assert back["breakdowns"]["lesion_type"][0]["sensitivity"] == [None] * 6  # NaN -> null
    text = md.read_text()
    assert "| all | 66.67 | 66.67 |" in text and "By lesion type" in text
    assert metrics_to_markdown(m) == text
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(A3DError, match="bad.json"):
        read_metrics(tmp_path / "bad.json")


def test_subsets_derived_from_one_classification_match_recomputation():
    """Subsets reuse the overall IoU pairs; recomputing each subset with froc() from scratch agrees."""
    from a3d.evaluation import classify, froc_from_classification
    from a3d.evaluation.groundtruth import GroundTruth, ImageGroundTruth

    rng = np.random.default_rng(5)
    for case in range(40):
        ims, per_image = [], []
        for i in range(int(rng.integers(1, 15))):
            g = int(rng.integers(0, 4))
            xy = rng.uniform(0, 50, (g, 2))
            boxes = np.round(np.concatenate([xy, xy + rng.uniform(4, 30, (g, 2))], 1))
            ims.append(ImageGroundTruth(f"i{i}", boxes, rng.choice([4, 5, -1], g), rng.uniform(2, 50, g),
                                        float(rng.choice([1.0, 2.0, 5.0, np.nan]))))
            n = int(rng.integers(0, 6))
            if g:  # jittered lesion boxes: hits, misses, duplicates
                pb = np.round(boxes[rng.integers(g, size=n)] + rng.normal(0, 3, (n, 4)))
            else:
                p0 = rng.uniform(0, 60, (n, 2))
                pb = np.round(np.concatenate([p0, p0 + 10], 1))
            pb[:, 2:] = np.maximum(pb[:, 2:], pb[:, :2])
            per_image.append((pb, np.round(rng.random(n), 1)))
        gt = GroundTruth(ims)
        c = classify([p[0] for p in per_image], [p[1] for p in per_image], [im.boxes for im in gt.images])
        fast = breakdowns(per_image, gt, classification=c)
        for (label, lo, hi), e in zip(DEFAULT_INTERVAL_BINS, fast["slice_interval"]):
            keep = np.array([lo - 1e-3 <= im.slice_interval <= hi + 1e-3 for im in ims])
            slow = image_subset(per_image, gt, keep)
            assert e["sensitivity"] == slow.as_dict()["sensitivity"], (case, label)
            assert e["n_images"] == slow.n_images
        for t, e in zip([1, 2, 3, 4, 5, 6, 7, 8, -1], fast["lesion_type"]):
            slow = lesion_subset(per_image, gt, [im.lesion_types == t for im in ims])
            assert e["sensitivity"] == slow.as_dict()["sensitivity"], (case, t)
        for (label, lo, hi), e in zip(diameter_bins(), fast["diameter"]):
            slow = lesion_subset(per_image, gt, [(im.diameters_mm >= lo) & (im.diameters_mm < hi) for im in ims])
            assert e["sensitivity"] == slow.as_dict()["sensitivity"], (case, label)
        assert froc_from_classification(c).as_dict() == froc(*(list(x) for x in zip(*per_image)), [im.boxes for im in ims]).as_dict()


def test_max_per_image_keeps_the_highest_scoring():
    gt = ground_truth_from_records(records(), "test")
    # image 1: 3 FPs scored above its two hits; a cap of 3 keeps the FPs .95 .9 and the hit .85
    far = [[200 + 10 * k, 200, 205 + 10 * k, 205] for k in range(3)]
    boxes = [far[0], [50, 50, 69, 69], far[1], far[2], [0, 0, 9, 9]]
    preds = [P("000001_01_01_010", boxes, [0.95, 0.85, 0.9, 0.8, 0.1]), P("000002_01_01_020", [], [])]
    m = evaluate_predictions(preds, gt, fps=(1, 100), n_bootstrap=0, max_per_image=3)
    assert m["n_predictions"] == 3 and m["n_predictions_dropped"] == 2 and m["max_per_image"] == 3
    np.testing.assert_allclose(m["sensitivity"], [1 / 3, 1 / 3])
    m = evaluate_predictions(preds, gt, fps=(1, 100), n_bootstrap=0, max_per_image=None)
    assert m["n_predictions"] == 5 and m["n_predictions_dropped"] == 0
    np.testing.assert_allclose(m["sensitivity"], [1 / 3, 2 / 3])
