"""Issue 18 items 3 and 4: DICOM folders as they come. A CD/USB export (DICOMDIR at the root, images
four folders down, files without extension) given by its root; nested folders without DICOMDIR;
`--list-series` over the whole tree with each series' folder; a damaged or incomplete DICOMDIR
named and walked around; anonymised exports without Study/Series/SOP Instance UIDs read as one
series per folder and Frame of Reference, named, and `--dicom` refused unless `--new-uids`.

On main at cbe5183: the CD export and the nested folders gave "no readable DICOM series in this
folder", the anonymised files "DICOM header incomplete (... truncated or not an image file)"."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.fileset import FileSet

from a3d.cli import main
from a3d.data import scans as S
from a3d.data.scans.dicom_tree import has_dicom
from a3d.errors import A3DError
from dicom_fixtures import write_slices
from test_predict import _assert_clean_failure, standin  # noqa: F401  (standin: fixture)
from test_predict_support import phantom

SERIES_A, SERIES_B = "1.2.826.0.1.3680043.8.498.18001", "1.2.826.0.1.3680043.8.498.18002"


def _lesion_volume(n: int, seed: int = 0) -> np.ndarray:
    vol = phantom((n, 40, 48), seed=seed)
    vol[1:n - 1, 15:25, 18:30] = 300.0  # a box lesion the blob stand-in finds on every inner slice
    return vol


def _cd_export(root: Path, tmp: Path) -> tuple[np.ndarray, np.ndarray]:
    """Two series written through pydicom's FileSet: a DICOMDIR at ``root`` and the images as
    FileSet lays them out (PT000000/ST000000/SE00000n/IM00000k, no extension)."""
    a, b = _lesion_volume(7), _lesion_volume(4, seed=1)
    fs = FileSet()
    for vol, uid, name in ((a, SERIES_A, "a"), (b, SERIES_B, "b")):
        for p in write_slices(tmp / name, vol, series_uid=uid):
            fs.add(pydicom.dcmread(p))
    fs.write(root)
    return a, b


def test_cd_export_read_through_its_dicomdir(tmp_path, standin, capsys):
    """The root of a CD export is one DICOM input: the DICOMDIR's listing gives both series, the
    largest (7 slices) is read with a warning naming the other, `--series` picks the other, and
    `--list-series` prints both with their folders. Fails if only the root's own files are read
    (main: no series) or the DICOMDIR itself is taken for an image."""
    a, b = _cd_export(tmp_path / "cd", tmp_path / "src")
    images = [p for p in (tmp_path / "cd").rglob("*") if p.is_file() and p.name != "DICOMDIR"]
    assert len(images) == 11 and all(len(p.relative_to(tmp_path / "cd").parts) == 4 for p in images)
    scan = S.read_scan(tmp_path / "cd")
    np.testing.assert_allclose(scan.hu, a, atol=0.51)
    assert scan.series_uid == SERIES_A and any(SERIES_B in w and "--series" in w for w in scan.warnings)
    np.testing.assert_allclose(S.read_scan(tmp_path / "cd", series_uid=SERIES_B).hu, b, atol=0.51)
    assert main(["predict", str(tmp_path / "cd"), "--list-series"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [(r[0], r[1]) for r in rows] == [(SERIES_A, "7 files"), (SERIES_B, "4 files")]
    assert {r[4] for r in rows} == {str(images[0].relative_to(tmp_path / "cd").parent.parent) + "/" + d
                                    for d in ("SE000000", "SE000001")}
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "cd"), "--checkpoint", "c.pt", "--out", str(out), "--no-html"]) == 0
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["input"]["series_uid"] == SERIES_A and len(doc["candidates"]) == 1
    files = {d["slice_file"] for d in doc["detections"]}
    assert all((tmp_path / "cd" / f).is_file() and len(Path(f).parts) == 4 for f in files)


def test_damaged_or_incomplete_dicomdir_named_and_walked(tmp_path):
    """A DICOMDIR that is not DICOM, and one listing a file that was deleted: each named in a
    warning, the tree walked instead (the deleted file then leaves a hole, refused as usual).
    Fails if the DICOMDIR's problem is silent or the input is refused for it."""
    a, _ = _cd_export(tmp_path / "cd", tmp_path / "src")
    dicomdir = tmp_path / "cd" / "DICOMDIR"
    good = dicomdir.read_bytes()
    dicomdir.write_bytes(good[:128] + b"DICM" + b"\x00" * 64)
    scan = S.read_scan(tmp_path / "cd")
    np.testing.assert_allclose(scan.hu, a, atol=0.51)
    assert any("DICOMDIR" in w and "cannot be read" in w and "walked the folder tree" in w for w in scan.warnings)
    dicomdir.write_bytes(good)
    victim = sorted(p for p in (tmp_path / "cd").rglob("IM*") if "SE000000" in str(p))[3]
    victim.unlink()
    scan = S.read_scan(tmp_path / "cd", allow_missing=True)
    assert any(f"lists 1 files that are missing ({victim.relative_to(tmp_path / 'cd')})" in w for w in scan.warnings)
    assert len(scan.interpolated) == 1


