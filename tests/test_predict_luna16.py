"""`a3d predict`'s candidates_luna16.csv: world LPS centres of planted lesions, the seriesuid rule, the
batch file, and `a3d eval3d` reading it directly."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from a3d.cli import main
from a3d.config import Config, DataConfig, ModelConfig
from a3d.predict import loading
from test_predict_support import BlobDetector, make_image, phantom, plant_ellipsoids, synthetic_nifti, write_dicom_series

CFG = Config(name="blob-standin", model=ModelConfig(slices=3), data=DataConfig(size=128))
DICOM_SPACING, DICOM_ORIGIN = (0.7, 0.7, 2.5), (-40.0, -30.0, 100.0)
DICOM_LESION = ((-40.0 + 20 * 0.7, -30.0 + 24 * 0.7, 100.0 + 4 * 2.5), (4.0, 4.0, 5.0))  # centre LPS mm, radii


@pytest.fixture()
def standin(monkeypatch):
    """The model loader returns the deterministic blob detector (checkpoint ignored)."""
    monkeypatch.setattr(loading, "load_predictor", lambda checkpoint, device="cpu": (BlobDetector(), CFG))


def _dicom_with_lesion(folder):
    img = make_image(phantom((9, 48, 48)), DICOM_SPACING, DICOM_ORIGIN, (1, 0, 0, 0, 1, 0, 0, 0, 1))
    img, _ = plant_ellipsoids(img, [DICOM_LESION])
    import SimpleITK as sitk

    return write_dicom_series(folder, sitk.GetArrayFromImage(img), spacing=DICOM_SPACING, origin=DICOM_ORIGIN)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_luna16_csv_world_centres_seriesuids_and_eval3d(tmp_path, standin, capsys):
    """Each planted lesion comes back as one row at its world LPS centre (within 1 mm) with the
    candidate's max score; NIfTI rows carry the file stem, DICOM rows the SeriesInstanceUID; the
    batch file holds every scan's rows and eval3d finds all lesions in it. Fails if the centre is
    given in voxel indices or the original grid, or if the DICOM seriesuid falls back to the name."""
    batch = tmp_path / "scans"
    batch.mkdir()
    _, nifti_lesions, _, _ = synthetic_nifti(batch / "ras_scan.nii.gz")
    uid = _dicom_with_lesion(batch / "dicom_scan")
    out, ckpt = tmp_path / "pred", tmp_path / "x.pt"
    ckpt.write_bytes(b"stand-in")  # the stand-in ignores it; a batch records its content's hash
    assert main(["predict", str(batch), "--checkpoint", str(ckpt), "--out", str(out), "--no-html", "--no-overlays"]) == 0
    rows = _rows(out / "ras_scan" / "candidates_luna16.csv")
    assert list(rows[0]) == ["seriesuid", "coordX", "coordY", "coordZ", "probability"]
    doc = json.loads((out / "ras_scan" / "predictions.json").read_text())
    assert [float(r["probability"]) for r in rows] == [c["max_score"] for c in doc["candidates"]]
    assert {r["seriesuid"] for r in rows} == {"ras_scan"} and len(rows) == len(nifti_lesions) == 2
    got = sorted([float(r[k]) for k in ("coordX", "coordY", "coordZ")] for r in rows)
    np.testing.assert_allclose(got, sorted(list(c) for c, _ in nifti_lesions), atol=1.0)
    (drow,) = _rows(out / "dicom_scan" / "candidates_luna16.csv")
    assert drow["seriesuid"] == uid
    np.testing.assert_allclose([float(drow[k]) for k in ("coordX", "coordY", "coordZ")], DICOM_LESION[0], atol=1.0)
    merged = _rows(out / "candidates_luna16.csv")
    assert merged == _rows(out / "dicom_scan" / "candidates_luna16.csv") + rows
    ann = tmp_path / "annotations.csv"
    lesions = [("ras_scan", c, r) for c, r in nifti_lesions] + [(uid, *DICOM_LESION)]
    ann.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n" + "".join(
        f"{u},{c[0]},{c[1]},{c[2]},{2 * min(r)}\n" for u, c, r in lesions))
    assert main(["eval3d", str(ann), str(out / "candidates_luna16.csv"), "--out", str(tmp_path / "ev"),
                 "--bootstrap", "0"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert (m["n_scans"], m["n_nodules"], m["n_detected"], m["n_false_positives"]) == (2, 3, 3, 0)
