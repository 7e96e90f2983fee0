"""Neighbour interpolation (hand-computed blends), intensity mapping, bad slice files."""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pytest

from a3d.data import DeepLesionDataset, hu_to_input
from a3d.data.dl_info import format_dl_info_row, write_dl_info
from a3d.data.slices import interpolation_plan, read_png_hu, write_png_hu
from a3d.errors import A3DError

KEY = 20


def _norm(hu):
    return (np.clip(hu, -1024, 2050) + 1024) * 255.0 / 3074.0 - 50.0


def make_series(root, interval, first=1, last=40, key=KEY, value=lambda n: n * n, size=8):
    """One series whose slice n is the constant HU value(n); one lesion row on ``key``."""
    sd = root / "Images_png" / "000001_01_01"
    for n in range(first, last + 1):
        write_png_hu(sd / f"{n:03d}.png", np.full((size, size), value(n), dtype=np.int32))
    row = format_dl_info_row(
        patient=1, study=1, series=1, key_slice=key, recist_1based=[2, 4, 6, 4, 4, 2, 4, 6],
        box_1based=[2, 2, 6, 6], diameters_px=[4, 4], location=[0.5, 0.5, 0.5], lesion_type=-1, noisy=False,
        slice_range=[first, last], spacing=[0.8, 0.8, interval], image_size=[size, size], window=[-175, 275],
        gender="M", age=50, split=1)
    write_dl_info(root / "DL_info.csv", [row])
    return sd


def blend(p):
    """Hand formula for value(n) = n^2 between floor(p) and floor(p)+1: lo^2 + w * (2 lo + 1)."""
    lo = math.floor(p + 1e-9)
    w = p - lo
    return lo * lo + w * (2 * lo + 1)


# D = 3, computed by hand: positions key + j * 2 / interval
HAND_D3 = {
    0.8: [17**2 + 0.5 * 35, 400, 22**2 + 0.5 * 45],  # 17.5, 20, 22.5
    1.0: [324, 400, 484],  # 18, 20, 22
    1.25: [324 + 0.4 * 37, 400, 441 + 0.6 * 43],  # 18.4, 20, 21.6
    2.5: [361 + 0.2 * 39, 400, 400 + 0.8 * 41],  # 19.2, 20, 20.8
    5.0: [361 + 0.6 * 39, 400, 400 + 0.4 * 41],  # 19.6, 20, 20.4
}
POS_D7 = {
    0.8: [12.5, 15, 17.5, 20, 22.5, 25, 27.5],
    1.0: [14, 16, 18, 20, 22, 24, 26],
    1.25: [15.2, 16.8, 18.4, 20, 21.6, 23.2, 24.8],
    2.5: [17.6, 18.4, 19.2, 20, 20.8, 21.6, 22.4],
    5.0: [18.8, 19.2, 19.6, 20, 20.4, 20.8, 21.2],
}


@pytest.mark.parametrize("interval", sorted(HAND_D3))
@pytest.mark.parametrize("depth", [3, 7])
def test_interpolation_blends(tmp_path, interval, depth):
    make_series(tmp_path, interval)
    ds = DeepLesionDataset(tmp_path, "all", slices=depth, masks=False, cache=False)
    img, target = ds[0]
    assert img.shape == (1, depth, 8, 8) and img.dtype.is_floating_point
    expected_hu = HAND_D3[interval] if depth == 3 else [blend(p) for p in POS_D7[interval]]
    got = img[0, :, 3, 3].numpy()
    np.testing.assert_allclose(got, _norm(np.array(expected_hu)), atol=1e-3)
    assert float(target["thickness"]) == pytest.approx(interval)
    # the whole slice is constant
    assert float(img[0].amax(dim=(1, 2)).sub(img[0].amin(dim=(1, 2))).abs().max()) < 1e-4


def test_d7_five_mm_weights_differ_per_offset():
    # authors' defect: reusing the first offset's weights; here every offset has its own
    plan = interpolation_plan(20, 5.0, 7, 1, 40)
    assert [round(w, 6) for _, _, w in plan] == [0.8, 0.2, 0.6, 0.0, 0.4, 0.8, 0.2]
    assert [lo for lo, _, _ in plan] == [18, 19, 19, 20, 20, 20, 21]


