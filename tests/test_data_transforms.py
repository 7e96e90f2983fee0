"""Augmentation: geometry checked against the image content, drops, determinism."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from a3d.data import DeepLesionDataset
from a3d.data.transforms import TrainTransform, hflip


def disk_sample(cx=40.0, cy=30.0, r=9.0, size=96, depth=3, margin=5.0):
    """A bright disk on every slice (-50 background), its mask, RECIST axes and a padded box."""
    yy, xx = np.mgrid[0:size, 0:size]
    m = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r * r)
    img = np.full((1, depth, size, size), -50.0, np.float32)
    img[:, :, m] = 150.0
    ys, xs = np.nonzero(m)
    box = [xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin]
    target = {
        "boxes": torch.tensor([box], dtype=torch.float32),
        "labels": torch.ones(1, dtype=torch.int64),
        "masks": torch.from_numpy(m.astype(np.uint8))[None],
        "recist": torch.tensor([[cx - r, cy, cx + r, cy, cx, cy - r, cx, cy + r]], dtype=torch.float32),
        "lesion_type": torch.tensor([4]),
        "diameters_mm": torch.tensor([10.0]),
        "spacing": torch.tensor([0.8, 0.8, 2.0]),
        "thickness": torch.tensor(2.0),
        "image_id": "x",
    }
    return torch.from_numpy(img), target


def content_box(img):
    ys, xs = torch.nonzero(img[0, 1] > 50, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()


@pytest.mark.parametrize("with_masks", [True, False])
def test_boxes_follow_the_lesion(with_masks):
    img, t = disk_sample()
    if not with_masks:
        del t["masks"]
    aug = TrainTransform(p=1.0)
    for seed in range(25):
        g = torch.Generator().manual_seed(seed)
        out, ot = aug(img, t, generator=g)
        assert out.shape == img.shape and ot["boxes"].shape == (1, 4)
        s = float(ot["spacing"][0] / 0.8)  # spacing grows as the image shrinks
        cb = content_box(out)
        pad = 5.0 / s
        expected = cb + torch.tensor([-pad, -pad, pad, pad])
        assert torch.allclose(ot["boxes"][0], expected, atol=2.0), (seed, ot["boxes"], expected)
        # all slices moved identically
        assert torch.equal(out[0, 0], out[0, 2])
        if with_masks:
            m = ot["masks"][0].bool()
            bright = out[0, 1] > 50
            dice = 2 * (m & bright).sum() / (m.sum() + bright.sum())
            assert dice > 0.9
        # RECIST centre stays on the lesion centre
        c = ot["recist"][0].reshape(4, 2).mean(0)
        assert torch.allclose(c, (cb[:2] + cb[2:]) / 2, atol=1.5)


def test_background_fill_and_range_of_the_bilinear_option():
    img, t = disk_sample()
    tr = TrainTransform(p=1.0, interpolation="bilinear", border="constant")
    out, _ = tr.apply(img, t, angle=15, scale=0.8, dx=0.04, dy=0.04)
    assert float(out.min()) >= -50 - 1e-4 and float(out.max()) <= 150 + 1e-4
    assert float(out[0, 0, 0, 0]) == pytest.approx(-50)


def _step_sample(values, masks=None):
    """(1, 1, 16, 16) image whose column x holds values[x]; one box in the middle."""
    img = torch.tensor(values, dtype=torch.float32).expand(16, 16).clone()[None, None]
    t = {"boxes": torch.tensor([[5.0, 5.0, 10.0, 10.0]]), "labels": torch.ones(1, dtype=torch.int64)}
    if masks is not None:
        t["masks"] = masks
    return img, t


def test_bicubic_reflect101_by_hand():
    """The authors' ShiftScaleRotate resampling (cv2 INTER_CUBIC, Keys a = -0.75; BORDER_REFLECT_101).

    Hand values: half a pixel to the right over a 0 -> 100 step, output pixel 7 samples x = 6.5
    with taps 5..8 = 0, 0, 0, 100: 100 * w(1.5) = 100 * (-0.09375) = -9.375 (bilinear: 0), pixel 8
    samples 7.5: 100 * (w(0.5) + w(1.5)) = 50. Three pixels right over a ramp 10 x: output 0..2
    sample -3..-1, mirrored without repeating the edge (reflect-101) to 3, 2, 1 -> 30, 20, 10.
    Fails if the default interpolation is bilinear or the border constant / plain reflect."""
    step, _ = _step_sample([0.0] * 8 + [100.0] * 8)
    out, _ = TrainTransform().apply(step, _step_sample([0.0] * 16)[1], angle=0.0, scale=1.0, dx=0.5 / 16, dy=0.0)
    row = out[0, 0, 8].numpy()
    assert row[7] == pytest.approx(-9.375, abs=1e-3) and row[8] == pytest.approx(50.0, abs=1e-3)
    ramp, t = _step_sample([10.0 * x for x in range(16)])
    out, _ = TrainTransform().apply(ramp, t, angle=0.0, scale=1.0, dx=3 / 16, dy=0.0)
    np.testing.assert_allclose(out[0, 0, 8, :6].numpy(), [30, 20, 10, 0, 10, 20], atol=1e-3)
    lin, _ = TrainTransform(interpolation="bilinear", border="constant").apply(step, t, 0.0, 1.0, 0.5 / 16, 0.0)
    assert float(lin[0, 0, 8, 7]) == pytest.approx(0.0, abs=1e-4)


def test_masks_nearest_and_not_reflected():
    """Masks stay 0/1 (nearest) and nothing is mirrored in from outside: a mask on the left edge
    shifted 3 px right has empty columns 0..2 (the image there is reflected).
    Fails if masks use the image's reflect-101 border or a blending interpolation."""
    m = torch.zeros(1, 16, 16, dtype=torch.uint8)
    m[0, 4:12, 0:6] = 1
    img, t = _step_sample([10.0 * x for x in range(16)], masks=m)
    t["boxes"] = torch.tensor([[0.0, 4.0, 5.0, 11.0]])
    _, ot = TrainTransform().apply(img, t, angle=0.0, scale=1.0, dx=3 / 16, dy=0.0)
    assert ot["masks"].dtype == torch.uint8
    assert int(ot["masks"][0, :, :3].sum()) == 0
    assert torch.equal(ot["masks"][0, :, 3:9], m[0, :, 0:6])
    _, ot = TrainTransform().apply(img, t, angle=13.0, scale=1.1, dx=0.1, dy=0.0)
    assert set(ot["masks"].unique().tolist()) <= {0, 1}


