"""Writing one imported volume in the DeepLesion format: slices, true masks, DL_info rows, findings.

- Slices: ``Images_png/<series>/<n:03d>.png`` with ``n = canonical slice + 1`` (1-based, increasing
  from inferior to superior: the direction :func:`a3d.data.scans.read_deeplesion_png` assumes),
  16-bit, HU + 32768. Written: the key slices and ``ceil(context_mm / slice interval)`` slices on
  each side (default +-15 mm, as DeepLesion stores around its key slices), or every slice.
- ``masks_true/<series>_<key:03d>.npz``: each key slice's lesion cross-sections and boxes in CSV
  row order (the format of :mod:`a3d.data.masks`; ``DeepLesionDataset(mask_dir="masks_true")``).
- One DL_info row per lesion on its key slice: RECIST end points, box, diameters (1-based pixel
  coordinates as DeepLesion), normalised location, type -1 (unknown), Slice_range = the whole series,
  spacing, image size, a soft-tissue window, no gender or age.
- One LUNA16 finding per lesion: its centre in world LPS mm and its long axis in mm (at least one
  pixel) as the diameter.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np

from a3d.data._npz import save_npz
from a3d.data.dl_info import format_dl_info_row
from a3d.data.importer.lesions import Lesion
from a3d.data.importer.plan import Placement
from a3d.data.scans import Scan
from a3d.data.slices import write_png_hu

#: DICOM_windows of every imported row: soft tissue (width 450, level 50 HU), min and max
SOFT_TISSUE_WINDOW = (-175.0, 275.0)
#: slices stored on each side of a key slice unless --all-slices (DeepLesion stores about +-15 mm)
DEFAULT_CONTEXT_MM = 15.0

__all__ = ["DEFAULT_CONTEXT_MM", "SOFT_TISSUE_WINDOW", "finding", "lesion_row", "slices_to_write", "write_series"]


def slices_to_write(lesions: Sequence[Lesion], n_slices: int, slice_mm: float, context_mm: float | None) -> list[int]:
    """Canonical slices to store: all (``context_mm`` None) or each key slice +- ceil(context_mm / slice_mm)."""
    if context_mm is None:
        return list(range(n_slices))
    r = int(math.ceil(context_mm / slice_mm - 1e-9))
    keep = set()
    for les in lesions:
        keep.update(range(max(les.key - r, 0), min(les.key + r, n_slices - 1) + 1))
    return sorted(keep)


def _location(les: Lesion, shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """Normalised x, y (centre / image width, height) and z: 0 at the volume's superior end, 1 at
    its inferior end (DeepLesion's z grows toward the feet; here relative to the scanned range)."""
    z_count, h, w = shape
    x, y, z = les.centre
    return (round(x / w, 4), round(y / h, 4), round((z_count - 1 - z) / max(z_count - 1, 1), 4))


def lesion_row(les: Lesion, place: Placement, scan: Scan) -> list[str]:
    """The lesion's DL_info.csv row (18 strings)."""
    sx, sy, sz = scan.spacing
    z_count, h, w = scan.shape
    return format_dl_info_row(
        patient=place.patient, study=place.study, series=place.series, key_slice=les.key + 1,
        recist_1based=np.round(les.recist, 2) + 1, box_1based=les.box + 1, diameters_px=np.round(les.diameters_px, 2),
        location=_location(les, scan.shape), lesion_type=-1, noisy=False, slice_range=(1, z_count),
        spacing=(round(sx, 6), round(sy, 6), round(sz, 6)), image_size=(h, w), window=SOFT_TISSUE_WINDOW,
        gender="", age=None, split=place.split)


def finding(les: Lesion, scan: Scan) -> dict:
    """The lesion as a LUNA16 finding: centre (world LPS mm), diameter (mm), plus what it came from."""
    sx = scan.spacing[0]
    x, y, z = scan.physical_point(*les.centre)
    return {"coordX": round(x, 4), "coordY": round(y, 4), "coordZ": round(z, 4),
            "diameter_mm": round(max(float(les.diameters_px[0]) * sx, sx), 4),
            "label": les.value, "key_slice": les.key + 1, "volume_mm3": round(les.volume_mm3, 3)}


def write_series(root: Path, place: Placement, scan: Scan, lesions: Sequence[Lesion], slices: Sequence[int]) -> None:
    """The case's slice PNGs and its key slices' true-mask files (each written atomically)."""
    folder = root / "Images_png" / place.series_dir
    for z in slices:
        write_png_hu(folder / f"{z + 1:03d}.png", np.round(scan.hu[z]).astype(np.int32))
    by_key: dict[int, list[Lesion]] = {}
    for les in lesions:
        by_key.setdefault(les.key, []).append(les)
    for key, group in by_key.items():
        save_npz(root / "masks_true" / f"{place.series_dir}_{key + 1:03d}.npz",
                 masks=np.stack([les.mask for les in group]).astype(np.uint8),
                 boxes=np.stack([les.box for les in group]).astype(np.float32))
