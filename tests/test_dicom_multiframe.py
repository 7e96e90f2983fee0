"""Issue 18 item 2: Enhanced CT and Legacy Converted Enhanced CT (one multi-frame file) built from
the single-frame series of the real CT: the same volume and detections; per-frame positions and
rescale really read per frame (frames stored out of order, a different RescaleIntercept on every
other frame); `--dicom` then references the multi-frame source by frame number in the SEG and the
SR, each reference checked against the source's own per-frame geometry.

On main at cbe5183 both were refused: "multi-frame DICOM (30 frames); a3d predict reads
single-frame CT series"."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from a3d.cli import main
from a3d.data import scans as S
from a3d.predict import loading
from dicom_fixtures import DETECT_HU, LESION_HU, enhanced_ct, legacy_enhanced_ct, real_ct_as_dicom
from test_predict import CFG
from test_predict_support import BlobDetector, shared_ct

N = 30  # slices of example_ct_sm
ORDER = list(np.random.default_rng(3).permutation(N))  # frame i holds slice ORDER[i]
INTERCEPTS = [-1024 if i % 2 else -1048 for i in range(N)]


def _predict(folder: Path, out: Path, *extra: str) -> dict:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "load_predictor", lambda checkpoint, device="cpu": (BlobDetector(hu=DETECT_HU), CFG))
        rc = main(["predict", str(folder), "--checkpoint", "c.pt", "--out", str(out), "--no-html", "--no-overlays",
                   "--no-markups", *extra])
    assert rc == 0
    return json.loads((out / "predictions.json").read_text())


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """The real CT with two planted lesions as a single-frame series (12-bit unsigned), the same
    images as a Legacy Converted Enhanced CT (highdicom) and as an Enhanced CT with shuffled frames
    and per-frame rescale; the single-frame series' volume and predictions."""
    root = tmp_path_factory.mktemp("multiframe")
    img = sitk.DICOMOrient(sitk.ReadImage(str(shared_ct())), "LPS")
    vol = sitk.GetArrayFromImage(img).astype(np.float32)
    zz, yy, xx = np.mgrid[: vol.shape[0], : vol.shape[1], : vol.shape[2]]
    for (cx, cy, cz), (rx, ry, rz) in (((40, 50, 12), (13.0, 9.0, 8.0)), ((85, 45, 20), (8.0, 8.0, 6.0))):
        vol[((xx - cx) * 3 / rx) ** 2 + ((yy - cy) * 3 / ry) ** 2 + ((zz - cz) * 3 / rz) ** 2 <= 1] = LESION_HU
    planted = sitk.GetImageFromArray(vol)
    planted.CopyInformation(img)
    sitk.WriteImage(sitk.Cast(planted, sitk.sitkInt16), str(root / "planted.nii.gz"))
    paths, _ = real_ct_as_dicom(root / "planted.nii.gz", root / "single", stored="uint12")
    legacy_enhanced_ct(paths, root / "lce" / "lce.dcm")
    enhanced_ct(paths, root / "enh" / "enhanced.dcm", order=ORDER, intercepts=INTERCEPTS)
    ref = S.read_scan(root / "single").hu
    doc = _predict(root / "single", root / "single_out")
    assert len(doc["candidates"]) == 2
    return root, ref, doc


@pytest.mark.parametrize("kind", ["lce", "enh"])
def test_multiframe_same_volume_and_detections(series, kind):
    """Fails on main (refused as multi-frame), if frames are stacked in file order instead of by
    their per-frame positions (the shuffled Enhanced CT), or if one rescale is applied to every
    frame (every other frame 24 HU off)."""
    root, ref, ref_doc = series
    scan = S.read_scan(root / kind)
    np.testing.assert_array_equal(scan.hu, ref)
    doc = _predict(root / kind, root / f"{kind}_out")
    assert [(d["slice"], d["box_px"], d["score"]) for d in doc["detections"]] == \
           [(d["slice"], d["box_px"], d["score"]) for d in ref_doc["detections"]]
    assert {d["slice_file"] for d in doc["detections"]} == {"lce.dcm" if kind == "lce" else "enhanced.dcm"}
    if kind == "enh":  # slice k of the volume is frame ORDER.index(k) + 1, with that frame's intercept
        assert scan.source_frames == [ORDER.index(k) + 1 for k in range(N)]
        raw = pydicom.dcmread(root / "enh" / "enhanced.dcm").pixel_array
        for k in (0, 1, 17):
            i = ORDER.index(k)
            np.testing.assert_array_equal(raw[i].astype(np.float32) + INTERCEPTS[i], ref[k])


