"""The authors' input geometry (fit in size x size keeping the aspect ratio, pad to 32) and its
round trip: dataset targets in, predictions back in the original pixels, on a non-square slice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a3d.data import DeepLesionDataset, collate
from a3d.data.dl_info import format_dl_info_row, write_dl_info
from a3d.data.resize import FitPad
from a3d.data.slices import write_png_hu

H, W = 40, 64  # the slice: wider than tall
BOX = [20.0, 10.0, 39.0, 19.0]  # 0-based x1 y1 x2 y2 of the bright block


@pytest.mark.parametrize("hw, size, resized, padded", [
    ((40, 64), 32, (20, 32), (32, 32)),
    ((512, 640), 512, (410, 512), (416, 512)),  # mmcv: int(512 * 0.8 + 0.5) = 410 -> 416
    ((600, 300), 512, (512, 256), (512, 256)),
    ((256, 256), 512, (512, 512), (512, 512)),  # small slices are enlarged, as mmcv's imrescale
    ((512, 512), 512, (512, 512), (512, 512)),
    ((100, 70), (512, 256), (366, 256), (384, 256)),  # s = min(512 / 100, 256 / 70): short side 256
])
def test_fit_and_pad_sizes_by_hand(hw, size, resized, padded):
    """mmcv.imrescale: s = min(long_max / long side, short_max / short side), sides int(x s + 0.5);
    then padding to multiples of 32. Fails if slices are stretched to size x size."""
    g = FitPad.create(*hw, size)
    assert (g.resized, g.padded) == (resized, padded)


def _series(root):
    sd = root / "Images_png" / "000001_01_01"
    img = np.full((H, W), -1000, np.int32)
    img[10:20, 20:40] = 500
    for n in range(1, 6):
        write_png_hu(sd / f"{n:03d}.png", img)
    b1 = [v + 1 for v in BOX]
    row = format_dl_info_row(
        patient=1, study=1, series=1, key_slice=3, recist_1based=[b1[0], 15, b1[2], 15, 30, b1[1], 30, b1[3]],
        box_1based=b1, diameters_px=[19, 9], location=[0.5, 0.5, 0.5], lesion_type=2, noisy=False,
        slice_range=[1, 5], spacing=[0.7, 0.7, 2.0], image_size=[H, W], window=[-175, 275], gender="F", age=40,
        split=1)
    write_dl_info(root / "DL_info.csv", [row])


def test_non_square_slice_in_the_dataset(tmp_path):
    """40 x 64 into 32: scale 0.5 -> 20 x 32 at the top left, rows 20..31 air; boxes by the
    pixel-centre mapping x' = (x + 0.5) / 2 - 0.5; spacing doubles.
    Fails if the slice is stretched, centred, or padded with something other than air."""
    _series(tmp_path)
    img, t = DeepLesionDataset(tmp_path, "all", slices=3, size=32, masks=False, cache=False)[0]
    assert img.shape == (1, 3, 32, 32)
    assert t["image_size"].tolist() == [20, 32] and t["original_size"].tolist() == [H, W]
    assert torch.all(img[0, :, 20:, :] == -50.0)
    want = [(v + 0.5) / 2 - 0.5 for v in BOX]
    np.testing.assert_allclose(t["boxes"][0].numpy(), want, atol=1e-5)
    np.testing.assert_allclose(t["spacing"][:2].numpy(), [1.4, 1.4], atol=1e-6)
    bright = img[0, 1] > 0  # 500 HU -> 76, -1000 HU -> -48
    ys, xs = np.nonzero(bright.numpy())
    assert (xs.min(), ys.min(), xs.max(), ys.max()) == (10, 5, 19, 9)


def test_collate_pads_to_the_largest():
    """Different input sizes batch by padding with air; each target keeps its own extent."""
    a = torch.zeros(1, 3, 32, 64)
    b = torch.ones(1, 3, 64, 32)
    images, targets = collate([(a, {"i": 0}), (b, {"i": 1})])
    assert images.shape == (2, 1, 3, 64, 64)
    assert torch.all(images[0, :, :, 32:] == -50.0) and torch.all(images[1, :, :, :, 32:] == -50.0)
    assert torch.all(images[1, :, :, :, :32] == 1.0) and [t["i"] for t in targets] == [0, 1]


def test_prediction_boxes_come_back_in_the_original_pixels(tmp_path, synth_root):
    """predict_dataset runs the detector on the padded input with each image's extent and maps its
    boxes back by the inverse of the dataset's mapping, x = (x' + 0.5) * 2 - 0.5 (masks: cropped to
    20 x 32 and resized to 40 x 64). Fails if the padding is kept in the mapping (boxes scaled by
    64 / 32 and 40 / 32 instead of by 2) or the detector is not told the extent."""
    from a3d.engine.evaluate import predict_dataset
    from a3d.models import build_detector
    from fixtures_train import small_config

    _series(tmp_path)
    ds = DeepLesionDataset(tmp_path, "all", slices=3, size=32, masks=False, cache=False)
    torch.manual_seed(0)
    model = build_detector(small_config(synth_root).model).eval()
    preds = predict_dataset(model, ds, batch_size=1, keep_masks=True)
    images, targets = collate([ds[0]])
    with torch.no_grad():
        raw = model(images, thickness=[2.0], image_sizes=[(20, 32)])[0]
    assert len(raw["boxes"]) > 0
    assert float(raw["boxes"][:, 3].max()) <= 20  # inside the extent, not the padding
    np.testing.assert_allclose(preds[0].boxes, (raw["boxes"].numpy() + 0.5) * 2 - 0.5, atol=1e-4)
    np.testing.assert_allclose(preds[0].scores, raw["scores"].numpy(), atol=1e-6)
    assert preds[0].masks.shape == (len(raw["boxes"]), H, W)
    np.testing.assert_array_equal(preds[0].masks[:, ::2, ::2], raw["masks"][:, :20, :32].numpy())
    # the ground truth makes the same round trip exactly
    np.testing.assert_allclose(FitPad.create(H, W, 32).to_original(targets[0]["boxes"].numpy()), [BOX], atol=1e-5)


def test_shrinking_averages_areas():
    """Shrinking uses pixel areas: columns 100, 0, 0, 0 repeated, 128 -> 32 px, give 25 everywhere
    (bilinear, mmcv's, would sample pixels 4i+1 and 4i+2 only: 0, aliasing).
    Fails if the resize shrinks with INTER_LINEAR."""
    row = np.tile(np.array([100.0, 0.0, 0.0, 0.0], np.float32), 32)
    img = np.broadcast_to(row, (1, 128, 128)).copy()
    out = FitPad.create(128, 128, 32).image(img)
    np.testing.assert_allclose(out, 25.0, atol=1e-4)
