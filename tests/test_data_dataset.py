"""DeepLesionDataset on generated data: contract, noisy rows, resize, masks, cache == PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a3d.data import DeepLesionDataset, collate, read_dl_info
from a3d.data.cache import build_cache
from a3d.errors import A3DError


def test_item_contract(synth_root):
    ds = DeepLesionDataset(synth_root, "all", slices=3, mask_dir="masks_true")
    assert len(ds) == len(ds.records) > 0
    img, t = ds[0]
    assert img.dtype == torch.float32 and img.shape == (1, 3, 128, 128)
    assert -50 <= float(img.min()) and float(img.max()) <= 205
    n = len(ds.records[0])
    assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
    assert t["labels"].dtype == torch.int64 and t["labels"].tolist() == [1] * n
    assert t["masks"].shape == (n, 128, 128) and t["masks"].dtype == torch.uint8
    assert t["thickness"].shape == () and t["thickness"].dtype == torch.float32
    assert t["recist"].shape == (n, 8) and t["recist"].dtype == torch.float32
    assert t["image_id"] == ds.records[0][0].image_id
    assert t["spacing"].shape == (3,) and t["spacing"].dtype == torch.float32
    assert t["lesion_type"].dtype == torch.int64 and t["lesion_type"].shape == (n,)
    assert t["diameters_mm"].dtype == torch.float32 and t["diameters_mm"].shape == (n,)
    r = ds.records[0][0]
    np.testing.assert_allclose(t["boxes"][0].numpy(), r.box)
    assert float(t["diameters_mm"][0]) == pytest.approx(float(r.diameters_px[0] * r.spacing[0]), rel=1e-5)
    # masks lie inside their boxes (true masks; boxes are the shape padded by 5 px)
    for m, b in zip(t["masks"], t["boxes"]):
        ys, xs = torch.nonzero(m, as_tuple=True)
        assert xs.min() >= b[0] and xs.max() <= b[2] and ys.min() >= b[1] and ys.max() <= b[3]


def test_splits_and_noisy(synth_root):
    recs = read_dl_info(synth_root / "DL_info.csv")
    total = {r.file_name for r in recs if not r.noisy}
    sizes = {s: len(DeepLesionDataset(synth_root, s, masks=False)) for s in ("train", "val", "test", "all")}
    assert sizes["train"] + sizes["val"] + sizes["test"] == sizes["all"] == len(total)
    assert sizes["val"] > 0 and sizes["test"] > 0
    ds_all = DeepLesionDataset(synth_root, "all", masks=False, drop_noisy=False)
    assert len(ds_all.lesions) == len(recs)
    kept = DeepLesionDataset(synth_root, "all", masks=False)
    assert all(not r.noisy for r in kept.lesions)


def test_masks_off_and_absent(synth_root):
    _, t = DeepLesionDataset(synth_root, "all", masks=False, mask_dir="masks_true")[0]
    assert "masks" not in t
    _, t = DeepLesionDataset(synth_root, "all", masks=True)[0]  # no GrabCut masks written
    assert "masks" not in t


def test_resize_scales_everything(synth_root):
    full = DeepLesionDataset(synth_root, "all", slices=3, mask_dir="masks_true")
    small = DeepLesionDataset(synth_root, "all", slices=3, size=64, mask_dir="masks_true")
    (_, t), (img2, t2) = full[1], small[1]
    assert img2.shape == (1, 3, 64, 64) and t2["masks"].shape[1:] == (64, 64)
    np.testing.assert_allclose(t2["boxes"].numpy(), (t["boxes"].numpy() + 0.5) / 2 - 0.5, atol=1e-5)
    np.testing.assert_allclose(t2["recist"].numpy(), (t["recist"].numpy() + 0.5) / 2 - 0.5, atol=1e-5)
    np.testing.assert_allclose(t2["spacing"][:2].numpy(), t["spacing"][:2].numpy() * 2, rtol=1e-6)
    assert float(t2["thickness"]) == float(t["thickness"])
    # the mask's box follows the image's
    for m, m2 in zip(t["masks"], t2["masks"]):
        ys, xs = torch.nonzero(m, as_tuple=True)
        ys2, xs2 = torch.nonzero(m2, as_tuple=True)
        assert abs((xs.float().mean() + 0.5) / 2 - 0.5 - xs2.float().mean()) < 1.0
        assert abs((ys.float().mean() + 0.5) / 2 - 0.5 - ys2.float().mean()) < 1.0


def test_collate(synth_root):
    ds = DeepLesionDataset(synth_root, "all", slices=7, masks=False)
    images, targets = collate([ds[0], ds[1], ds[2]])
    assert images.shape == (3, 1, 7, 128, 128) and len(targets) == 3
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    images, targets = next(iter(loader))
    assert images.shape == (2, 1, 7, 128, 128) and targets[0]["image_id"] == ds.records[0][0].image_id


def test_cache_equals_png(synth_copy):
    png = DeepLesionDataset(synth_copy, "all", slices=7, cache=False, mask_dir="masks_true")
    with pytest.raises(A3DError, match="cache"):
        DeepLesionDataset(synth_copy, "all", cache=True)
    written, skipped = build_cache(synth_copy, progress=False)
    assert written > 0 and skipped == 0
    assert build_cache(synth_copy, progress=False) == (0, written)  # resumable
    cached = DeepLesionDataset(synth_copy, "all", slices=7, cache=True, mask_dir="masks_true")
    auto = DeepLesionDataset(synth_copy, "all", slices=7, mask_dir="masks_true")
    assert auto.source.kind == "auto"
    for i in range(len(png)):
        (a, ta), (b, tb), (c, _) = png[i], cached[i], auto[i]
        assert torch.equal(a, b) and torch.equal(a, c)
        assert torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["masks"], tb["masks"])
    assert not list((synth_copy / "cache").glob(".*tmp*"))
    # picklable for spawn-started DataLoader workers, without copying the memory-mapped volumes
    import pickle

    blob = pickle.dumps(cached)
    assert len(blob) < 200_000
    assert torch.equal(pickle.loads(blob)[0][0], cached[0][0])


def test_stale_mask_file(synth_copy):
    from a3d.data._npz import save_npz

    ds = DeepLesionDataset(synth_copy, "all", mask_dir="masks_true")
    iid = ds.records[0][0].image_id
    save_npz(synth_copy / "masks_true" / f"{iid}.npz", masks=np.zeros((5, 128, 128), np.uint8),
             boxes=np.zeros((5, 4), np.float32))
    with pytest.raises(A3DError, match=iid):
        ds[0]


def test_cache_resumes_and_rejects_mismatch(synth_copy):
    import json

    from a3d.data.cache import cache_series

    recs = read_dl_info(synth_copy / "DL_info.csv")
    sd = recs[0].series_dir
    assert cache_series(synth_copy, sd) is True
    assert cache_series(synth_copy, sd) is False  # complete: skipped
    # an interrupted run (volume without index) is redone
    (synth_copy / "cache" / f"{sd}.json").unlink()
    assert cache_series(synth_copy, sd) is True
    # an index that does not match its volume is reported, naming the file
    idx = json.loads((synth_copy / "cache" / f"{sd}.json").read_text())
    idx["shape"][0] += 1
    (synth_copy / "cache" / f"{sd}.json").write_text(json.dumps(idx))
    ds = DeepLesionDataset(synth_copy, "all", cache=True, masks=False)
    i = next(k for k, g in enumerate(ds.records) if g[0].series_dir == sd)
    with pytest.raises(A3DError, match=f"{sd}.npy"):
        ds[i]
    assert cache_series(synth_copy, sd) is True  # rebuilt
    assert torch.equal(DeepLesionDataset(synth_copy, "all", cache=True, masks=False)[i][0],
                       DeepLesionDataset(synth_copy, "all", cache=False, masks=False)[i][0])


def test_context_spacing_reaches_the_slices(synth_root):
    """The outer context slices are the stored slices ``context_spacing_mm`` away from the key slice
    (hand-computed positions on a series whose interval divides the spacing).

    Fails if DeepLesionDataset does not hand ``context_spacing_mm`` to load_stack (2 mm always)."""
    from a3d.data.slices import PngSource, hu_to_input

    ds = DeepLesionDataset(synth_root, "all", slices=3, masks=False, context_spacing_mm=4.0)
    i = next(i for i, g in enumerate(ds.records) if g[0].slice_interval in (1.0, 2.0))
    r = ds.records[i][0]
    step = int(4.0 / r.slice_interval)  # stored slices per 4 mm
    src = PngSource(synth_root)
    img, _ = ds[i]
    for d, n in enumerate((r.key_slice - step, r.key_slice, r.key_slice + step)):
        np.testing.assert_array_equal(img[0, d].numpy(), hu_to_input(src.read(r.series_dir, n)[None])[0])
    with pytest.raises(A3DError, match="context_spacing_mm"):
        DeepLesionDataset(synth_root, "all", masks=False, context_spacing_mm=0)