def test_clamp_to_slice_range(tmp_path):
    make_series(tmp_path, 0.8, first=30, last=40, key=38)
    img, _ = DeepLesionDataset(tmp_path, "all", slices=7, masks=False, cache=False)[0]
    # positions 30.5, 33, 35.5, 38, 40.5 -> 40, 43 -> 40, 45.5 -> 40
    exp = [blend(30.5), 33 * 33, blend(35.5), 38 * 38, 1600, 1600, 1600]
    np.testing.assert_allclose(img[0, :, 0, 0].numpy(), _norm(np.array(exp)), atol=1e-3)


def test_missing_neighbour_takes_the_nearest_slice_towards_the_key(tmp_path, caplog):
    """The authors' get_slice_name: a missing file is replaced by the nearest stored slice on the way
    to the key (022 -> 021; with 023 and 024 gone, 024 -> 022).
    Fails if a gap falls back to the key slice itself."""
    sd = make_series(tmp_path, 1.0)
    (sd / "022.png").unlink()
    with caplog.at_level(logging.WARNING, logger="a3d.data.slices"):
        img, _ = DeepLesionDataset(tmp_path, "all", slices=3, masks=False, cache=False)[0]
    np.testing.assert_allclose(img[0, :, 0, 0].numpy(), _norm(np.array([324, 400, 441])), atol=1e-3)
    assert "022.png" in caplog.text
    sd = make_series(tmp_path / "b", 1.0)
    for n in (23, 24):
        (sd / f"{n:03d}.png").unlink()
    img, _ = DeepLesionDataset(tmp_path / "b", "all", slices=7, masks=False, cache=False)[0]
    # positions 14 .. 26 step 2: 22 present, 24 -> 22, 26 present
    np.testing.assert_allclose(img[0, :, 0, 0].numpy(), _norm(np.array([n * n for n in (14, 16, 18, 20, 22, 22, 26)])),
                               atol=1e-3)


def test_normalisation_end_points():
    hu = np.array([-3000, -1024, 0, 2050, 4000, 513], dtype=np.float32)
    out = hu_to_input(hu)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:5], [-50, -50, 1024 * 255 / 3074 - 50, 205, 205], atol=1e-4)
    np.testing.assert_allclose(out[5], (513 + 1024) * 255 / 3074 - 50, atol=1e-4)


def test_png_round_trip(tmp_path):
    hu = np.array([[-32768, -1024], [0, 32767]], dtype=np.int32)
    write_png_hu(tmp_path / "a.png", hu)
    raw = cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw[0, 1] == 32768 - 1024
    np.testing.assert_array_equal(read_png_hu(tmp_path / "a.png"), hu)


def _key_png(root):
    return root / "Images_png" / "000001_01_01" / f"{KEY:03d}.png"


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "8bit", "not_png", "missing"])
def test_bad_key_slice(tmp_path, damage):
    make_series(tmp_path, 2.5)
    p = _key_png(tmp_path)
    data = p.read_bytes()
    if damage == "truncated":
        p.write_bytes(data[: len(data) // 2])
    elif damage == "corrupt":
        p.write_bytes(data[:40] + bytes(len(data) - 52) + data[-12:])
    elif damage == "8bit":
        cv2.imwrite(str(p), np.zeros((8, 8), np.uint8))
    elif damage == "not_png":
        p.write_bytes(b"hello")
    else:
        p.unlink()
    ds = DeepLesionDataset(tmp_path, "all", slices=3, masks=False, cache=False)
    with pytest.raises(A3DError) as e:
        ds[0]
    msg = str(e.value)
    assert str(p) in msg and "\n" not in msg
    if damage == "8bit":
        assert "16-bit" in msg


def test_bad_neighbour_is_an_error(tmp_path):
    sd = make_series(tmp_path, 1.0)
    p = sd / "018.png"
    p.write_bytes(p.read_bytes()[:30])
    with pytest.raises(A3DError, match="018.png"):
        DeepLesionDataset(tmp_path, "all", slices=3, masks=False, cache=False)[0]


def test_missing_series_folder(tmp_path):
    sd = make_series(tmp_path, 1.0)
    for f in sd.iterdir():
        f.unlink()
    sd.rmdir()
    with pytest.raises(A3DError, match="series folder not found") as e:
        DeepLesionDataset(tmp_path, "all", slices=3, masks=False, cache=False)[0]
    assert "000001_01_01" in str(e.value)
