"""One synthetic series: layout, lesions, vessels, the 16-bit PNG slices, true key-slice masks and CSV rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from a3d.data._npz import save_npz
from a3d.data.dl_info import format_dl_info_row
from a3d.data.recist import padded_box, recist_from_mask
from a3d.data.slices import write_png_hu
from a3d.data.synth.anatomy import _WINDOWS, _Layout, _layout, _paint, _smooth_field
from a3d.data.synth.lesions import _blob_sections, _place_lesions, _place_tubes


def _series(out, pid, study, series_id, split, gender, age, rng, S) -> list:
    """Write one series (PNG slices, true masks); its DL_info rows, one per lesion."""
    lay = _layout(rng, S)
    lesions = _place_lesions(lay, rng)
    tubes = _place_tubes(lay, lesions, rng)
    series_dir = f"{pid:06d}_{study:02d}_{series_id:02d}"
    key_masks = _write_slices(out / "Images_png" / series_dir, lay, lesions, tubes, rng)
    meta = dict(patient=pid, study=study, series=series_id, gender=gender, age=age, split=split)
    return _key_rows(out / "masks_true", series_dir, lay, lesions, key_masks, meta, rng)


def render_slice(lay: _Layout, lesions: list, tubes: list, n: int, noise_sd: float, rng,
                 masks: bool = False) -> tuple[np.ndarray, list[np.ndarray] | None, np.ndarray | None]:
    """Slice ``n`` of a series: (S, S) float32 HU (anatomy, texture, vessels, lesions, noise) and,
    with ``masks``, each lesion's mask (lesion order) and the vessels' mask on it (else None, None).
    Draws the same random numbers either way."""
    S, zc = lay.S, lay.zc
    z = n * lay.interval
    img = lay.slice_image(z)
    img += _smooth_field(S, rng, 6.0) * (img > -500)
    vessels = np.zeros((S, S), dtype=bool) if masks else None
    for t in tubes:
        _paint(img, t.cx + t.dx * (z - zc), t.cy + t.dy * (z - zc), t.r, t.r * 0.95, 0.0, t.hu, vessels)
    lesion_masks = [] if masks else None
    for _key, blob, _organ in lesions:
        m = np.zeros((S, S), dtype=bool) if masks else None
        for sx, sy, a, b, ang in _blob_sections(blob, z):
            _paint(img, sx, sy, a, b, ang, blob.hu, m)
        if masks:
            lesion_masks.append(m)
    img += rng.normal(0.0, noise_sd, (S, S)).astype(np.float32)
    return img, lesion_masks, vessels


def _write_slices(folder: Path, lay: _Layout, lesions: list, tubes: list, rng) -> dict[int, list[np.ndarray]]:
    """Every slice of the stored range as a PNG. Returns the true lesion masks of each key slice,
    in lesion order."""
    noise_sd = float(rng.uniform(8, 18))
    key_masks: dict[int, list[np.ndarray]] = {k: [] for k in lay.keys}
    for n in range(lay.srange[0], lay.srange[1] + 1):
        img, masks, _ = render_slice(lay, lesions, tubes, n, noise_sd, rng, masks=n in key_masks)
        if n in key_masks:
            key_masks[n] = [m for (key, _b, _o), m in zip(lesions, masks) if key == n]
        write_png_hu(folder / f"{n:03d}.png", np.round(img).astype(np.int32))
    return key_masks


def _key_rows(mask_dir: Path, series_dir: str, lay: _Layout, lesions: list, key_masks: dict, meta: dict,
              rng) -> list:
    """DL_info rows of each key slice's lesions (RECIST from the true mask; ~4 % flagged noisy) and
    the true masks file of each key slice."""
    S, rows = lay.S, []
    for key in lay.keys:
        ms = []
        boxes = []
        for (k, blob, organ), m in zip([x for x in lesions if x[0] == key], key_masks[key]):
            if not m.any():  # cannot happen (centre on the key slice); keep the CSV consistent anyway
                continue
            recist, diam = recist_from_mask(m)
            recist = np.round(recist, 2)
            box = padded_box(m)
            noisy = bool(rng.random() < 0.04)
            loc = (round(blob.cx / S, 4), round(blob.cy / S, 4),
                   round(min(max(lay.z0 + (key - lay.srange[0]) * lay.interval / 1500.0, 0.0), 1.0), 4))
            rows.append(format_dl_info_row(
                **meta, key_slice=key, recist_1based=recist + 1, box_1based=box + 1,
                diameters_px=np.round(diam, 2), location=loc,
                lesion_type=organ.lesion_type if meta["split"] != 1 else -1, noisy=noisy, slice_range=lay.srange,
                spacing=(round(lay.px, 6), round(lay.px, 6), lay.interval), image_size=(S, S),
                window=_WINDOWS[organ.window]))
            ms.append(m.astype(np.uint8))
            boxes.append(box)
        if ms:
            save_npz(mask_dir / f"{series_dir}_{key:03d}.npz", masks=np.stack(ms),
                     boxes=np.stack(boxes).astype(np.float32))
    return rows
