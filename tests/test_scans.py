"""Scan reading for `a3d predict`: real CT (NIfTI, RAS), synthetic DICOM/NIfTI/DeepLesion PNG, bad inputs."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from a3d.data import scans as S
from a3d.data.slices import write_png_hu
from a3d.errors import A3DError
from test_predict_support import phantom, shared_ct, synthetic_nifti, write_dicom_series


# ------------------------------------------------------------------------------------ real CT


def test_real_ct_read_and_ras_to_lps_flip():
    path = shared_ct("example_ct_sm.nii.gz")
    scan = S.read_scan(path)
    orig = sitk.ReadImage(str(path))
    assert scan.kind == "nifti" and scan.original_orientation == "RAS"
    assert scan.shape == (30, 101, 122) and scan.spacing == (3.0, 3.0, 3.0)
    np.testing.assert_allclose(np.asarray(scan.image.GetDirection()), np.eye(3).ravel())
    a = sitk.GetArrayViewFromImage(orig)
    # RAS storage -> LPS canonical: x and y flipped, z kept
    np.testing.assert_array_equal(scan.hu, a[:, ::-1, ::-1].astype(np.float32))
    for x, y, z in [(0, 0, 0), (10, 20, 5), (121, 100, 29), (60, 7, 13)]:
        p_canon = scan.physical_point(x, y, z)
        p_orig = orig.TransformIndexToPhysicalPoint((121 - x, 100 - y, z))
        np.testing.assert_allclose(p_canon, p_orig, atol=1e-6)
        assert scan.hu[z, y, x] == a[z, 100 - y, 121 - x]
        np.testing.assert_allclose(scan.original_index(p_canon), (121 - x, 100 - y, z), atol=1e-6)
    # LPS: column index grows towards the patient's left (+x), row index towards posterior (+y)
    assert scan.physical_point(1, 0, 0)[0] > scan.physical_point(0, 0, 0)[0]
    assert scan.physical_point(0, 1, 0)[1] > scan.physical_point(0, 0, 0)[1]
    assert scan.physical_point(0, 0, 1)[2] > scan.physical_point(0, 0, 0)[2]
    assert scan.original_slice_index(7) == 7
    # body in air: HU range of a CT
    assert scan.hu.min() < -900 and scan.hu.max() > 200 and not scan.warnings


# ------------------------------------------------------------------------------------ synthetic DICOM


def test_dicom_series_hu_and_geometry(tmp_path):
    vol = phantom((12, 40, 48))
    vol[5, 10:14, 20:30] = 300.0
    spacing, origin = (0.7, 0.8, 2.5), (-40.0, -30.0, 100.0)
    write_dicom_series(tmp_path / "dcm", vol, spacing=spacing, origin=origin, slope=0.5, intercept=-1024.0)
    scan = S.read_scan(tmp_path / "dcm")
    assert scan.kind == "dicom" and scan.shape == vol.shape
    np.testing.assert_allclose(scan.spacing, spacing, atol=1e-6)
    np.testing.assert_allclose(scan.image.GetOrigin(), origin, atol=1e-4)
    # stored = (HU + 1024) / 0.5: SimpleITK must have applied the rescale slope/intercept
    np.testing.assert_allclose(scan.hu, np.round((vol + 1024) / 0.5) * 0.5 - 1024, atol=1e-3)
    assert scan.hu[5, 10:14, 20:30].min() == pytest.approx(300.0)
    # files were written shuffled with reversed InstanceNumber: slices ordered by position (inferior first)
    assert scan.physical_point(0, 0, 5)[2] == pytest.approx(100.0 + 5 * 2.5)
    assert scan.original_slice_index(5) == 5
    assert len(scan.slice_files) == 12


def test_dicom_several_series(tmp_path):
    d = tmp_path / "dcm"
    big = write_dicom_series(d, phantom((10, 32, 32)), series_uid="1.2.3.4.100")
    small = write_dicom_series(d, phantom((6, 32, 32), seed=1) + 100, series_uid="1.2.3.4.200")
    series = S.list_dicom_series(d)
    assert [s.uid for s in series] == [big, small] and [s.n_files for s in series] == [10, 6]
    scan = S.read_scan(d)
    assert scan.series_uid == big and "2 series; used the largest" in scan.warnings[0]
    scan = S.read_scan(d, series_uid=small)
    assert scan.series_uid == small and scan.shape[0] == 6
    with pytest.raises(A3DError, match="no series with --series 9.9"):
        S.read_scan(d, series_uid="9.9")


def test_dicom_bad_inputs(tmp_path):
    write_dicom_series(tmp_path / "mr", phantom((4, 16, 16)), modality="MR")
    with pytest.raises(A3DError, match="Modality is MR"):
        S.read_scan(tmp_path / "mr")
    write_dicom_series(tmp_path / "nosp", phantom((4, 16, 16)), drop=("PixelSpacing",))
    with pytest.raises(A3DError, match="PixelSpacing"):
        S.read_scan(tmp_path / "nosp")
    write_dicom_series(tmp_path / "one", phantom((1, 16, 16)))
    with pytest.raises(A3DError, match="single 2D image"):
        S.read_scan(tmp_path / "one")
    f = next((tmp_path / "one").iterdir())
    with pytest.raises(A3DError, match="single DICOM file is a 2D image"):
        S.read_scan(f)


def test_corrupt_dicom(tmp_path):
    d = tmp_path / "dcm"
    write_dicom_series(d, phantom((4, 16, 16)), shuffle=False)
    for f in sorted(d.iterdir()):
        f.write_bytes(f.read_bytes()[:200])  # truncated inside the header
    with pytest.raises(A3DError) as e:
        S.read_scan(d)
    assert str(d) in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ NIfTI


def test_nifti_planted_lesion_physical_position(tmp_path):
    path, lesions, label, img = synthetic_nifti(tmp_path / "s.nii.gz")
    scan = S.read_scan(path)
    assert scan.original_orientation == "RAS"
    (c, r) = lesions[0]
    # voxels of lesion 1 in canonical space, their physical centroid equals the planted centre
    lab = sitk.GetImageFromArray(label)
    lab.CopyInformation(img)
    lab_c = sitk.GetArrayFromImage(sitk.DICOMOrient(lab, "LPS"))
    idx = np.argwhere(lab_c == 1).mean(axis=0)  # z, y, x
    np.testing.assert_allclose(scan.physical_point(idx[2], idx[1], idx[0]), c, atol=0.8)
    assert (scan.hu[lab_c == 1] == 250).all()


def test_nifti_bad_inputs(tmp_path):
    img2d = sitk.GetImageFromArray(np.zeros((16, 16), np.int16))
    sitk.WriteImage(img2d, str(tmp_path / "flat.nii.gz"))
    with pytest.raises(A3DError, match="2D"):
        S.read_scan(tmp_path / "flat.nii.gz")
    one = sitk.GetImageFromArray(np.zeros((1, 16, 16), np.int16))
    sitk.WriteImage(one, str(tmp_path / "one.nii"))
    with pytest.raises(A3DError, match="single 2D slice"):
        S.read_scan(tmp_path / "one.nii")
    # NIfTI header with pixdim = 0 (no spacing)
    vol = sitk.GetImageFromArray(phantom((4, 16, 16)).astype(np.int16))
    sitk.WriteImage(vol, str(tmp_path / "nosp.nii"))
    raw = bytearray((tmp_path / "nosp.nii").read_bytes())
    for i in (1, 2, 3):
        raw[76 + 4 * i : 80 + 4 * i] = struct.pack("<f", 0.0)
    raw[252:256] = struct.pack("<hh", 0, 0)  # qform_code, sform_code: no transform
    (tmp_path / "nosp.nii").write_bytes(bytes(raw))
    with pytest.raises(A3DError, match="spacing"):
        S.read_scan(tmp_path / "nosp.nii")
    # corrupt (truncated) gzip
    path, *_ = synthetic_nifti(tmp_path / "ok.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(path.read_bytes()[:300])
    with pytest.raises(A3DError, match="bad.nii.gz"):
        S.read_scan(tmp_path / "bad.nii.gz")
    (tmp_path / "text.nii").write_text("not an image")
    with pytest.raises(A3DError, match="not a readable NIfTI"):
        S.read_scan(tmp_path / "text.nii")


def test_unreadable_folder(tmp_path, monkeypatch):
    d = tmp_path / "locked"
    write_dicom_series(d, phantom((3, 16, 16)))
    os.chmod(d, 0)
    try:
        if os.geteuid() == 0:  # root ignores permissions: simulate what the OS would say
            monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != d and os.path.exists(p))
        with pytest.raises(A3DError, match="cannot be read"):
            S.read_scan(d)
    finally:
        os.chmod(d, 0o755)


# ------------------------------------------------------------------------------------ DeepLesion PNG


def _png_series(folder: Path, n=5, first=20):
    vol = phantom((n, 32, 32)).round()
    for k in range(n):
        write_png_hu(folder / f"{first + k:03d}.png", vol[k])
    return vol


def test_deeplesion_png_series(tmp_path):
    d = tmp_path / "000001_01_01"
    vol = _png_series(d)
    with pytest.raises(A3DError, match="--dl-info DL_info.csv or --spacing"):
        S.read_scan(d)
    scan = S.read_scan(d, spacing=(0.8, 0.8, 5.0))
    assert scan.kind == "deeplesion-png" and scan.spacing == pytest.approx((0.8, 0.8, 5.0))
    np.testing.assert_array_equal(scan.hu, vol)
    csv = tmp_path / "DL_info.csv"
    csv.write_text(
        "File_name,Patient_index,Study_index,Series_ID,Key_slice_index,Measurement_coordinates,Bounding_boxes,"
        "Lesion_diameters_Pixel_,Normalized_lesion_location,Coarse_lesion_type,Possibly_noisy,Slice_range,"
        "Spacing_mm_px_,Image_size,DICOM_windows,Patient_gender,Patient_age,Train_Val_Test\n"
        '000001_01_01_022.png,1,1,1,22,"10, 10, 20, 20, 12, 18, 18, 12","5, 5, 25, 25","14.1, 8.5",'
        '"0.5, 0.5, 0.5",3,0,"20, 24","0.7, 0.7, 2.5","32, 32","-175, 275",M,51,1\n'
    )
    scan = S.read_scan(d, dl_info=csv)
    assert scan.spacing == pytest.approx((0.7, 0.7, 2.5))
    with pytest.raises(A3DError, match="--spacing"):
        S.parse_spacing("1,2")
    (d / "021.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(A3DError, match="021.png"):
        S.read_scan(d, spacing=(1, 1, 1))
