"""The context rule chosen by the operator, against an independent re-implementation of the authors'.

``authors_stack`` re-states the authors' ``load_multislice_img_16bit_png`` (DeepLesionDataset_align.py
for AlignShift, DeepLesionDataset_a3d.py for the others) with their ``get_slice_name`` (a missing slice
walks towards the key), written loop by loop as they are, on a dict of slice values, with one
deliberate change: the interpolation weights are computed per offset (their code reuses the first
offset's, a defect for D = 7; ``authors_weights=True`` keeps it to show the difference).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from a3d.data import DeepLesionDataset
from a3d.data.dl_info import format_dl_info_row, read_dl_info, write_dl_info
from a3d.data.slices import context_plan, context_thickness, write_png_hu

KEY = 20
INTERVALS = (0.6, 1.0, 1.25, 2.0, 2.5, 5.0)


def _norm(hu):
    return (np.clip(np.asarray(hu, np.float64), -1024, 2050) + 1024) * 255.0 / 3074.0 - 50.0


def value(n: int) -> float:
    return float(n * n - 300)


def make_series(root, interval, first=1, last=40, key=KEY, gaps=()):
    """Slice n holds the constant HU value(n) (8 x 8); one lesion row on ``key``."""
    sd = root / "Images_png" / "000001_01_01"
    for n in range(first, last + 1):
        if n not in gaps:
            write_png_hu(sd / f"{n:03d}.png", np.full((8, 8), value(n), dtype=np.int32))
    row = format_dl_info_row(
        patient=1, study=1, series=1, key_slice=key, recist_1based=[2, 4, 6, 4, 4, 2, 4, 6],
        box_1based=[2, 2, 6, 6], diameters_px=[4, 4], location=[0.5, 0.5, 0.5], lesion_type=-1, noisy=False,
        slice_range=[first, last], spacing=[0.8, 0.8, interval], image_size=[8, 8], window=[-175, 275],
        gender="M", age=50, split=1)
    write_dl_info(root / "DL_info.csv", [row])
    return {n: value(n) for n in range(first, last + 1) if n not in gaps}


def authors_stack(stored: dict[int, float], key: int, interval: float, d: int, align: bool,
                  norm: float = 2.0, authors_weights: bool = False) -> list[float]:
    """The authors' D input values (HU) of key slice ``key``; see the module docstring."""

    def load(delta) -> float:  # get_slice_name: walk towards the key until a file exists
        delta = int(delta)
        while key + delta not in stored and delta != 0:
            delta -= int(np.sign(delta))
        return stored[key + delta]

    if norm == 0 or np.isnan(interval) or interval < 0:
        return [stored[key]] * d
    ims = [stored[key]]
    rel = float(norm) / interval
    if align and rel <= 1.0:  # thick series: the stored neighbours, AlignShift aligns
        for p in range((d - 1) // 2):
            ims = [load(-(p + 1))] + ims + [load(p + 1)]
    elif rel - np.floor(rel) == 0:  # a whole number of slices apart
        for p in range((d - 1) // 2):
            ims = [load(-rel * (p + 1))] + ims + [load(rel * (p + 1))]
    else:
        for p in range((d - 1) // 2):
            at = rel * (p + 1)
            frac = (rel if authors_weights else at) - np.floor(rel if authors_weights else at)
            a, b = frac, 1 - frac  # a on the far slice (ceil), b on the near one (floor)
            if math.isclose(at, round(at), abs_tol=1e-9) and not authors_weights:
                prev, nxt = load(-round(at)), load(round(at))
            else:
                prev = a * load(-np.ceil(at)) + b * load(-np.floor(at))
                nxt = a * load(np.ceil(at)) + b * load(np.floor(at))
            ims = [prev] + ims + [nxt]
    return ims


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("depth", [3, 7])
@pytest.mark.parametrize("operator", ["alignshift", "a3d"])
def test_dataset_follows_the_authors_rule(tmp_path, interval, depth, operator):
    """AlignShift: stored neighbours from 2 mm up, interpolated below; other operators: always
    interpolated to 2 mm. Also at the series end (clamped) and across a gap.
    Fails if the dataset ignores ``operator`` (AlignShift interpolated, aligning twice) or clamps
    differently from the authors."""
    for sub, kw in (("mid", {}), ("end", {"key": 38}), ("gap", {"gaps": (21, 22, 17)})):
        stored = make_series(tmp_path / sub, interval, **kw)
        ds = DeepLesionDataset(tmp_path / sub, "all", slices=depth, masks=False, cache=False, operator=operator)
        img, target = ds[0]
        want = authors_stack(stored, kw.get("key", KEY), interval, depth, align=operator == "alignshift")
        np.testing.assert_allclose(img[0, :, 3, 3].numpy(), _norm(want), atol=2e-3, err_msg=f"{sub} {interval}")
        assert float(target["thickness"]) == pytest.approx(interval)  # the stored interval, as the authors


def test_alignshift_thick_series_uses_stored_neighbours():
    """Hand cases: 5 mm, D = 7 -> slices key-3..key+3 (the authors); a3d -> positions +-0.4 k.
    Fails if 5 mm AlignShift inputs are interpolated to 2 mm (0.8 mm of context reach instead of 2)."""
    assert context_plan(20, 5.0, 7, 1, 40, operator="alignshift") == [(n, n, 0.0) for n in range(17, 24)]
    assert context_plan(20, 2.0, 3, 1, 40, operator="alignshift") == [(19, 19, 0.0), (20, 20, 0.0), (21, 21, 0.0)]
    assert context_plan(39, 2.5, 7, 1, 40, operator="alignshift") == [(n, n, 0.0) for n in (36, 37, 38, 39, 40, 40, 40)]
    lo, hi, w = context_plan(20, 5.0, 3, 1, 40, operator="a3d")[0]
    assert (lo, hi) == (19, 20) and w == pytest.approx(0.6)
    # thinner than 2 mm: AlignShift interpolates like everyone else
    assert context_plan(20, 1.25, 7, 1, 40, operator="alignshift") == context_plan(20, 1.25, 7, 1, 40, operator="a3d")


def test_authors_d7_weights_defect_is_not_copied():
    """Their code reuses the first offset's weights: at 1.25 mm, D = 7, offset 2 is 3.2 slices away
    but blended 0.6 / 0.4 like offset 1 (1.6 away). Fails if our plan copies that."""
    stored = {n: value(n) for n in range(1, 41)}
    fixed = authors_stack(stored, KEY, 1.25, 7, align=False)
    literal = authors_stack(stored, KEY, 1.25, 7, align=False, authors_weights=True)
    assert fixed[3] == literal[3] and fixed[2] == literal[2] and fixed[1] != pytest.approx(literal[1])
    plan = context_plan(KEY, 1.25, 7, 1, 40)
    got = [(1 - w) * value(lo) + w * value(hi) for lo, hi, w in plan]
    np.testing.assert_allclose(got, fixed, atol=1e-6)


@pytest.mark.parametrize("text", ["nan", ""])
def test_unknown_interval_repeats_the_key_slice(tmp_path, caplog, text):
    """A NaN or blank slice interval: the whole DL_info.csv still loads, the row is logged by line,
    every operator gets the key slice D times and AlignShift a finite thickness.
    Fails if the reader rejects the file or the stack interpolates around a NaN."""
    make_series(tmp_path, 1.0)
    csv = tmp_path / "DL_info.csv"
    csv.write_text(csv.read_text().replace('"0.8, 0.8, 1"', f'"0.8, 0.8, {text}"'))
    with caplog.at_level(logging.WARNING, logger="a3d.data.dl_info"):
        recs = read_dl_info(csv)
    assert math.isnan(recs[0].slice_interval)
    assert "line(s) 2" in caplog.text and "Spacing_mm_px_" in caplog.text
    for op in ("alignshift", "a3d"):
        img, t = DeepLesionDataset(tmp_path, "all", slices=7, masks=False, cache=False, operator=op)[0]
        np.testing.assert_allclose(img[0, :, 0, 0].numpy(), _norm([value(KEY)] * 7), atol=1e-4)
        assert float(t["thickness"]) == 2.0
    assert context_thickness(float("nan")) == 2.0 and context_thickness(5.0) == 5.0


@pytest.mark.parametrize("interval", [1.25, 5.0])
def test_predict_builds_the_same_context(interval):
    """``a3d predict``'s ContextBuilder uses the dataset's rule for the model's operator: on a scan of
    constant slices -500 + 100 z, AlignShift at 5 mm reads slices k-2..k+2 as stored; at 1.25 mm and
    for other operators, positions k + j * 2 / interval. Fails if predict interpolates AlignShift
    inputs (or the dataset and predict disagree)."""
    from a3d import predict as P
    from a3d.config import Config, DataConfig, ModelConfig
    from a3d.data import scans as S
    from test_predict_support import make_image

    hu = np.stack([np.full((16, 16), v, np.float32) for v in np.arange(12) * 100.0 - 500])
    img = make_image(hu, (1, 1, interval), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    scan = S.Scan(hu=hu, image=img, original=img, source="ramp", kind="nifti", name="ramp")
    for op in ("alignshift", "a3d"):
        x = P.ContextBuilder(scan, Config(model=ModelConfig(operator=op, slices=5), data=DataConfig(size=16))).build(6)
        stored = {n: float(hu[n, 0, 0]) for n in range(12)}
        want = authors_stack(stored, 6, interval, 5, align=op == "alignshift")
        np.testing.assert_allclose(x[:, 8, 8], _norm(want), atol=1e-3, err_msg=op)
        if interval == 5.0:  # by hand: slices 4..8 as stored; positions 6 + 0.4 j
            hand = [-100, 0, 100, 200, 300] if op == "alignshift" else [20, 60, 100, 140, 180]
            np.testing.assert_allclose(x[:, 8, 8], _norm(hand), atol=1e-3)
