"""NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) and uncompressed NIfTI (.nii) as inputs of `a3d predict`
and `a3d data import`: the same Scan, the same detections and the same imported rows as the NIfTI of
the same volume; truncated or incomplete files named in one line; batch folders and Slicer's .seg.nrrd."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from a3d.cli import main
from a3d.data import read_dl_info
from a3d.data import scans as S
from a3d.data.importer import ImportOptions, find_cases, import_volumes
from a3d.errors import A3DError
from test_data_import import lps_image, two_lesion_case
from test_predict import standin  # noqa: F401 (the blob stand-in as the CLI's model)
from test_predict_support import phantom, synthetic_nifti, write_dicom_series

# file name -> SimpleITK's useCompression: every storage of one volume ITK writes
# (detached headers: n.nhdr -> n.raw, nz.nhdr -> nz.raw.gz, m.mhd -> m.raw, mz.mhd -> mz.zraw)
FORMATS = {"v.nii.gz": True, "v.nii": False, "v.nrrd": False, "vz.nrrd": True, "n.nhdr": False, "nz.nhdr": True,
           "v.mha": False, "vz.mha": True, "m.mhd": False, "mz.mhd": True}


def write_formats(img, folder: Path, names=FORMATS) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        sitk.WriteImage(img, str(folder / name), useCompression=FORMATS[name])
    return {name: folder / name for name in names}


def test_every_format_gives_the_same_scan(tmp_path):
    """The RAS-stored phantom with planted lesions, stored ten ways: the same canonical voxels (the
    stored array flipped in x and y, computed here by hand) and the same geometry (NIfTI keeps it in
    float32, hence the tolerance), detached data files included. Fails on today's main with
    'unsupported input file' for everything but NIfTI."""
    _path, _lesions, _label, img = synthetic_nifti(tmp_path / "ref.nii.gz")
    files = write_formats(img, tmp_path / "f")
    assert {"n.raw", "nz.raw.gz", "m.raw", "mz.zraw"} <= set(os.listdir(tmp_path / "f"))
    stored = sitk.GetArrayFromImage(img).astype(np.float32)
    kinds = {"nii": "nifti", "gz": "nifti", "nrrd": "nrrd", "nhdr": "nrrd", "mha": "metaimage", "mhd": "metaimage"}
    for name, path in files.items():
        scan = S.read_scan(path)
        assert scan.kind == kinds[name.rsplit(".", 1)[1]], name
        assert scan.name == name.split(".")[0] and not scan.warnings, (name, scan.warnings)
        np.testing.assert_array_equal(scan.hu, stored[:, ::-1, ::-1], err_msg=name)
        np.testing.assert_allclose(scan.spacing, img.GetSpacing(), rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(scan.image.GetOrigin(), img.TransformIndexToPhysicalPoint((95, 79, 0)), atol=1e-4)
        np.testing.assert_allclose(scan.image.GetDirection(), np.eye(3).ravel(), err_msg=name)
        assert scan.original_orientation == "RAS", name


def test_same_detections_as_the_nifti_through_the_cli(tmp_path, standin, capsys):
    """`a3d predict` on the .nrrd, .nhdr, .mha, .mhd and .nii of one volume: the detections and
    candidates of the .nii.gz (slice, box, score, world centre), input.kind naming the format."""
    _path, lesions, _label, img = synthetic_nifti(tmp_path / "ref.nii.gz")
    files = write_formats(img, tmp_path / "f", ["v.nii.gz", "v.nii", "vz.nrrd", "n.nhdr", "vz.mha", "m.mhd"])
    docs = {}
    for name, path in files.items():
        out = tmp_path / f"out_{name}"
        assert main(["predict", str(path), "--checkpoint", "x.pt", "--out", str(out), "--no-html", "--no-overlays"]) == 0
        docs[name] = json.loads((out / "predictions.json").read_text())
    ref = docs["v.nii.gz"]
    assert len(ref["candidates"]) == len(lesions) and ref["detections"]
    for name, doc in docs.items():
        assert doc["input"]["kind"] == {"nii": "nifti", "gz": "nifti", "nrrd": "nrrd", "nhdr": "nrrd",
                                        "mha": "metaimage", "mhd": "metaimage"}[name.rsplit(".", 1)[1]]
        assert [d["slice"] for d in doc["detections"]] == [d["slice"] for d in ref["detections"]], name
        for d, r in zip(doc["detections"], ref["detections"]):
            assert d["score"] == r["score"] and d["box_px"] == r["box_px"], name
            np.testing.assert_allclose(d["center_lps"], r["center_lps"], atol=1e-4)
        for c, r in zip(doc["candidates"], ref["candidates"]):
            np.testing.assert_allclose(c["centroid_lps"], r["centroid_lps"], atol=1e-4)
            assert c["slices"] == r["slices"] and c["volume_mm3"] == pytest.approx(r["volume_mm3"], rel=1e-5)


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_incomplete_files_are_named_in_one_line(tmp_path, capsys):
    """Truncated attached and detached data (raw and compressed), a missing data file, a header that
    is not one, a multi-layer Slicer segmentation, a .seg.nrrd given as a CT: one line naming the file
    (for detached data, the data file) and what is wrong. Without the header checks ITK's MetaImage
    reader says only 'No such file or directory' for a file cut short."""
    img = sitk.Cast(lps_image(phantom((6, 20, 24))), sitk.sitkInt16)
    f = write_formats(img, tmp_path, ["v.nrrd", "vz.nrrd", "v.mha", "vz.mha", "m.mhd", "mz.mhd", "n.nhdr", "nz.nhdr"])
    for name in ("v.nrrd", "vz.nrrd", "v.mha", "vz.mha"):
        _cut(f[name], f[name].stat().st_size - 500)
    _cut(tmp_path / "m.raw", 1000)
    _cut(tmp_path / "mz.zraw", 300)
    _cut(tmp_path / "n.raw", 2000)
    (tmp_path / "nz.raw.gz").unlink()
    (tmp_path / "junk.nrrd").write_text("hello\n")
    (tmp_path / "junk.mha").write_text("hello\n")
    layers = sitk.Compose(sitk.Cast(img > 0, sitk.sitkUInt8), sitk.Cast(img > 30, sitk.sitkUInt8))
    sitk.WriteImage(layers, str(tmp_path / "two.seg.nrrd"))
    sitk.WriteImage(layers, str(tmp_path / "two.nrrd"))
    expect = {
        "v.nrrd": "v.nrrd: truncated NRRD file", "vz.nrrd": "vz.nrrd: not a readable NRRD file (_nrrdEncodingGzip",
        "v.mha": "v.mha: truncated MetaImage file", "vz.mha": "vz.mha: truncated MetaImage file (",
        "m.mhd": "m.raw: truncated MetaImage file (1000 bytes of image data, expected 5760)",
        "mz.mhd": "mz.zraw: truncated MetaImage file (300 bytes of compressed image data",
        "n.nhdr": "n.raw: truncated NRRD file (2000 bytes of image data, expected 5760)",
        "nz.nhdr": f"nz.nhdr: data file {tmp_path / 'nz.raw.gz'} named by this NRRD header not found",
        "junk.nrrd": "junk.nrrd: not a NRRD file", "junk.mha": "junk.mha: not a MetaImage header",
        "two.nrrd": "two.nrrd: NRRD image with 2 values per voxel", "two.seg.nrrd": "is a label map, not a CT image",
    }
    for name, match in expect.items():
        out = tmp_path / "out"
        assert main(["predict", str(tmp_path / name), "--checkpoint", "x.pt", "--out", str(out)]) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("a3d predict: error:"), err
        assert match in err, (name, err)
        assert not out.exists()


def test_batch_folder_lists_volume_files_and_nested_dicom(tmp_path):
    """A batch: one scan per volume file (a .mhd's .raw is not a scan), per DICOM sub-folder, also one
    whose files sit in study/series folders below (a patient folder), and per PNG folder; a folder of
    volume files or of other files is no scan."""
    img = sitk.Cast(lps_image(phantom((4, 16, 16))), sitk.sitkInt16)
    b = tmp_path / "batch"
    write_formats(img, b, ["v.nii", "vz.nrrd", "m.mhd", "nz.nhdr"])
    write_dicom_series(b / "flat_dicom", phantom((4, 16, 16)))
    write_dicom_series(b / "patient" / "study1" / "series2", phantom((4, 16, 16)))
    (b / "notes").mkdir()
    (b / "notes" / "readme.txt").write_text("x")
    write_formats(img, b / "more_volumes", ["v.nrrd"])
    (b / "README.txt").write_text("x")
    names = [p.name for p in S.scan_entries(b)]
    assert names == ["flat_dicom", "m.mhd", "nz.nhdr", "patient", "v.nii", "vz.nrrd"]
    assert S.classify_input(b) == "batch"
    assert [S.scan_name(p) for p in S.scan_entries(b)] == ["flat_dicom", "m", "nz", "patient", "v", "vz"]


def test_batch_predicts_a_nested_dicom_patient_folder(tmp_path, standin):
    write_dicom_series(tmp_path / "batch" / "patient" / "study1" / "series2", phantom((6, 40, 40)))
    write_dicom_series(tmp_path / "batch" / "flat", phantom((6, 40, 40)))
    out, ckpt = tmp_path / "out", tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"stand-in weights")  # the batch records the checkpoint's hash
    assert main(["predict", str(tmp_path / "batch"), "--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert (out / "patient" / "predictions.json").is_file() and (out / "flat" / "predictions.json").is_file()


# ------------------------------------------------------------------------------------ a3d data import


def _rows(root: Path) -> list[tuple]:
    """DL_info rows without the patient/study/series numbers and split (the case names differ)."""
    keep = ("key_slice", "recist", "box", "diameters_px", "location", "slice_range", "spacing", "image_size")
    return [tuple(np.asarray(getattr(r, k)).round(4).tobytes() for k in keep) for r in read_dl_info(root / "DL_info.csv")]


def _split(tmp_path: Path, names) -> Path:
    path = tmp_path / "split.csv"
    path.write_text("case,split\n" + "".join(f"{n},test\n" for n in names))
    return path


def test_import_nrrd_and_metaimage_in_every_layout_gives_the_nifti_rows(tmp_path):
    """images/ + labels/ of NRRD, imagesTr/ + labelsTr/ of MetaImage (nnU-Net's _0000), flat .nii +
    _seg.nii pairs, flat .nrrd + .seg.nrrd (3D Slicer), .mhd + _mask.mhd with detached data: each
    import gives the rows and the LUNA16 centres of the NIfTI import of the same volume, and
    volumes/test/ can be read again (a .mhd's data file linked beside it). Fails on today's main:
    'no image/label pair found' for NRRD and MetaImage."""
    hu, lab = two_lesion_case()
    himg, limg = sitk.DICOMOrient(lps_image(hu), "RAS"), sitk.DICOMOrient(lps_image(lab), "RAS")
    layouts = {
        "nifti": [("images/c.nii.gz", himg), ("labels/c.nii.gz", limg)],
        "nrrd": [("images/c.nrrd", himg), ("labels/c.nrrd", limg)],
        "msd_mha": [("imagesTr/c_0000.mha", himg), ("labelsTr/c.mha", limg)],
        "flat_nii": [("c.nii", himg), ("c_seg.nii", limg)],
        "slicer": [("c.nrrd", himg), ("c.seg.nrrd", limg)],
        "flat_mhd": [("c.mhd", himg), ("c_mask.mhd", limg)],
    }
    rows, centres = {}, {}
    for layout, files in layouts.items():
        src = tmp_path / layout
        for rel, image in files:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(src / rel), useCompression=rel.endswith(".seg.nrrd"))
        cases, notes = find_cases(src)
        assert len(cases) == 1 and not notes, (layout, notes)
        root = tmp_path / f"dl_{layout}"
        summary = import_volumes(src, root, ImportOptions(split_file=_split(tmp_path, [cases[0].name])))
        assert summary.imported == 1 and summary.lesions == 2, layout
        rows[layout] = _rows(root)
        ann = (root / "luna16" / "annotations_test.csv").read_text().splitlines()[1:]
        centres[layout] = sorted(tuple(round(float(v), 3) for v in a.split(",")[1:4]) for a in ann)
        linked = S.scan_entries(root / "volumes" / "test")
        assert len(linked) == 1 and S.read_scan(linked[0]).shape == hu.shape
    for layout in layouts:
        assert rows[layout] == rows["nifti"], layout
        assert centres[layout] == centres["nifti"], layout
    assert sorted(os.listdir(tmp_path / "dl_flat_mhd" / "volumes" / "test")) == ["c.mhd", "c.raw"]


def test_import_refuses_a_layered_seg_nrrd_naming_it(tmp_path, capsys):
    """A .seg.nrrd whose segments overlap (several layers: a vector image) is not a label map: the
    case is skipped with a line naming the file; a .seg.nrrd alone is reported as an unpaired label."""
    hu, lab = two_lesion_case()
    src = tmp_path / "src"
    src.mkdir()
    sitk.WriteImage(lps_image(hu), str(src / "c.nrrd"))
    layers = sitk.Compose(sitk.Cast(lps_image(lab) == 1, sitk.sitkUInt8), sitk.Cast(lps_image(lab) > 0, sitk.sitkUInt8))
    sitk.WriteImage(layers, str(src / "c.seg.nrrd"))
    sitk.WriteImage(lps_image(lab), str(src / "orphan.seg.nrrd"))
    cases, notes = find_cases(src)
    assert [c.label.name for c in cases] == ["c.seg.nrrd"]
    assert len(notes) == 1 and "orphan.seg.nrrd: no image orphan" in notes[0]
    with pytest.raises(A3DError, match=r"c\.seg\.nrrd: NRRD image with 2 values per voxel .*3D Slicer"):
        import_volumes(src, tmp_path / "dl", ImportOptions(strict=True))
    assert main(["data", "import", str(src), "--out", str(tmp_path / "dl")]) == 2
    assert "c.seg.nrrd: NRRD image with 2 values per voxel" in capsys.readouterr().err


def test_import_resume_notices_a_changed_detached_data_file(tmp_path):
    """A .mhd case is redone when only its .raw data file changes (the header keeps size and time)."""
    hu, lab = two_lesion_case()
    src = tmp_path / "src"
    src.mkdir()
    sitk.WriteImage(lps_image(hu), str(src / "c.mhd"))
    sitk.WriteImage(lps_image(lab), str(src / "c_seg.nii.gz"))
    root = tmp_path / "dl"
    assert import_volumes(src, root).imported == 1
    assert import_volumes(src, root).resumed == 1
    st = (src / "c.mhd").stat()
    raw = bytearray((src / "c.raw").read_bytes())
    raw[:2] = b"\x00\x01"
    (src / "c.raw").write_bytes(bytes(raw))
    os.utime(src / "c.mhd", ns=(st.st_atime_ns, st.st_mtime_ns))
    again = import_volumes(src, root)
    assert again.imported == 1 and again.resumed == 0