def test_nested_folders_any_depth(tmp_path, capsys):
    """A folder holding a series directly and a larger one two folders down: one input whose series
    are both; the largest is used, the warning names the other with its folder. A PACS layout
    Patient/Study/Series (no DICOM above the series folders) is listed whole by --list-series at
    every level, and has_dicom finds DICOM at any depth (and none in a tree of other files).
    Fails if sub-folders are not read (main: only the top folder's 4 files)."""
    small, big = _lesion_volume(4), _lesion_volume(8, seed=2)
    write_slices(tmp_path / "exp", small, series_uid=SERIES_A)
    write_slices(tmp_path / "exp" / "more" / "deeper", big, series_uid=SERIES_B)
    (tmp_path / "exp" / "junk").mkdir()
    (tmp_path / "exp" / "junk" / "broken.dcm").write_bytes(b"not DICOM at all")
    scan = S.read_scan(tmp_path / "exp")
    np.testing.assert_allclose(scan.hu, big, atol=0.51)
    assert any(f"{SERIES_A} (4 images, .)" in w for w in scan.warnings)
    assert any("broken.dcm: unreadable, not in the folders of the series used" in w for w in scan.warnings)
    assert S.read_scan(tmp_path / "exp", series_uid=SERIES_A).shape[0] == 4
    pacs = tmp_path / "Patient"
    write_slices(pacs / "Study" / "CT1", small, series_uid=SERIES_A)
    write_slices(pacs / "Study" / "CT2", big, series_uid=SERIES_B)
    (tmp_path / "other" / "deep").mkdir(parents=True)
    (tmp_path / "other" / "deep" / "notes.txt").write_text("no DICOM here")
    assert has_dicom(pacs) and not has_dicom(tmp_path / "other")
    for level, prefix in ((pacs, "Study/"), (pacs / "Study", "")):
        assert main(["predict", str(level), "--list-series"]) == 0
        rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
        assert [(r[0], r[4]) for r in rows] == [(SERIES_B, prefix + "CT2"), (SERIES_A, prefix + "CT1")]


def _anonymise(folder: Path, vol: np.ndarray, prefix: str, frame_of_reference: str | None, **kw) -> list[Path]:
    """Series whose Study/Series/SOP Instance UIDs are blanked (empty) or removed (every other file)."""
    n = vol.shape[0]
    blank = {k: {"StudyInstanceUID": "" if k % 2 else None, "SeriesInstanceUID": "" if k % 2 else None,
                 "SOPInstanceUID": "" if k % 2 else None, "FrameOfReferenceUID": frame_of_reference}
             for k in range(n)}
    return write_slices(folder, vol, per_slice=blank, prefix=prefix, **kw)


