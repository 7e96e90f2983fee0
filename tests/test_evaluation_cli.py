"""``a3d eval`` and ``a3d report`` end to end through ``a3d.cli.main`` on a hand-made DL_info.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from a3d.cli import main
from a3d.evaluation import ImagePredictions, save_predictions

HEADER = [
    "File_name", "Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Measurement_coordinates",
    "Bounding_boxes", "Lesion_diameters_Pixel_", "Normalized_lesion_location", "Coarse_lesion_type",
    "Possibly_noisy", "Slice_range", "Spacing_mm_px_", "Image_size", "DICOM_windows", "Patient_gender",
    "Patient_age", "Train_Val_Test",
]


def row(patient, key, box1, ltype, noisy, spacing, split, diam=(20.0, 10.0)):
    """One DL_info row; ``box1`` in the file's 1-based pixels."""
    x1, y1, x2, y2 = box1
    recist = [x1 + 5, y1 + 5, x2 - 5, y2 - 5, x1 + 5, y2 - 5, x2 - 5, y1 + 5]
    j = lambda v: ", ".join(f"{float(x):g}" for x in v)  # noqa: E731
    return [
        f"{patient:06d}_01_01_{key:03d}.png", str(patient), "1", "1", str(key), j(recist), j(box1), j(diam),
        "0.5, 0.5, 0.5", str(ltype), str(noisy), f"1, {key + 10}", j(spacing), "512, 512", "-175, 275", "F", "61",
        str(split),
    ]


