"""The SEG and SR of `a3d predict --dicom`, for a single-frame series and for the same images as
Legacy Converted Enhanced CT and Enhanced CT (frames shuffled), checked by tools a3d does not use
to write them: dicom3tools' `dciodvfy` (no errors; the one warning left is a3d's private coding
scheme 99A3D for the score) and 3D Slicer's dcmqi (`segimage2itkimage` reads the SEG back to the
voxels of labels.nii.gz, `tid1500reader` reads the SR's measurements as predictions.json has
them). The tools skip when missing, except under CI=true (.ci/run installs dicom3tools; dcmqi is
in the test extra)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from a3d.cli import main
from a3d.predict import loading
from dicom_fixtures import DETECT_HU, enhanced_ct, legacy_enhanced_ct, real_looking_series
from test_predict import CFG
from test_predict_support import BlobDetector, shared_ct

# dciodvfy's warnings that remain, and why: the detector's score is coded in a3d's private scheme
ALLOWED_WARNINGS = (r"Unrecognized defined term <99A3D> for value 1 of attribute <Coding Scheme Designator>",)


def _tool(name: str) -> str:
    """The command (dcmqi's live beside the venv's python), or skip / fail under CI."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} not found (.ci/run installs dicom3tools; pip install -e '.[test]' installs dcmqi)")
        pytest.skip(f"{name} not found (apt-get install dicom3tools; pip install dcmqi)")
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """kind -> (output folder, predictions.json) of `a3d predict --dicom --nifti-labels`."""
    root = tmp_path_factory.mktemp("validate")
    paths, _ = real_looking_series(shared_ct(), root / "single")
    legacy_enhanced_ct(paths, root / "lce" / "lce.dcm")
    enhanced_ct(paths, root / "enh" / "enh.dcm", order=[2, 0, 3, 1], intercepts=[-1024, -1030, -1024, -1030])
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "load_predictor", lambda checkpoint, device="cpu": (BlobDetector(hu=DETECT_HU), CFG))
        for kind in ("single", "lce", "enh"):
            assert main(["predict", str(root / kind), "--checkpoint", "c.pt", "--out", str(root / f"{kind}_out"),
                         "--dicom", "--nifti-labels", "--no-html", "--no-overlays", "--no-markups"]) == 0
            doc = json.loads((root / f"{kind}_out" / "predictions.json").read_text())
            assert len(doc["candidates"]) == 2
            out[kind] = (root / f"{kind}_out", doc)
    return out


KINDS = ["single", "lce", "enh"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("obj", ["seg", "sr"])
def test_dciodvfy_no_errors(runs, kind, obj):
    """Fails on any IOD error (e.g. a missing type-1 attribute, a DS value too long, a frame
    reference without its functional group) or on a new warning."""
    folder, _ = runs[kind]
    res = subprocess.run([_tool("dciodvfy"), str(folder / "dicom" / f"{obj}.dcm")], capture_output=True, text=True)
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith(("Error", "Warning"))]
    assert not [ln for ln in lines if ln.startswith("Error")], lines
    assert all(any(re.search(p, ln) for p in ALLOWED_WARNINGS) for ln in lines), lines


@pytest.mark.parametrize("kind", KINDS)
def test_dcmqi_reads_the_seg_back_to_the_label_volume(runs, kind, tmp_path):
    """segimage2itkimage writes one image per segment on its own grid; resampled (nearest) onto
    labels.nii.gz's grid, segment n is exactly the voxels labelled n. Fails if a SEG frame sits at
    the wrong position (e.g. multi-frame label frames in slice order instead of frame order)."""
    folder, doc = runs[kind]
    subprocess.run([_tool("segimage2itkimage"), "--inputDICOM", str(folder / "dicom" / "seg.dcm"),
                    "--outputDirectory", str(tmp_path), "--outputType", "nifti"], check=True, capture_output=True)
    labels = sitk.ReadImage(str(folder / "labels.nii.gz"))
    ref = sitk.GetArrayFromImage(labels)
    for c in doc["candidates"]:
        seg = sitk.ReadImage(str(tmp_path / f"{c['id']}.nii.gz"))
        on_grid = sitk.Resample(seg, labels, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        got = sitk.GetArrayFromImage(on_grid) > 0
        assert got.sum() == (ref == c["id"]).sum() > 0
        np.testing.assert_array_equal(got, ref == c["id"])


@pytest.mark.parametrize("kind", KINDS)
def test_dcmqi_reads_the_sr_measurements(runs, kind, tmp_path):
    """tid1500reader: per candidate (tracking identifier) the long and short axis, the volume and
    the score equal predictions.json. Fails if a measurement or a group is lost."""
    folder, doc = runs[kind]
    meta = tmp_path / "sr.json"
    subprocess.run([_tool("tid1500reader"), "--inputDICOM", str(folder / "dicom" / "sr.dcm"), "--outputMetadata",
                    str(meta)], check=True, capture_output=True)
    got: dict[int, dict[str, float]] = {}
    for group in json.loads(meta.read_text())["Measurements"]:
        cid = int(group["TrackingIdentifier"].split()[-1])
        for m in group["measurementItems"]:
            got.setdefault(cid, {})[m["quantity"]["CodeMeaning"]] = float(m["value"])
    assert set(got) == {c["id"] for c in doc["candidates"]}
    for c in doc["candidates"]:
        g = got[c["id"]]
        assert g["Long axis"] == pytest.approx(c["long_axis_mm"], abs=1e-4)
        assert g["Short axis"] == pytest.approx(c["short_axis_mm"], abs=1e-4)
        assert g["Volume"] == pytest.approx(c["volume_mm3"], rel=1e-6)
        assert g["Lesion candidate score"] == pytest.approx(c["max_score"], abs=1e-6)