def test_anonymised_export_one_series_per_folder_and_frame_of_reference(tmp_path, capsys):
    """Files without Study/Series/SOP Instance UIDs: read (not 'truncated'), one series per folder
    and Frame of Reference, with a warning naming what is missing; two stacks in one folder with
    different Frames of Reference are two series, listed and chosen with their no-uid: keys.
    Fails on main (every file 'DICOM header incomplete ... truncated'), and if the two stacks are
    merged into one series (two images at each position: refused)."""
    vol = _lesion_volume(6)
    _anonymise(tmp_path / "anon", vol, "a", "1.2.3.4.1")
    _anonymise(tmp_path / "anon", vol + 10, "b", "1.2.3.4.2", origin=(-40.0, -30.0, 100.0))
    scan = S.read_scan(tmp_path / "anon", series_uid="no-uid:.:1.2.3.4.2")
    np.testing.assert_allclose(scan.hu, vol + 10, atol=0.51)
    text = " ".join(scan.warnings)
    assert "StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID" in text and "one series per folder" in text
    assert "truncated" not in text.replace(str(tmp_path), "") and scan.series_uid is None
    assert main(["predict", str(tmp_path / "anon"), "--list-series"]) == 0
    rows = sorted(line.split("\t")[0] for line in capsys.readouterr().out.splitlines())
    assert rows == ["no-uid:.:1.2.3.4.1", "no-uid:.:1.2.3.4.2"]
    _anonymise(tmp_path / "nofor" / "x", vol, "a", None)
    _anonymise(tmp_path / "nofor" / "y", vol[:4], "a", None)
    assert [s.uid for s in S.list_dicom_series(tmp_path / "nofor")] == ["no-uid:x", "no-uid:y"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dicom_outputs_need_new_uids_for_anonymised_sources(tmp_path, standin, capsys, caplog):
    """--dicom on an anonymised series: one line saying the UIDs are missing and --new-uids, nothing
    written. With --new-uids: the SEG and SR reference exactly the new SOP Instance UIDs recorded
    in predictions.json, which the copies in dicom/images/ carry (same pixels, same study, series
    and Frame of Reference as the SEG/SR); the input files are byte for byte unchanged. Fails if
    --dicom writes objects referencing empty UIDs, or if the copies' UIDs differ from the SEG's."""
    vol = _lesion_volume(6)
    paths = _anonymise(tmp_path / "anon", vol, "ct", None)
    before = {p.name: _sha(p) for p in paths}
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "anon"), "--checkpoint", "c.pt", "--out", str(out), "--dicom", "--no-html"]
    _assert_clean_failure(argv, out, capsys, "SeriesInstanceUID/SOPInstanceUID/FrameOfReferenceUID; a SEG/SR cannot")
    _assert_clean_failure(["predict", str(tmp_path / "anon"), "--checkpoint", "c.pt", "--out", str(out), "--new-uids"],
                          out, capsys, "--new-uids gives the DICOM SEG/SR")
    with caplog.at_level(logging.WARNING, logger="a3d.predict"):
        assert main(argv + ["--new-uids"]) == 0
    assert "lack StudyInstanceUID/SeriesInstanceUID/SOPInstanceUID" in caplog.text
    assert {p.name: _sha(p) for p in paths} == before
    doc = json.loads((out / "predictions.json").read_text())
    new = doc["files"]["dicom_new_uids"]
    assert sorted(new["instances"]) == sorted(p.name for p in paths) and len(set(new["instances"].values())) == 6
    copies = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in (out / "dicom" / "images").iterdir()}
    assert set(copies) == set(new["instances"].values())
    for name, uid in new["instances"].items():
        orig = pydicom.dcmread(tmp_path / "anon" / name)
        np.testing.assert_array_equal(copies[uid].pixel_array, orig.pixel_array)
        assert copies[uid].StudyInstanceUID == new["study_instance_uid"]
        assert copies[uid].SeriesInstanceUID == new["series_instance_uid"]
        assert copies[uid].FrameOfReferenceUID == new["frame_of_reference_uid"]
    seg = pydicom.dcmread(out / "dicom" / "seg.dcm")
    refs = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for f in seg.PerFrameFunctionalGroupsSequence}
    assert refs and refs <= set(copies)
    assert seg.StudyInstanceUID == new["study_instance_uid"] and seg.FrameOfReferenceUID == new["frame_of_reference_uid"]
    sr = pydicom.dcmread(out / "dicom" / "sr.dcm")
    evidence = {i.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for i in se.ReferencedSOPSequence}
    assert evidence == set(copies) | {seg.SOPInstanceUID}


def test_truncated_header_is_named_a_complete_file_is_not(tmp_path):
    """A file cut inside a UID of its header is named as ending inside its header; a complete
    file without pixel data is not called truncated. Fails if the cut goes unnoticed (the partial
    UID would put the file into a series of its own: silently dropped)."""
    paths = write_slices(tmp_path / "dcm", phantom((5, 16, 16)))
    data = paths[2].read_bytes()
    at = data.find(b"1.2.826.0.1.3680043.8.498.77") + 10  # inside StudyInstanceUID's value
    paths[2].write_bytes(data[:at])
    with pytest.raises(A3DError, match=r"ct_002.dcm: file ends inside its header: element \(0020,000D\) holds"):
        S.read_scan(tmp_path / "dcm")
    write_slices(tmp_path / "nopix", phantom((3, 16, 16)), per_slice={1: {"PixelData": None}})
    with pytest.raises(A3DError) as e:
        S.read_scan(tmp_path / "nopix")
    reason = str(e.value).split("ct_001.dcm")[1]  # the path itself holds the test's name
    assert reason.startswith(": DICOM file without pixel data") and "truncated" not in reason