ROWS = [
    # test split: image 1 (1.25 mm) with a liver and a lung lesion; image 2 (5 mm) with one liver lesion
    row(1, 10, (1, 1, 10, 10), 4, 0, (0.7, 0.7, 1.25), 3, diam=(10, 5)),
    row(1, 10, (51, 51, 70, 70), 5, 0, (0.7, 0.7, 1.25), 3, diam=(50, 20)),
    row(2, 20, (1, 1, 20, 20), 4, 0, (1.0, 1.0, 5.0), 3),
    row(2, 20, (31, 31, 40, 40), 7, 1, (1.0, 1.0, 5.0), 3),  # noisy: dropped
    row(3, 30, (1, 1, 10, 10), 2, 0, (0.8, 0.8, 2.5), 2),  # validation
]


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "DeepLesion"
    root.mkdir()
    with open(root / "DL_info.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        w.writerows(ROWS)
    return root


def test_records_have_the_attributes_ground_truth_reads(data_root):
    from a3d.data import read_dl_info

    r = read_dl_info(data_root / "DL_info.csv")[0]
    for name in ("image_id", "box", "diameters_px", "spacing", "lesion_type", "noisy", "split", "line"):
        assert hasattr(r, name), name
    np.testing.assert_array_equal(r.box, [0, 0, 9, 9])  # 1-based file -> 0-based


def preds_test_split():
    return [
        ImagePredictions("000001_01_01_010", np.array([[50, 50, 69, 69], [200, 200, 220, 220], [0, 0, 9, 9]], float),
                         np.array([0.9, 0.8, 0.7])),
        ImagePredictions("000002_01_01_020", np.array([[300, 300, 310, 310]], float), np.array([0.6])),
    ]


OUTPUTS = ("predictions.json", "predictions.csv", "metrics.json", "metrics.md", "froc.png", "froc.svg")


def test_eval_predictions_end_to_end(tmp_path, data_root, capsys):
    pred = save_predictions(tmp_path / "preds.json", preds_test_split())
    out = tmp_path / "out"
    code = main(["eval", "--predictions", str(pred), "--data", str(data_root), "--split", "test", "--out", str(out),
                 "--bootstrap", "200", "--name", "mine", "--operator", "a3d", "--slices", "3"])
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    assert (out / "froc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (out / "froc.svg").read_bytes()[:2000]
    m = json.loads((out / "metrics.json").read_text())
    # (0, 1/3) (.5, 1/3) (.5, 2/3) (1, 2/3): 2 images, 3 non-noisy lesions
    assert m["n_images"] == 2 and m["n_lesions"] == 3 and m["split"] == "test"
    assert m["sensitivity"] == pytest.approx([2 / 3] * 6)
    assert m["run"] == {"name": "mine", "operator": "a3d", "slices": 3}
    assert m["ci"]["n_bootstrap"] == 200
    thin = m["breakdowns"]["slice_interval"][0]
    assert thin["n_images"] == 1 and thin["sensitivity"][:2] == pytest.approx([0.5, 1.0])
    assert "66.67" in capsys.readouterr().out


def test_eval_csv_predictions_missing_images_are_empty(tmp_path, data_root):
    pred = save_predictions(tmp_path / "preds.csv", preds_test_split()[:1])  # image 2 not named
    out = tmp_path / "out"
    assert main(["eval", "--predictions", str(pred), "--data", str(data_root / "DL_info.csv"), "--split", "test",
                 "--out", str(out), "--bootstrap", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # image 2 with no prediction: hit(.9) FP(.8) hit(.7) over 2 images -> (0, 1/3) (.5, 1/3) (.5, 2/3)
    assert m["n_images"] == 2 and m["sensitivity"] == pytest.approx([2 / 3] * 6) and m["ci"] is None
    written = json.loads((out / "predictions.json").read_text())["images"]
    assert [im["image_id"] for im in written] == ["000001_01_01_010", "000002_01_01_020"]
    assert written[1]["boxes"] == []


def _one_line_error(capsys, *parts):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("a3d eval: error:"), err
    for p in parts:
        assert p in err, err


def test_eval_bad_inputs_exit_2(tmp_path, data_root, capsys):
    """Each bad input: exit 2, one line naming the problem, and no output folder.

    Fails if a failing run writes (part of) its outputs, e.g. with ``Path(args.out).mkdir()`` moved
    to the start of ``a3d.cli.eval.run``."""
    base = ["--data", str(data_root), "--split", "test", "--out", str(tmp_path / "o"), "--bootstrap", "0"]
    # an image of another split
    wrong = save_predictions(tmp_path / "wrong.json", [ImagePredictions("000003_01_01_030", np.zeros((0, 4)), np.zeros(0))])
    assert main(["eval", "--predictions", str(wrong), *base]) == 2
    _one_line_error(capsys, "wrong.json", "000003_01_01_030", "not among the 2 evaluated images")
    # an image missing from a JSON file
    part = save_predictions(tmp_path / "part.json", preds_test_split()[:1])
    assert main(["eval", "--predictions", str(part), *base]) == 2
    _one_line_error(capsys, "part.json", "000002_01_01_020")
    ok = ["--data", str(data_root), "--split", "test", "--out", str(tmp_path / "ok"), "--bootstrap", "0"]
    assert main(["eval", "--predictions", str(part), *ok, "--missing-as-empty"]) == 0
    assert (tmp_path / "ok" / "metrics.json").is_file()
    capsys.readouterr()
    # malformed file
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "a3d-predictions", "version": 1, "images": [{"image_id": "x", "boxes": [[5, 0, 1, 1]], "scores": [1]}]}')
    assert main(["eval", "--predictions", str(bad), *base]) == 2
    _one_line_error(capsys, "bad.json", "x2 >= x1")
    (tmp_path / "empty.json").write_text("")
    assert main(["eval", "--predictions", str(tmp_path / "empty.json"), *base]) == 2
    _one_line_error(capsys, "empty.json", "empty")
    # no DL_info.csv
    assert main(["eval", "--predictions", str(part), "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "DL_info.csv not found")
    # neither / both of checkpoint and --predictions
    assert main(["eval", *base]) == 2
    _one_line_error(capsys, "exactly one")
    assert main(["eval", "ckpt.pt", "--predictions", str(part), *base]) == 2
    _one_line_error(capsys, "exactly one")
    assert main(["eval", "--predictions", str(part), *base, "--interval-bin", "thin"]) == 2
    _one_line_error(capsys, "LABEL=LO:HI")
    assert main(["eval", "--predictions", str(part), *base, "--fps", "1,x"]) == 2
    _one_line_error(capsys, "--fps")
    # none of the failed runs above left anything behind
    assert not (tmp_path / "o").exists()


def test_eval_checkpoint_end_to_end(tiny_checkpoint, synth_root, tmp_path, capsys):
    """`a3d eval CHECKPOINT` runs the real model over the split; its predictions file holds exactly what
    predict_split returns, every image of the split is scored, and the run is labelled from the config."""
    from a3d.data import read_dl_info
    from a3d.engine.evaluate import load_model, predict_split
    from a3d.evaluation import load_predictions

    out = tmp_path / "out"
    assert main(["eval", str(tiny_checkpoint), "--data", str(synth_root), "--split", "val", "--out", str(out),
                 "--device", "cpu", "--bootstrap", "0"]) == 0
    for name in OUTPUTS:
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    _, cfg = load_model(tiny_checkpoint, "cpu")
    assert m["run"]["operator"] == cfg.model.operator and m["run"]["slices"] == cfg.model.slices
    val_images = {r.image_id for r in read_dl_info(synth_root / "DL_info.csv") if r.split == 2 and not r.noisy}
    assert m["n_images"] == len(val_images)
    written = {p.image_id: p for p in load_predictions(out / "predictions.json")}
    assert set(written) == val_images
    for p in predict_split(tiny_checkpoint, synth_root, "val", device="cpu"):
        np.testing.assert_allclose(written[p.image_id].boxes.reshape(-1, 4), p.boxes.reshape(-1, 4), atol=1e-3)
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "missing.pt"), "--data", str(synth_root), "--out", str(out)]) == 2
    _one_line_error(capsys, "missing.pt", "not found")


def _fake_run(path: Path, sens, run=None):
    from a3d.evaluation.metrics import CURVE_GRID

    path.mkdir(parents=True)
    curve = [float(np.interp(x, [0.5, 1, 2, 4, 8, 16], sens)) for x in CURVE_GRID]
    m = {"format": "a3d-metrics", "version": 1, "split": "test", "fps": [0.5, 1, 2, 4, 8, 16], "sensitivity": sens,
         "average": float(np.mean(sens[:4])), "ci": {"average": [0.5, 0.9]},
         "curve": {"fps": [float(x) for x in CURVE_GRID], "sensitivity": curve}}
    if run:
        m["run"] = run
    (path / "metrics.json").write_text(json.dumps(m))


def test_report_two_runs(tmp_path, capsys):
    _fake_run(tmp_path / "runs" / "whatever", [0.8, 0.85, 0.9, 0.92, 0.95, 0.97], {"operator": "a3d", "slices": 3, "name": "ours"})
    _fake_run(tmp_path / "runs" / "none_x3", [0.7, 0.8, 0.86, 0.91, 0.94, 0.96])  # operator/slices from the name
    out = tmp_path / "rep"
    assert main(["report", str(tmp_path / "runs" / "whatever"), str(tmp_path / "runs" / "none_x3"), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    lines = [l for l in md.splitlines() if l.startswith("| ")]
    assert lines[0].startswith("| Method | Slices | 0.5 | 1 | 2 | 4 | 8 | 16 | Avg.")
    # paper order: No Fusion before A3D
    assert lines[1].startswith("| No Fusion | x3 | 70.00 | 80.00 | 86.00 | 91.00 | 94.00 | 96.00 | 81.75 |")
    assert lines[2].startswith("| A3D | x3 | 80.00 | 85.00 | 90.00 | 92.00 | 95.00 | 97.00 | 86.75 | 50.00-90.00 | ours |")
    assert (out / "froc.png").stat().st_size > 0 and (out / "froc.svg").stat().st_size > 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "runs"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("a3d report: error:") and "metrics.json" in err and "\n" not in err


def test_write_report_api(tmp_path):
    from a3d.evaluation.report import write_report

    _fake_run(tmp_path / "alignshift_x7", [0.78, 0.85, 0.9, 0.93, 0.95, 0.97])
    _fake_run(tmp_path / "a3d_x7", [0.8, 0.86, 0.91, 0.94, 0.96, 0.97])
    _fake_run(tmp_path / "a3d_x3", [0.74, 0.81, 0.87, 0.92, 0.94, 0.96])
    paths = write_report([tmp_path / "a3d_x7", tmp_path / "alignshift_x7", tmp_path / "a3d_x3"], tmp_path / "rep")
    rows = [l.split("|")[1:3] for l in paths["markdown"].read_text().splitlines() if l.startswith("| A")]
    assert [(a.strip(), b.strip()) for a, b in rows] == [("A3D", "x3"), ("AlignShift", "x7"), ("A3D", "x7")]