def _frame_geometry(src) -> dict[int, np.ndarray]:
    """Frame number -> ImagePositionPatient from the source's per-frame functional groups."""
    return {i + 1: np.array(f.PlanePositionSequence[0].ImagePositionPatient, dtype=float)
            for i, f in enumerate(src.PerFrameFunctionalGroupsSequence)}


@pytest.mark.parametrize("kind", ["lce", "enh"])
def test_dicom_outputs_reference_the_frames(series, kind):
    """--dicom on a multi-frame source: every SEG frame references the source instance and a frame
    number whose per-frame position is the SEG frame's position; the SEG rebuilt through those
    references equals labels.nii.gz; every SR image reference carries the frame of the measured
    slice (its position is the detection's z) and the source is in the evidence once. Fails if
    frame numbers are left out (highdicom would reference the whole multi-frame image), or the
    label frames are put in slice order instead of frame order (the shuffled Enhanced CT)."""
    root, _, _ = series
    out = root / f"{kind}_dicom"
    doc = _predict(root / kind, out, "--dicom", "--nifti-labels")
    src = pydicom.dcmread(next((root / kind).iterdir()))
    positions = _frame_geometry(src)
    seg = pydicom.dcmread(out / "dicom" / "seg.dcm")
    nifti = sitk.ReadImage(str(out / "labels.nii.gz"))
    labels = sitk.GetArrayFromImage(nifti)
    rebuilt = np.zeros_like(labels)
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    for f, px in zip(seg.PerFrameFunctionalGroupsSequence, frames):
        ref = f.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
        (number,) = [int(v) for v in np.atleast_1d(ref.ReferencedFrameNumber)]
        ipp = [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(ipp, positions[number], atol=1e-4)
        k = nifti.TransformPhysicalPointToIndex(ipp)[2]
        rebuilt[k][px > 0] = f.SegmentIdentificationSequence[0].ReferencedSegmentNumber
    assert labels.any()
    np.testing.assert_array_equal(rebuilt, labels)
    sr = pydicom.dcmread(out / "dicom" / "sr.dcm")
    evidence = [i for s in sr.CurrentRequestedProcedureEvidenceSequence for se in s.ReferencedSeriesSequence
                for i in se.ReferencedSOPSequence]
    assert sorted(i.ReferencedSOPInstanceUID for i in evidence) == sorted([src.SOPInstanceUID, seg.SOPInstanceUID])
    parsed = hd.sr.srread(out / "dicom" / "sr.dcm")
    zs = {c["id"]: next(d["center_lps"][2] for d in doc["detections"] if d["candidate"] == c["id"]
                        and d["slice"] == c["measured_on_slice"]) for c in doc["candidates"]}
    refs = []
    for group in parsed.content.get_planar_roi_measurement_groups():
        cid = int(group.tracking_identifier.split()[-1])
        sop = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
        refs.append(sop)
        (number,) = [int(v) for v in np.atleast_1d(sop.ReferencedFrameNumber)]
        assert positions[number][2] == pytest.approx(zs[cid], abs=1e-3)
    for group in parsed.content.get_image_measurement_groups():
        for m in group.get_measurements():
            refs += [c.ContentSequence[0].ReferencedSOPSequence[0] for c in m.referenced_coordinates or []
                     if c.value_type.value == "SCOORD"]
    assert len(refs) >= 4 and all(r.ReferencedSOPInstanceUID == src.SOPInstanceUID and "ReferencedFrameNumber" in r
                                  for r in refs)
