"""`a3d predict --dicom` and the 3D Slicer markups (issue 14): a DICOM SEG and a TID 1500 SR in the
source study, read back with highdicom and pydicom, every reference checked against the source
series, the SEG equal to labels.nii.gz voxel for voxel, measurements equal to predictions.json;
markups checked against Slicer's markups schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from a3d.cli import main
from a3d.predict import loading
from dicom_fixtures import real_ct_as_dicom, write_slices
from test_predict import CFG, _assert_clean_failure, standin  # noqa: F401  (standin: fixture)
from test_predict_support import BlobDetector, phantom, shared_ct, synthetic_nifti

LESION_HU, DETECT_HU = 1800.0, 1500.0  # above any voxel of the real CT (max 1207 HU): only planted lesions
MISSING = 13  # a slice inside lesion 1, removed from the series (--allow-missing interpolates it)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """The real CT (example_ct_sm) as a DICOM series (images stored mirrored: rows along -x, columns
    along -y) with two planted lesions and slice 13 missing, through `a3d predict --dicom
    --nifti-labels --allow-missing` with the blob stand-in detector."""
    root = tmp_path_factory.mktemp("dicom_real")
    img = sitk.DICOMOrient(sitk.ReadImage(str(shared_ct())), "LPS")
    vol = sitk.GetArrayFromImage(img).astype(np.float32)
    zz, yy, xx = np.mgrid[: vol.shape[0], : vol.shape[1], : vol.shape[2]]
    sp = img.GetSpacing()
    for (cx, cy, cz), (rx, ry, rz) in (((40, 50, 12), (13.0, 9.0, 8.0)), ((85, 45, 20), (8.0, 8.0, 6.0))):
        inside = (((xx - cx) * sp[0] / rx) ** 2 + ((yy - cy) * sp[1] / ry) ** 2 + ((zz - cz) * sp[2] / rz) ** 2) <= 1
        vol[inside] = LESION_HU
    lps = sitk.GetImageFromArray(vol)
    lps.CopyInformation(img)
    nii = root / "planted.nii.gz"
    sitk.WriteImage(sitk.Cast(lps, sitk.sitkInt16), str(nii))
    paths, _ = real_ct_as_dicom(nii, root / "dcm", mirrored=True)  # native rows/columns != canonical LPS ones
    paths[MISSING].unlink()
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "load_predictor", lambda checkpoint, device="cpu": (BlobDetector(hu=DETECT_HU), CFG))
        rc = main(["predict", str(root / "dcm"), "--checkpoint", "c.pt", "--out", str(out), "--dicom", "--nifti-labels",
                   "--allow-missing", "--no-html", "--no-overlays"])
    assert rc == 0
    sources = {}
    for p in sorted((root / "dcm").iterdir()):
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        sources[ds.SOPInstanceUID] = ds
    doc = json.loads((out / "predictions.json").read_text())
    return out, doc, sources


def _patient_point(src, col: float, row: float) -> np.ndarray:
    """DICOM image coordinates (column, row; (0, 0) = the first pixel's top-left corner) -> LPS mm,
    from the source image's own geometry (independent of a3d)."""
    ipp = np.array(src.ImagePositionPatient, dtype=float)
    iop = np.array(src.ImageOrientationPatient, dtype=float)
    drow, dcol = (float(v) for v in src.PixelSpacing)
    return ipp + (col - 0.5) * dcol * iop[:3] + (row - 0.5) * drow * iop[3:]


def _all_referenced_uids(ds) -> set[str]:
    """Every ReferencedSOPInstanceUID anywhere in a dataset (pydicom walk)."""
    found = set()

    def visit(d):
        for el in d:
            if el.keyword == "ReferencedSOPInstanceUID":
                found.add(str(el.value))
            elif el.VR == "SQ":
                for item in el.value:
                    visit(item)

    visit(ds)
    return found


def test_seg_references_and_matches_nifti_voxel_for_voxel(real_run):
    """SEG (highdicom and pydicom): same study, patient and Frame of Reference as the source, a new
    series; one segment per candidate with its score in the description; every frame references an
    existing source image at that image's position; the frames equal labels.nii.gz voxel for voxel
    on the source slices; nothing on the interpolated slice. Fails if the SEG frames are taken from
    the canonical (LPS) array instead of the images' own rows/columns, or if the score is left out."""
    out, doc, sources = real_run
    src0 = next(iter(sources.values()))
    assert len(doc["candidates"]) == 2 and doc["input"]["interpolated_slices"] == [MISSING]
    seg = hd.seg.segread(out / "dicom" / "seg.dcm")
    raw = pydicom.dcmread(out / "dicom" / "seg.dcm")
    for a in ("StudyInstanceUID", "PatientID", "PatientName", "FrameOfReferenceUID"):
        assert raw[a].value == src0[a].value, a
    assert raw.Modality == "SEG" and raw.SeriesInstanceUID != src0.SeriesInstanceUID
    assert raw.SOPInstanceUID not in sources and raw.SeriesInstanceUID == seg.SeriesInstanceUID
    assert seg.segment_numbers == [1, 2]
    for c in doc["candidates"]:
        assert f"score {c['max_score']:.3f}" in seg.get_segment_description(c["id"]).SegmentDescription
    nifti = sitk.ReadImage(str(out / "labels.nii.gz"))
    labels = sitk.GetArrayFromImage(nifti)
    rebuilt = np.zeros_like(labels)
    frames = raw.pixel_array.reshape(int(raw.NumberOfFrames), raw.Rows, raw.Columns)
    for f, px in zip(raw.PerFrameFunctionalGroupsSequence, frames):
        uid = f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        src = sources[uid]  # KeyError: a reference to no source image
        assert [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] == pytest.approx(
            [float(v) for v in src.ImagePositionPatient])
        k = nifti.TransformPhysicalPointToIndex([float(v) for v in src.ImagePositionPatient])[2]
        rebuilt[k][px > 0] = f.SegmentIdentificationSequence[0].ReferencedSegmentNumber
    assert labels.any() and (labels[MISSING] == 0).all()
    np.testing.assert_array_equal(rebuilt, labels)


def _by_candidate(groups) -> dict[int, object]:
    return {int(re.search(r"candidate (\d+)", g.tracking_identifier).group(1)): g for g in groups}


def _measured_source(doc: dict, c: dict, sources: dict):
    """The source image of the candidate's measured slice (via predictions.json's slice_file)."""
    names = {d["slice_file"] for d in doc["detections"] if d["candidate"] == c["id"] and d["slice"] == c["measured_on_slice"]}
    (name,) = names
    return next(s for s in sources.values() if Path(s.filename).name == name)


def test_sr_measurements_and_references(real_run):
    """SR (highdicom and pydicom): same study and patient, the axes' 3D coordinates in the source
    Frame of Reference; every ReferencedSOPInstanceUID in the document is a source image or the SEG;
    per candidate the long/short axis equal predictions.json (mm) and their SCOORD end points on the
    measured slice's source image are that far apart (by the image's own pixel spacing) and are the
    SCOORD3D points; the box region is the detection's box_lps; volume and score equal
    predictions.json; the volumetric group references the candidate's segment. Fails if coordinates
    are given in canonical instead of source pixels, if the short axis end points are not the
    measured chord, or if a measurement drifts from the JSON."""
    out, doc, sources = real_run
    src0 = next(iter(sources.values()))
    sr = hd.sr.srread(out / "dicom" / "sr.dcm")
    raw = pydicom.dcmread(out / "dicom" / "sr.dcm")
    seg_uid = pydicom.dcmread(out / "dicom" / "seg.dcm", stop_before_pixels=True).SOPInstanceUID
    assert raw.StudyInstanceUID == src0.StudyInstanceUID and raw.PatientID == src0.PatientID
    assert raw.SeriesInstanceUID != src0.SeriesInstanceUID and raw.Modality == "SR"
    refs = _all_referenced_uids(raw)
    assert refs <= set(sources) | {seg_uid} and seg_uid in refs
    evidence = _all_referenced_uids(raw.CurrentRequestedProcedureEvidenceSequence[0])
    assert evidence == set(sources) | {seg_uid}
    axes = _by_candidate(sr.content.get_image_measurement_groups())
    boxes = _by_candidate(sr.content.get_planar_roi_measurement_groups())
    volumes = _by_candidate(sr.content.get_volumetric_roi_measurement_groups())
    assert set(axes) == set(boxes) == set(volumes) == {1, 2}
    for c in doc["candidates"]:
        src = _measured_source(doc, c, sources)
        got = {m.name.meaning: m for m in axes[c["id"]].get_measurements()}
        for key, meaning in (("long_axis_mm", "Long axis"), ("short_axis_mm", "Short axis")):
            m = got[meaning]
            assert m.value == pytest.approx(c[key], abs=1e-4) and m.unit.value == "mm"
            flat = [x for x in m.referenced_coordinates if x.value_type.value == "SCOORD"]
            (scoord,) = flat
            assert scoord.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
            ends = [_patient_point(src, *p) for p in np.reshape(scoord.GraphicData, (2, 2))]
            assert np.linalg.norm(ends[1] - ends[0]) == pytest.approx(c[key], abs=1e-3)
            (s3d,) = [x for x in m.referenced_coordinates if x.value_type.value == "SCOORD3D"]
            assert s3d.ReferencedFrameOfReferenceUID == src.FrameOfReferenceUID
            np.testing.assert_allclose(np.reshape(s3d.GraphicData, (2, 3)), ends, atol=1e-3)
        assert got["Lesion candidate score"].value == pytest.approx(c["max_score"], abs=1e-6)
        roi = boxes[c["id"]].roi
        assert roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        corners = np.array([_patient_point(src, *p) for p in np.reshape(roi.GraphicData, (-1, 2))])
        det = next(d for d in doc["detections"] if d["candidate"] == c["id"] and d["slice"] == c["measured_on_slice"]
                   and d["long_axis_mm"] == pytest.approx(c["long_axis_mm"]))
        np.testing.assert_allclose([corners.min(0), corners.max(0)], np.sort(np.array(det["box_lps"]), axis=0), atol=1e-3)
        vol = {m.name.meaning: m.value for m in volumes[c["id"]].get_measurements()}
        assert vol["Volume"] == pytest.approx(c["volume_mm3"], rel=1e-6) and vol["Lesion candidate score"] == pytest.approx(c["max_score"])
        ref = volumes[c["id"]].referenced_segment[0].ReferencedSOPSequence[0]
        assert ref.ReferencedSOPInstanceUID == seg_uid and ref.ReferencedSegmentNumber == c["id"]
        assert axes[c["id"]].tracking_uid == boxes[c["id"]].tracking_uid == volumes[c["id"]].tracking_uid


# ------------------------------------------------------------------------------------ 3D Slicer markups

# Slicer's markups schema (markups-schema-v1.0.3.json): the properties a3d writes and their types.
_MARKUP_TYPES = {"Fiducial", "Line", "Angle", "Curve", "ClosedCurve", "Plane", "ROI"}
_MARKUP_KEYS = {"type": str, "name": str, "coordinateSystem": str, "coordinateUnits": str, "locked": bool,
                "fixedNumberOfControlPoints": bool, "labelFormat": str, "roiType": str, "center": "vec3",
                "orientation": "vec9", "size": "vec3", "insideOut": bool, "controlPoints": list,
                "measurements": list, "display": dict}
_POINT_KEYS = {"id": str, "label": str, "description": str, "associatedNodeID": str, "position": "vec3",
               "orientation": "vec9", "selected": bool, "locked": bool, "visibility": bool, "positionStatus": str}
_DISPLAY_KEYS = {"visibility": bool, "opacity": float, "color": "rgb", "selectedColor": "rgb",
                 "propertiesLabelVisibility": bool, "pointLabelsVisibility": bool}
_SLICER_SCHEMA_RE = r".*markups-schema-v1\.[0-9]+\.[0-9]+\.json#*$"  # what Slicer's reader accepts


def _typed(value, kind) -> bool:
    if kind in ("vec3", "vec9", "rgb"):
        n = 9 if kind == "vec9" else 3
        ok = isinstance(value, list) and len(value) == n and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        return ok and (kind != "rgb" or all(0 <= v <= 1 for v in value))
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def check_markups_file(path: Path) -> dict:
    """The one markup of a .mrk.json, after checking every key and type against Slicer's schema."""
    doc = json.loads(path.read_text())
    assert set(doc) == {"@schema", "markups"} and re.match(_SLICER_SCHEMA_RE, doc["@schema"].lower())
    (m,) = doc["markups"]  # Slicer loads the first markup of a file
    assert set(m) <= set(_MARKUP_KEYS) and m["type"] in _MARKUP_TYPES, set(m) - set(_MARKUP_KEYS)
    assert m["coordinateSystem"] == "LPS" and m["coordinateUnits"] == "mm"
    for table, d in ((_MARKUP_KEYS, m), (_DISPLAY_KEYS, m["display"])):
        assert set(d) <= set(table)
        assert all(_typed(v, table[k]) for k, v in d.items()), d
    for p in m["controlPoints"]:
        assert set(p) <= set(_POINT_KEYS) and all(_typed(v, _POINT_KEYS[k]) for k, v in p.items())
        assert p["positionStatus"] in {"undefined", "preview", "defined"}
    if m["type"] == "ROI":
        assert {"center", "size", "orientation", "roiType"} <= set(m)
    return m


def test_slicer_markups_match_the_sr_and_the_json(real_run):
    """Per candidate an ROI box (centre/size = the candidate's LPS bounding box, along the canonical
    LPS axes: identity orientation for this axial series) and long/short axis lines whose LPS end points are the SR's SCOORD3D
    points, their length the JSON's diameters; every file passes the schema check. Fails if the
    points are written in RAS, or if the ROI size ignores the slice count."""
    out, doc, _ = real_run
    sr = hd.sr.srread(out / "dicom" / "sr.dcm")
    axes = _by_candidate(sr.content.get_image_measurement_groups())
    files = json.loads((out / "predictions.json").read_text())["files"]["slicer_markups"]
    assert sorted(files) == sorted(str(p.relative_to(out)) for p in (out / "slicer").iterdir())
    for c in doc["candidates"]:
        roi = check_markups_file(out / "slicer" / f"C{c['id']:03d}_box.mrk.json")
        lo, hi = np.array(c["bbox_lps_min"]), np.array(c["bbox_lps_max"])
        np.testing.assert_allclose(roi["center"], (lo + hi) / 2, atol=1e-4)
        np.testing.assert_allclose(roi["size"], hi - lo, atol=1e-4)
        np.testing.assert_allclose(roi["orientation"], np.eye(3).ravel(), atol=1e-9)  # canonical LPS axes
        got = {m.name.meaning: m for m in axes[c["id"]].get_measurements()}
        for part, key, meaning in (("long", "long_axis_mm", "Long axis"), ("short", "short_axis_mm", "Short axis")):
            line = check_markups_file(out / "slicer" / f"C{c['id']:03d}_{part}.mrk.json")
            pts = np.array([p["position"] for p in line["controlPoints"]])
            assert line["type"] == "Line" and np.linalg.norm(pts[1] - pts[0]) == pytest.approx(c[key], abs=1e-4)
            (s3d,) = [x for x in got[meaning].referenced_coordinates if x.value_type.value == "SCOORD3D"]
            np.testing.assert_allclose(pts, np.reshape(s3d.GraphicData, (2, 3)), atol=1e-3)


def test_markups_on_ras_nifti_contain_the_lesion(tmp_path, standin):
    """RAS-stored NIfTI (no DICOM): markups are still written, in LPS; each planted lesion's centre
    lies inside one ROI box and its long axis line is about its largest in-plane diameter. Fails if
    the box centre is computed on the file's own (RAS) voxel grid instead of the canonical LPS one
    (boxes mirrored away from the lesions)."""
    path, lesions, _, _ = synthetic_nifti(tmp_path / "s.nii.gz")
    out = tmp_path / "out"
    assert main(["predict", str(path), "--checkpoint", "c.pt", "--out", str(out), "--no-html", "--no-overlays"]) == 0
    rois = [check_markups_file(p) for p in sorted((out / "slicer").glob("*_box.mrk.json"))]
    assert len(rois) == 2
    for centre, radii in lesions:
        inside = [r for r in rois if (np.abs(np.subtract(centre, r["center"])) <= np.array(r["size"]) / 2).all()]
        assert len(inside) == 1
        cid = int(inside[0]["name"].split()[0][1:])
        line = check_markups_file(out / "slicer" / f"C{cid:03d}_long.mrk.json")
        pts = np.array([p["position"] for p in line["controlPoints"]])
        assert abs(np.linalg.norm(pts[1] - pts[0]) - 2 * max(radii[:2])) <= 3.0


# ------------------------------------------------------------------------------------ --dicom edge cases


def test_dicom_flag_needs_dicom_input_and_handles_no_findings(tmp_path, standin, capsys):
    """--dicom on a NIfTI: one line, exit 2, nothing written. In a batch, the NIfTI scan gets a
    warning; the DICOM series without findings gets no SEG and no SR (a SEG needs a segment, a TID
    1500 report a measurement group), files.dicom_seg/dicom_sr null and a warning saying why. Fails
    if --dicom is silently ignored on a NIfTI, or if empty objects are attempted (highdicom refuses
    them: the run would crash)."""
    path, *_ = synthetic_nifti(tmp_path / "s.nii.gz")
    out = tmp_path / "out"
    _assert_clean_failure(["predict", str(path), "--checkpoint", "c.pt", "--out", str(out), "--dicom"], out, capsys,
                          "--dicom writes DICOM SEG/SR")
    write_slices(tmp_path / "batch" / "ct", phantom((5, 24, 24)))
    synthetic_nifti(tmp_path / "batch" / "n.nii.gz")
    (tmp_path / "c.pt").write_bytes(b"stand-in")  # the stand-in ignores it; a batch records its content's hash
    assert main(["predict", str(tmp_path / "batch"), "--checkpoint", str(tmp_path / "c.pt"), "--out", str(out), "--dicom",
                 "--no-html"]) == 0
    ct = json.loads((out / "ct" / "predictions.json").read_text())
    assert ct["candidates"] == [] and ct["files"]["dicom_seg"] is None and ct["files"]["dicom_sr"] is None
    assert not (out / "ct" / "dicom").exists() and any("no candidates: no DICOM SEG/SR" in w for w in ct["warnings"])
    n = json.loads((out / "n" / "predictions.json").read_text())
    assert "dicom_sr" not in n["files"] and any("no DICOM SEG/SR (--dicom)" in w for w in n["warnings"])


def test_axis_end_points_are_the_measured_chords():
    """On a tilted ellipse mask (semi-axes 20 and 8 px, anisotropic pixels) the long and short axis
    end points are as far apart (mm) as the diameters reported, the short axis is perpendicular to
    the long one and crosses it near the centre (not at a tip). Fails if the short axis ends are taken along the
    long axis direction, or from the wrong bin."""
    from a3d.predict.measurements import diameters

    sx, sy = 0.7, 0.9
    yy, xx = np.mgrid[0:80, 0:90] + 0.5
    t = np.radians(30)
    u = ((xx - 45) * np.cos(t) + (yy - 40) * np.sin(t)) / 20
    v = (-(xx - 45) * np.sin(t) + (yy - 40) * np.cos(t)) / 8
    d = diameters(u**2 + v**2 <= 1, sx, sy)
    scale = np.array([sx, sy])
    long_ends = np.reshape(d["long_axis_px"], (2, 2)) * scale
    short_ends = np.reshape(d["short_axis_px"], (2, 2)) * scale
    assert np.linalg.norm(np.diff(long_ends, axis=0)) == pytest.approx(d["long_mm"], abs=1e-9)
    assert np.linalg.norm(np.diff(short_ends, axis=0)) == pytest.approx(d["short_mm"], abs=1e-9)
    lu, su = np.diff(long_ends, axis=0)[0], np.diff(short_ends, axis=0)[0]
    assert abs(lu @ su) / (np.linalg.norm(lu) * np.linalg.norm(su)) < 0.05
    # its widest chord is at the centre; pixel squares make neighbouring chords nearly as wide
    assert np.linalg.norm(short_ends.mean(0) - np.array([45, 40]) * scale) < 0.15 * d["long_mm"]