def test_hflip():
    img, t = disk_sample(cx=20)
    out, ot = hflip(img, t)
    assert torch.equal(out[..., 95 - 20], img[..., 20])
    cb = content_box(out)
    assert torch.allclose(ot["boxes"][0], cb + torch.tensor([-5.0, -5, 5, 5]))
    assert torch.equal(ot["masks"][0], t["masks"][0].flip(-1))


def test_lesion_pushed_out_is_dropped():
    img, t = disk_sample(cx=3, cy=48, r=3, margin=2)
    # second lesion well inside
    img2, t2 = disk_sample(cx=60, cy=48, r=8)
    img = torch.maximum(img, img2)
    for k in ("boxes", "recist", "labels", "lesion_type", "diameters_mm", "masks"):
        t[k] = torch.cat([t[k], t2[k]])
    tr = TrainTransform()
    out, ot = tr.apply(img, t, angle=0.0, scale=1.0, dx=-0.04 * 2, dy=0.0)  # move 7.7 px left
    assert ot["boxes"].shape[0] == 1 and ot["masks"].shape[0] == 1 and ot["lesion_type"].shape == (1,)
    assert float(ot["boxes"][0, 0]) > 30
    del t["masks"]
    _, ot = tr.apply(img, t, angle=0.0, scale=1.0, dx=-0.08, dy=0.0)
    assert ot["boxes"].shape[0] == 1 and ot["recist"].shape[0] == 1


def test_no_lesion_left_falls_back_to_flip_only():
    img, t = disk_sample(cx=1, cy=1, r=1.5, margin=0)
    tr = TrainTransform(flip_p=0.0, p=1.0, shift=0.3, scale=0.0, rotate=0.0, max_tries=3)
    # every draw of a large shift has a good chance to push it out; whatever happens a lesion remains
    for seed in range(10):
        out, ot = tr(img, t, generator=torch.Generator().manual_seed(seed))
        assert ot["boxes"].shape[0] == 1


def test_deterministic_under_seed(synth_root):
    ds = DeepLesionDataset(synth_root, "train", slices=3, mask_dir="masks_true")
    img, t = ds[0]
    tr = TrainTransform()
    a = tr(img, t, generator=torch.Generator().manual_seed(7))
    b = tr(img, t, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"])
    torch.manual_seed(3)
    c = tr(img, t)
    torch.manual_seed(3)
    d = tr(img, t)
    assert torch.equal(c[0], d[0])
    outs = {tuple(tr(img, t, generator=torch.Generator().manual_seed(s))[1]["boxes"].flatten().tolist())
            for s in range(6)}
    assert len(outs) > 1


def test_dataset_with_transform_keeps_masks_and_boxes_consistent(synth_root):
    ds = DeepLesionDataset(synth_root, "train", slices=3, mask_dir="masks_true", transform=TrainTransform(p=1.0))
    torch.manual_seed(0)
    for i in range(min(len(ds), 6)):
        img, t = ds[i]
        assert img.shape == (1, 3, 128, 128)
        assert t["boxes"].shape[0] == t["masks"].shape[0] == t["labels"].shape[0] >= 1
        s = float(t["spacing"][0] / ds.records[i][0].spacing[0])
        for m, b in zip(t["masks"], t["boxes"]):
            ys, xs = torch.nonzero(m, as_tuple=True)
            mb = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
            pad = 5.0 / s
            exp = mb + torch.tensor([-pad, -pad, pad, pad])
            exp[0::2] = exp[0::2].clamp(0, 127)
            exp[1::2] = exp[1::2].clamp(0, 127)
            assert torch.allclose(b, exp, atol=2.0)
