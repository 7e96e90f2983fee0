"""`a3d data import`: orientation, key slice and measurements, connectivity, min-size, bad input,
resume, layouts and split, real CT organ labels read back by the dataset."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from a3d.cli import main
from a3d.data import DeepLesionDataset, read_dl_info
from a3d.data.importer import ImportOptions, find_cases, import_volumes
from a3d.data.importer import run as import_run
from a3d.data.slices import hu_to_input
from test_predict_support import shared_ct

ORIGIN = (-40.0, -30.0, 100.0)  # LPS mm of voxel (0, 0, 0) of the canonical volumes below
SPACING = (0.8, 0.8, 2.0)


def lps_image(arr_zyx: np.ndarray, spacing=SPACING, origin=ORIGIN):
    """A canonical (identity direction = LPS) SimpleITK image of a (z, y, x) array."""
    img = sitk.GetImageFromArray(arr_zyx)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


def write_pair(folder: Path, name: str, hu_zyx, label_zyx, orientation: str = "LPS", spacing=SPACING):
    """``name.nii.gz`` + ``name_seg.nii.gz``, the canonical arrays stored in ``orientation``."""
    folder.mkdir(parents=True, exist_ok=True)
    for arr, fn in ((hu_zyx, f"{name}.nii.gz"), (label_zyx, f"{name}_seg.nii.gz")):
        sitk.WriteImage(sitk.DICOMOrient(lps_image(arr, spacing), orientation), str(folder / fn))


def ellipse(h, w, cx, cy, a, b) -> np.ndarray:
    """Pixel centres inside the axis-aligned ellipse (x - cx)^2/a^2 + (y - cy)^2/b^2 <= 1."""
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1


def volume(shape=(12, 64, 80), seed=0):
    """A noisy soft-tissue volume (int16 HU) and an empty uint8 label volume, canonical (z, y, x)."""
    rng = np.random.default_rng(seed)
    return (40 + rng.normal(0, 10, shape)).astype(np.int16), np.zeros(shape, dtype=np.uint8)


def two_lesion_case():
    """Lesion A (label 1): ellipses on slices 3-5, the largest (a=10, b=4 px at x=30, y=20) on slice 4.
    Lesion B (label 2): a cylinder (radius 5 px at x=60, y=45) of equal area on slices 6-10 (key: 8)."""
    hu, lab = volume()
    h, w = lab.shape[1:]
    lab[3][ellipse(h, w, 30, 20, 7, 3)] = 1
    lab[4][ellipse(h, w, 30, 20, 10, 4)] = 1
    lab[5][ellipse(h, w, 30, 20, 6, 2)] = 1
    for z in range(6, 11):
        lab[z][ellipse(h, w, 60, 45, 5, 5)] = 2
    hu[lab > 0] = 200
    return hu, lab


def rows_by_patient(root: Path) -> dict[int, list]:
    out: dict[int, list] = {}
    for r in read_dl_info(root / "DL_info.csv"):
        out.setdefault(r.patient, []).append(r)
    return out


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def all_annotations(root: Path) -> list[dict]:
    return [r for s in ("train", "val", "test") for r in read_csv(root / "luna16" / f"annotations_{s}.csv")]


# ------------------------------------------------------------------------------------ orientation


def test_same_rows_whatever_the_storage_orientation(tmp_path):
    """RAS, LPS and permuted-axes storage of one volume give the same rows, slices and world centres.
    Fails if the label (or the image) is used in its stored orientation instead of canonical LPS."""
    hu, lab = two_lesion_case()
    for name, code in (("a_lps", "LPS"), ("b_ras", "RAS"), ("c_perm", "SAR")):
        write_pair(tmp_path / "src", name, hu, lab, code)
    stored = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "src" / f"{n}_seg.nii.gz")))
              for n in ("a_lps", "b_ras", "c_perm")]
    assert not np.array_equal(stored[0], stored[1]) and stored[2].shape != stored[0].shape  # really stored apart
    root = tmp_path / "dl"
    import_volumes(tmp_path / "src", root)
    per = rows_by_patient(root)
    assert sorted(per) == [1, 2, 3] and all(len(v) == 2 for v in per.values())
    fields = ("key_slice", "recist", "box", "diameters_px", "location", "slice_range", "spacing", "image_size")
    for p in (2, 3):
        for r0, r in zip(per[1], per[p]):
            for f in fields:
                np.testing.assert_array_equal(np.asarray(getattr(r0, f)), np.asarray(getattr(r, f)), err_msg=f)
    ann = all_annotations(root)
    by_uid = {}
    for a in ann:
        by_uid.setdefault(a["seriesuid"], []).append([float(a[k]) for k in ("coordX", "coordY", "coordZ")])
    assert set(by_uid) == {"a_lps", "b_ras", "c_perm"}
    for uid in ("b_ras", "c_perm"):
        np.testing.assert_allclose(sorted(by_uid[uid]), sorted(by_uid["a_lps"]), atol=1e-3)
    for n in range(1, 13):
        pngs = [root / "Images_png" / f"00000{p}_01_01" / f"{n:03d}.png" for p in (1, 2, 3)]
        if pngs[0].exists():
            assert pngs[1].read_bytes() == pngs[0].read_bytes() == pngs[2].read_bytes()


# ------------------------------------------------------------------------------------ measurements


def test_key_slice_and_axes_against_hand_computed_masks(tmp_path):
    """Key slice = largest cross-section (ties: the middle); RECIST end points, diameters, padded box,
    location, world centre and diameter of an ellipse and a cylinder, worked out by hand.
    Fails if the key slice is the first slice of the lesion, if the box is not padded by 5 px, or
    if the world centre does not go through the image geometry."""
    hu, lab = two_lesion_case()
    write_pair(tmp_path / "src", "case", hu, lab)
    root = tmp_path / "dl"
    import_volumes(tmp_path / "src", root)
    a, b = read_dl_info(root / "DL_info.csv")
    assert (a.key_slice, b.key_slice) == (4 + 1, 8 + 1)  # 1-based PNG numbers
    # ellipse a=10, b=4 at (30, 20): long axis along x between the extreme pixel centres, short along y
    np.testing.assert_allclose(a.recist, [20, 20, 40, 20, 30, 16, 30, 24])  # 0-based after the reader
    np.testing.assert_allclose(a.diameters_px, [20, 8])
    np.testing.assert_allclose(a.box, [20 - 5, 16 - 5, 40 + 5, 24 + 5])
    np.testing.assert_allclose(b.box, [55 - 5, 40 - 5, 65 + 5, 50 + 5])
    assert a.slice_range == (1, 12) and a.image_size == (64, 80) and a.split in (1, 2, 3)
    np.testing.assert_allclose(a.spacing, SPACING)
    # lesion A's voxels are symmetric about (30, 20) in-plane; in z: slice sizes 3-5 weight its centre
    n = [lab[z][lab[z] == 1].size for z in (3, 4, 5)]
    zc = (3 * n[0] + 4 * n[1] + 5 * n[2]) / sum(n)
    np.testing.assert_allclose(a.location, [30 / 80, 20 / 64, (11 - zc) / 11], atol=1e-4)
    (ann,) = [r for r in all_annotations(root) if float(r["coordZ"]) < ORIGIN[2] + 12]
    expect = [ORIGIN[0] + 30 * SPACING[0], ORIGIN[1] + 20 * SPACING[1], ORIGIN[2] + zc * SPACING[2]]
    np.testing.assert_allclose([float(ann[k]) for k in ("coordX", "coordY", "coordZ")], expect, atol=1e-3)
    assert float(ann["diameter_mm"]) == pytest.approx(20 * SPACING[0])
    # the true masks file holds the key-slice cross-section of each lesion
    with np.load(root / "masks_true" / "000001_01_01_005.npz") as z:
        np.testing.assert_array_equal(z["masks"][0], lab[4] == 1)


def test_26_connectivity_and_one_lesion_per_label_value(tmp_path):
    """Voxels touching only at a corner are one lesion; touching voxels of two values are two.
    Fails with 6-connectivity, or if label values are merged before the components."""
    hu, lab = volume((6, 32, 32))
    lab[2, 10:14, 10:14] = 1
    lab[3, 14:18, 14:18] = 1  # meets the block above at one corner only
    lab[2, 20:24, 20:24] = 2
    lab[2, 20:24, 24:28] = 3  # face to face with the label-2 block
    write_pair(tmp_path / "src", "c", hu, lab)
    import_volumes(tmp_path / "src", tmp_path / "dl")
    rows = read_dl_info(tmp_path / "dl" / "DL_info.csv")
    assert len(rows) == 3


def test_min_size_drops_specks_and_lists_them_as_excluded(tmp_path, capsys):
    """A 2-voxel speck below --min-size is dropped, counted and written to annotations_excluded.
    Fails if the threshold is not applied or compared in voxels instead of mm^3."""
    hu, lab = two_lesion_case()
    lab[1, 50, 10:12] = 1  # 2 voxels of 0.8 x 0.8 x 2 mm = 2.56 mm^3
    write_pair(tmp_path / "src", "c", hu, lab)
    out = tmp_path / "dl"
    assert main(["data", "import", str(tmp_path / "src"), "--out", str(out), "--min-size", "3",
                 "--split", str(_split_file(tmp_path, {"c": "test"}))]) == 0
    assert "2 lesions, 1 components below --min-size dropped" in capsys.readouterr().out
    assert len(read_dl_info(out / "DL_info.csv")) == 2
    (ex,) = read_csv(out / "luna16" / "annotations_excluded_test.csv")
    assert float(ex["coordX"]) == pytest.approx(ORIGIN[0] + 10.5 * SPACING[0])
    assert float(ex["coordZ"]) == pytest.approx(ORIGIN[2] + 1 * SPACING[2])
    # 2 voxels = 2.56 mm^3: with --min-size 2.5 it is a lesion again
    assert main(["data", "import", str(tmp_path / "src"), "--out", str(tmp_path / "dl2"), "--min-size", "2.5"]) == 0
    assert len(read_dl_info(tmp_path / "dl2" / "DL_info.csv")) == 3


# ------------------------------------------------------------------------------------ bad input, resume


def _split_file(tmp_path: Path, splits: dict) -> Path:
    p = tmp_path / "split.csv"
    p.write_text("case,split\n" + "".join(f"{k},{v}\n" for k, v in splits.items()))
    return p


def _bad_inputs(src: Path) -> None:
    hu, lab = two_lesion_case()
    write_pair(src, "a_geometry", hu, lab)
    sitk.WriteImage(lps_image(lab, spacing=(0.8, 0.8, 2.5)), str(src / "a_geometry_seg.nii.gz"))
    write_pair(src, "b_float", hu, lab.astype(np.float32) * 0.5)
    write_pair(src, "c_empty", hu, np.zeros_like(lab))
    write_pair(src, "d_flat", hu[:1], lab[:1])
    write_pair(src, "e_good", hu, lab)


def test_bad_inputs_are_skipped_with_their_file_named_and_strict_stops(tmp_path, capsys):
    """Different geometry, non-integer labels, an empty label and a single slice: one line each naming
    the file, the good case imported, exit 0; --strict: exit 2 at the first. Fails if a bad case
    aborts the import or slips through."""
    src = tmp_path / "src"
    _bad_inputs(src)
    assert main(["data", "import", str(src), "--out", str(tmp_path / "dl")]) == 0
    err = capsys.readouterr().err
    assert "skipped 4 volume(s)" in err
    assert "a_geometry_seg.nii.gz: label volume not on its image's grid (spacing" in err
    assert "b_float_seg.nii.gz: label map has non-integer values (e.g. 0.5)" in err
    assert "c_empty_seg.nii.gz: empty label map" in err
    assert "d_flat.nii.gz" in err and "2D" in err
    assert {r.patient for r in read_dl_info(tmp_path / "dl" / "DL_info.csv")} == {5}
    status = {r["case"]: r["status"] for r in read_csv(tmp_path / "dl" / "import" / "mapping.csv")}
    assert status == {"a_geometry": "skipped", "b_float": "skipped", "c_empty": "skipped", "d_flat": "skipped",
                      "e_good": "imported"}
    assert main(["data", "import", str(src), "--out", str(tmp_path / "dl2"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "a_geometry_seg.nii.gz: label volume not on its image's grid" in err and err.count("\n") == 1
    assert not (tmp_path / "dl2" / "DL_info.csv").exists()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and "import" not in p.parts and "volumes" not in p.parts}


def test_resume_after_an_interruption_gives_the_clean_result(tmp_path, monkeypatch):
    """A run killed during the second case, then re-run, ends byte-identical to one clean run, without
    rewriting the first case; a re-run with other options redoes the cases. Fails if finished cases
    are redone, if the record is written before the slices (a half-written case taken as done), or
    if a record with other options is reused."""
    hu, lab = two_lesion_case()
    for name in ("a", "b", "c"):
        write_pair(tmp_path / "src", name, hu, lab)
    clean = tmp_path / "clean"
    import_volumes(tmp_path / "src", clean)
    out = tmp_path / "dl"
    real = import_run.write_series
    calls, crashed = [], []

    class Killed(BaseException):
        pass

    def crash_once_on_second(root, place, *args):
        calls.append(place.patient)
        real(root, place, *args)
        if place.patient == 2 and not crashed:
            crashed.append(True)
            raise Killed  # after the PNGs, before the case's record

    monkeypatch.setattr(import_run, "write_series", crash_once_on_second)
    with pytest.raises(Killed):
        import_volumes(tmp_path / "src", out)
    first = (out / "Images_png" / "000001_01_01" / "005.png").stat().st_mtime_ns
    calls.clear()
    s = import_volumes(tmp_path / "src", out)
    assert calls == [2, 3] and (s.resumed, s.imported) == (1, 2)
    assert (out / "Images_png" / "000001_01_01" / "005.png").stat().st_mtime_ns == first
    assert _tree(out) == _tree(clean)
    calls.clear()
    s = import_volumes(tmp_path / "src", out, ImportOptions(labels=(1,)))
    assert calls == [1, 2, 3] and len(read_dl_info(out / "DL_info.csv")) == 3


# ------------------------------------------------------------------------------------ layouts, split


def test_layouts_and_naming_rules(tmp_path):
    """MSD (dataset.json, or imagesTr/labelsTr with nnU-Net's _0000), images/ + labels/, flat pairs;
    unpaired files are named. Fails if a rule pairs the wrong files or drops one silently."""
    hu, lab = two_lesion_case()
    msd = tmp_path / "msd"
    for folder, name in (("imagesTr", "liver_001_0000"), ("labelsTr", "liver_001")):
        (msd / folder).mkdir(parents=True)
        sitk.WriteImage(lps_image(hu if folder == "imagesTr" else lab), str(msd / folder / f"{name}.nii.gz"))
    sitk.WriteImage(lps_image(hu), str(msd / "imagesTr" / "liver_002_0000.nii.gz"))
    cases, notes = find_cases(msd)
    assert [(c.name, c.image.name, c.label.name) for c in cases] == [("liver_001_0000", "liver_001_0000.nii.gz",
                                                                      "liver_001.nii.gz")]
    assert len(notes) == 1 and "liver_002_0000.nii.gz: no label" in notes[0]
    (msd / "dataset.json").write_text('{"training": [{"image": "./imagesTr/liver_002_0000.nii.gz", '
                                      '"label": "./labelsTr/liver_001.nii.gz"}]}')
    assert [c.image.name for c in find_cases(msd)[0]] == ["liver_002_0000.nii.gz"]
    flat = tmp_path / "flat"
    for name, arr in (("p1", hu), ("p1_label", lab), ("p2", hu), ("p2_mask", lab), ("p3", hu), ("p4_seg", lab)):
        flat.mkdir(exist_ok=True)
        sitk.WriteImage(lps_image(arr), str(flat / f"{name}.nii.gz"))
    cases, notes = find_cases(flat)
    assert [(c.name, c.label.name) for c in cases] == [("p1", "p1_label.nii.gz"), ("p2", "p2_mask.nii.gz")]
    assert sorted(n.split(":")[0].rsplit("/", 1)[1] for n in notes) == ["p3.nii.gz", "p4_seg.nii.gz"]


def test_split_file_and_seeded_patient_split(tmp_path, capsys):
    """--split places each case where the file says (and must name every case); the default split is
    seeded (same seed, same split, at least one val and one test patient). Fails if the split file
    is ignored."""
    hu, lab = two_lesion_case()
    for i in range(10):
        write_pair(tmp_path / "src", f"c{i}", hu[:, :32, :48], lab[:, :32, :48])
    split = _split_file(tmp_path, {f"c{i}": ("test" if i < 2 else "val" if i < 5 else "train") for i in range(10)})
    assert main(["data", "import", str(tmp_path / "src"), "--out", str(tmp_path / "a"), "--split", str(split)]) == 0
    got = {r.patient: r.split for r in read_dl_info(tmp_path / "a" / "DL_info.csv")}
    assert got == {p: 3 if p <= 2 else 2 if p <= 5 else 1 for p in range(1, 11)}
    assert [r["seriesuid"] for r in read_csv(tmp_path / "a" / "luna16" / "seriesuids_test.csv")] == ["c0", "c1"]
    assert sorted(os.listdir(tmp_path / "a" / "volumes" / "test")) == ["c0.nii.gz", "c1.nii.gz"]
    bad = _split_file(tmp_path, {"c0": "test"})
    assert main(["data", "import", str(tmp_path / "src"), "--out", str(tmp_path / "b"), "--split", str(bad)]) == 2
    assert "case 'c1' (and 8 more) not listed" in capsys.readouterr().err
    for out in ("d", "e"):
        main(["data", "import", str(tmp_path / "src"), "--out", str(tmp_path / out), "--seed", "3"])
    d = {r.patient: r.split for r in read_dl_info(tmp_path / "d" / "DL_info.csv")}
    assert d == {r.patient: r.split for r in read_dl_info(tmp_path / "e" / "DL_info.csv")}
    assert sorted(d.values()).count(2) >= 1 and sorted(d.values()).count(3) >= 1


# ------------------------------------------------------------------------------------ real CT


def test_real_ct_kidneys_read_back_by_the_dataset(tmp_path):
    """example_ct_sm (RAS-stored) with the kidneys of example_seg as lesions: the right kidney lies on
    the image's left; DeepLesionDataset gives each kidney's box (computed here from the stored arrays
    flipped by hand) and the CT slice on its key slice. Fails if rows or columns are not flipped to LPS."""
    ct, seg = shared_ct("example_ct_sm.nii.gz"), shared_ct("example_seg.nii.gz")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(ct, src / "abdomen.nii.gz")
    os.symlink(seg, src / "abdomen_seg.nii.gz")
    root = tmp_path / "dl"
    assert main(["data", "import", str(src), "--out", str(root), "--labels", "2,3",
                 "--split", str(_split_file(tmp_path, {"abdomen": "train"}))]) == 0
    # RAS storage (direction diag(-1, -1, 1)): array [k, j, i]; LPS columns and rows run the other way
    seg_lps = sitk.GetArrayFromImage(sitk.ReadImage(str(seg)))[:, ::-1, ::-1]
    ct_lps = sitk.GetArrayFromImage(sitk.ReadImage(str(ct)))[:, ::-1, ::-1]
    ds = DeepLesionDataset(root, "train", slices=3, mask_dir="masks_true", cache=False)
    rows = {r.location[0] < 0.5: r for r in ds.lesions}
    assert len(ds.lesions) == 2 and set(rows) == {True, False}
    for value, on_left in ((2, True), (3, False)):  # TotalSegmentator: 2 right kidney, 3 left kidney
        m = seg_lps == value
        key = int(np.argmax(m.sum((1, 2))))
        ys, xs = np.nonzero(m[key])
        expect = [max(xs.min() - 5, 0), max(ys.min() - 5, 0), min(xs.max() + 5, m.shape[2] - 1),
                  min(ys.max() + 5, m.shape[1] - 1)]
        r = rows[on_left]
        assert r.key_slice == key + 1
        i = next(k for k, g in enumerate(ds.records) if any(x is r for x in g))
        j = [x is r for x in ds.records[i]].index(True)
        img, target = ds[i]
        np.testing.assert_allclose(target["boxes"][j].numpy(), expect)
        np.testing.assert_allclose(img[0, 1].numpy(), hu_to_input(ct_lps[key]), atol=1e-4)


def test_dicom_series_with_a_nifti_label(tmp_path):
    """images/X/ (a DICOM series) + labels/X.nii.gz: imported, the seriesuid is the DICOM
    SeriesInstanceUID (as a3d predict names the scan), volumes/ links the series folder.
    Fails if the DICOM series is refused or named by its folder."""
    from test_predict_support import write_dicom_series

    hu, lab = two_lesion_case()
    uid = write_dicom_series(tmp_path / "src" / "images" / "pat1", hu.astype(np.float32), spacing=SPACING,
                             origin=ORIGIN)
    (tmp_path / "src" / "labels").mkdir()
    sitk.WriteImage(lps_image(lab), str(tmp_path / "src" / "labels" / "pat1.nii.gz"))
    root = tmp_path / "dl"
    import_volumes(tmp_path / "src", root, ImportOptions(split_file=_split_file(tmp_path, {"pat1": "test"})))
    assert len(read_dl_info(root / "DL_info.csv")) == 2
    assert {r["seriesuid"] for r in read_csv(root / "luna16" / "annotations_test.csv")} == {uid}
    link = root / "volumes" / "test" / "pat1"
    assert link.is_dir() and sorted(os.listdir(link)) == sorted(os.listdir(tmp_path / "src" / "images" / "pat1"))
