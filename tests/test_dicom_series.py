"""DICOM series a radiology workflow can trust (issue 14): unreadable files named, holes refused or
interpolated on the true slice positions, tilt/irregular/mixed stacks and non-CT inputs refused
with one line, localizers dropped with a warning, NaN voxels replaced with a warning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from a3d import predict as P
from a3d.cli import main
from a3d.data import scans as S
from a3d.errors import A3DError
from dicom_fixtures import truncate, write_slices
from test_predict import CFG, _assert_clean_failure, standin  # noqa: F401  (standin: fixture)
from test_predict_support import BlobDetector, phantom, shared_ct


def _z(scan, k: int) -> float:
    """Patient z (mm) of original slice k (axial series: the slice axis is z)."""
    return scan.original.TransformIndexToPhysicalPoint((0, 0, k))[2]


# ------------------------------------------------------------------------------------ unreadable files


def test_truncated_files_named_and_refused_by_default(tmp_path, standin, capsys, caplog):
    """3 of 20 files truncated (two inside the pixels, one inside the header): the run refuses with
    one line naming all three, nothing written; --allow-missing names each in stderr and the JSON,
    interpolates the holes on the true 2.0 mm grid and never uses them as key slices.
    Fails if an unreadable file is dropped silently (the old behaviour: 17 slices, exit 0; mutation:
    read_dicom_folder forgets its Unreadable list), if the warnings naming them are not written, or
    if interpolated slices become key slices."""
    vol = phantom((20, 40, 48))
    paths = write_slices(tmp_path / "dcm", vol, spacing=(0.7, 0.8, 2.0))
    truncate(paths[6])
    truncate(paths[12], keep=300)
    truncate(paths[19])  # last slice: no hole, still named
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "dcm"), "--checkpoint", "c.pt", "--out", str(out)]
    _assert_clean_failure(argv, out, capsys, "--allow-missing")
    rc = main(argv)
    err_line = capsys.readouterr().err
    assert rc == 2 and all(p.name in err_line for p in (paths[6], paths[12], paths[19]))
    with caplog.at_level(logging.WARNING, logger="a3d.predict"):  # the CLI's warnings go to stderr
        assert main(argv + ["--allow-missing", "--no-html", "--no-overlays"]) == 0
    err = caplog.text
    doc = json.loads((out / "predictions.json").read_text())
    for p in (paths[6], paths[12], paths[19]):
        assert p.name in err and any(p.name in w and "unreadable" in w for w in doc["warnings"])
    assert doc["input"]["interpolated_slices"] == [6, 12] and doc["input"]["n_slices"] == 19
    assert doc["processed_slices"]["count"] == 17
    assert doc["geometry"]["original"]["spacing"][2] == pytest.approx(2.0)


def test_missing_middle_slice_true_geometry(tmp_path):
    """True 2.0 mm spacing with one slice missing (a 4 mm gap): the volume keeps 2.0 mm, the hole
    is interpolated (the mean of its neighbours) and flagged, every slice's patient z is its file's
    ImagePositionPatient, and a lesion across the gap is one candidate whose detections lie on real
    slices at their files' z. Fails with the old uniform 2.11 mm grid (z drifts by up to a slice),
    if the hole is not interpolated linearly, or if candidates are not bridged across it."""
    vol = phantom((12, 48, 56))
    vol[3:9, 18:28, 20:32] = 300.0  # a box lesion across the gap
    paths = write_slices(tmp_path / "dcm", vol, spacing=(0.7, 0.8, 2.0), origin=(-20.0, -10.0, 50.0))
    paths[5].unlink()
    with pytest.raises(A3DError, match=r"between ct_004.dcm and ct_006.dcm"):
        S.read_scan(tmp_path / "dcm")
    scan = S.read_scan(tmp_path / "dcm", allow_missing=True)
    assert scan.shape[0] == 12 and scan.spacing[2] == pytest.approx(2.0) and scan.interpolated == (5,)
    assert scan.slice_files[5] is None and Path(scan.slice_files[6]).name == "ct_006.dcm"
    for k in range(12):
        assert _z(scan, k) == pytest.approx(50.0 + 2.0 * k)
        if k != 5:
            ipp = pydicom.dcmread(scan.slice_files[k], stop_before_pixels=True).ImagePositionPatient
            assert _z(scan, k) == pytest.approx(float(ipp[2]))
    np.testing.assert_allclose(scan.hu[5], (vol[4] + vol[6]) / 2, atol=0.51)
    res = P.predict_scan(scan, BlobDetector(), CFG, P.PredictSettings(batch_size=4))
    assert 5 not in res.processed and len(res.candidates) == 1
    info = res.candidates[0].info
    assert info["slices"] == [3, 4, 6, 7, 8] and info["z_extent_mm"] == pytest.approx(12.0)
    for d in res.detections:
        rec = P.detection_record(d, scan)
        ipp = pydicom.dcmread(tmp_path / "dcm" / rec["slice_file"], stop_before_pixels=True).ImagePositionPatient
        assert rec["center_lps"][2] == pytest.approx(float(ipp[2]), abs=1e-4)


# ------------------------------------------------------------------------------------ geometry refusals


def test_gantry_tilt_refused(tmp_path):
    """Slice positions drifting 0.5 mm per slice within the plane (tilt), or a GantryDetectorTilt of
    12 degrees: refused naming a file and 'tilt'. Fails if either check is removed (a sheared volume
    would be read as if straight)."""
    write_slices(tmp_path / "drift", phantom((8, 24, 24)), drift=(0.0, 0.5, 0.0))
    with pytest.raises(A3DError, match=r"ct_007.dcm: .*gantry tilt of about 14"):
        S.read_scan(tmp_path / "drift")
    write_slices(tmp_path / "tag", phantom((8, 24, 24)), per_slice={2: {"GantryDetectorTilt": 12.0}})
    with pytest.raises(A3DError, match=r"ct_002.dcm: DICOM GantryDetectorTilt is 12 degrees"):
        S.read_scan(tmp_path / "tag")


def test_irregular_spacing_refused_or_resampled_on_the_median_grid(tmp_path):
    """Steps of 2 mm with one of 2.7 mm: refused naming the off-grid files; with --allow-missing the
    grid has the median spacing (2.0), slices on it keep their images, the others are interpolated
    at their grid positions from the true neighbours. Fails if the spacing is averaged (2.08 mm) or
    the interpolation uses the file order instead of the positions."""
    pos = np.array([0, 2, 4, 6, 8.7, 10.7, 12.7])
    vol = np.stack([np.full((16, 16), 10.0 * k) for k in range(7)]).astype(np.float32)
    write_slices(tmp_path / "dcm", vol, positions=pos, origin=(0.0, 0.0, 0.0))
    with pytest.raises(A3DError, match=r"irregular slice spacing .*ct_004.dcm at 8.70 mm"):
        S.read_scan(tmp_path / "dcm")
    scan = S.read_scan(tmp_path / "dcm", allow_missing=True)
    assert scan.spacing[2] == pytest.approx(2.0) and scan.interpolated == (4, 5, 6)
    assert any("ct_004.dcm at 8.70 mm" in w for w in scan.warnings)
    # grid z = 8, 10, 12: between the images at 6 (30 HU) / 8.7 (40 HU) ... linear in position
    expect = np.interp([0, 2, 4, 6, 8, 10, 12], pos, 10.0 * np.arange(7))
    np.testing.assert_allclose(scan.hu[:, 0, 0], expect, atol=1e-3)


def test_mixed_acquisitions_and_stacks(tmp_path):
    """Two acquisitions over the same positions: refused, saying --acquisition; --acquisition 2
    reads the second (its +100 HU). Consecutive acquisitions (step-and-shoot) make one volume. A
    second copy of a file is used once with a warning; two images at one position, another
    orientation or another pixel size in the series: refused. Fails if any of these checks is
    removed (duplicates would be stacked as extra slices, or the wrong acquisition read)."""
    uid, vol = "1.2.826.0.1.3680043.8.498.4242", phantom((6, 24, 24))
    acq2 = {k: {"AcquisitionNumber": 2} for k in range(6)}
    write_slices(tmp_path / "mix", vol, series_uid=uid, prefix="a")
    write_slices(tmp_path / "mix", vol + 100, series_uid=uid, prefix="b", per_slice=acq2)
    with pytest.raises(A3DError, match=r"mixes acquisitions .*choose one with --acquisition N"):
        S.read_scan(tmp_path / "mix")
    scan = S.read_scan(tmp_path / "mix", acquisition=2)
    np.testing.assert_allclose(scan.hu, vol + 100, atol=0.51)
    with pytest.raises(A3DError, match=r"--acquisition 3: .*found: 1, 2"):
        S.read_scan(tmp_path / "mix", acquisition=3)
    steps = {k: {"AcquisitionNumber": 1 + k // 3} for k in range(6)}
    write_slices(tmp_path / "steps", vol, per_slice=steps)
    assert S.read_scan(tmp_path / "steps").shape[0] == 6
    paths = write_slices(tmp_path / "copy", vol)
    (tmp_path / "copy" / "zz_copy.dcm").write_bytes(paths[2].read_bytes())
    scan = S.read_scan(tmp_path / "copy")
    assert scan.shape[0] == 6 and any("zz_copy.dcm: second copy of ct_002.dcm" in w for w in scan.warnings)
    write_slices(tmp_path / "two", vol, series_uid=uid)
    write_slices(tmp_path / "two", vol[:1], series_uid=uid, prefix="x", origin=(-40.0, -30.0, 104.0))
    with pytest.raises(A3DError, match=r"two images at position 104.00 mm"):
        S.read_scan(tmp_path / "two")
    write_slices(tmp_path / "orient", vol, per_slice={3: {"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}})
    with pytest.raises(A3DError, match=r"mixes several stacks .*orientation.*ct_003.dcm"):
        S.read_scan(tmp_path / "orient")
    write_slices(tmp_path / "pixel", vol, per_slice={3: {"PixelSpacing": [0.5, 0.5]}})
    with pytest.raises(A3DError, match=r"mixes several stacks .*pixel spacing 0.5/0.5"):
        S.read_scan(tmp_path / "pixel")


def test_localizer_dropped_with_a_warning(tmp_path, standin, caplog):
    """A localizer (ImageType LOCALIZER, coronal) inside the CT series is left out, named in stderr
    and the JSON; the volume is the 8 axial slices. A series of localizers only is refused. Fails if
    the localizer is kept (mixed stacks error) or dropped without a warning."""
    vol = phantom((9, 24, 24))
    scout = {0: {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}}
    write_slices(tmp_path / "dcm", vol, per_slice=scout)
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="a3d.predict"):
        assert main(["predict", str(tmp_path / "dcm"), "--checkpoint", "c.pt", "--out", str(out), "--no-html"]) == 0
    err = caplog.text
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["input"]["n_slices"] == 8
    assert "ct_000.dcm: localizer" in err and any("ct_000.dcm: localizer" in w for w in doc["warnings"])
    only = {k: {"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]} for k in range(3)}
    write_slices(tmp_path / "scouts", vol[:3], per_slice=only)
    with pytest.raises(A3DError, match="localizer .*only; expected axial CT slices"):
        S.read_scan(tmp_path / "scouts")


# ------------------------------------------------------------------------------------ bad inputs


def test_cli_bad_dicom_inputs(tmp_path, standin, capsys):
    """Non-CT modality, a series without pixel data, a multi-frame file, a SEG and an SR given as
    input: one line naming the file and what was expected, exit 2, nothing written. Fails if one of
    them is read (or crashes with a traceback)."""
    out = tmp_path / "out"

    def run(folder, match):
        _assert_clean_failure(["predict", str(folder), "--checkpoint", "c.pt", "--out", str(out)], out, capsys, match)

    vol = phantom((4, 16, 16))
    write_slices(tmp_path / "pt", vol, modality="PT")
    run(tmp_path / "pt", "ct_000.dcm: DICOM Modality is PT; a3d predict expects CT")
    write_slices(tmp_path / "nopix", vol, per_slice={k: {"PixelData": None} for k in range(4)})
    run(tmp_path / "nopix", "ct_000.dcm: DICOM file without pixel data; expected CT images")
    two_frames = np.round(vol[1]).astype("<i2").tobytes() * 2
    write_slices(tmp_path / "mf", vol, per_slice={1: {"NumberOfFrames": 2, "PixelData": two_frames}})
    run(tmp_path / "mf", "ct_001.dcm: multi-frame DICOM (2 frames)")
    for kind, sop, match in (("seg", "1.2.840.10008.5.1.4.1.1.66.4", "a DICOM Segmentation (SEG)"),
                             ("sr", "1.2.840.10008.5.1.4.1.1.88.34", "a DICOM Structured Report (SR)")):
        write_slices(tmp_path / kind, vol[:2], modality=kind.upper(), per_slice={0: {"SOPClassUID": sop}, 1: {"SOPClassUID": sop}})
        run(tmp_path / kind, match)


def test_nan_voxels_replaced_by_air_and_named(tmp_path, standin, caplog):
    """A real CT as float NIfTI with one NaN voxel on slice 10 and an infinite one on slice 20: the
    run completes, stderr and the JSON name slices 10 and 20, the voxels become -1024 HU (not the
    0 HU ITK's NIfTI reader silently makes of them). Fails if the raw float check is removed (no
    warning, 0 HU), or if the values are replaced without naming the slices."""
    img = sitk.Cast(sitk.ReadImage(str(shared_ct())), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(img)
    arr[10, 50, 60], arr[20, 5, 5] = np.nan, np.inf
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(img)
    path = tmp_path / "nan.nii.gz"
    sitk.WriteImage(bad, str(path))
    scan = S.read_scan(path)
    assert np.isfinite(scan.hu).all()
    # the canonical (LPS) voxel of file voxel (i, j, k) = (60, 50, 10), through physical space
    x, y, z = scan.image.TransformPhysicalPointToIndex(img.TransformIndexToPhysicalPoint((60, 50, 10)))
    assert scan.hu[z, y, x] == -1024.0 and scan.original_slice_index(z) == 10
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="a3d.predict"):
        assert main(["predict", str(path), "--checkpoint", "c.pt", "--out", str(out), "--no-html"]) == 0
    err = caplog.text
    doc = json.loads((out / "predictions.json").read_text())
    w = [x for x in doc["warnings"] if "NaN or infinite" in x]
    assert len(w) == 1 and "10 (1), 20 (1)" in w[0] and "10 (1), 20 (1)" in err and "-1024 HU" in w[0]
