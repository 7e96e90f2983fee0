"""DeepLesion PNG series folders -> :class:`Scan` (16-bit PNGs, HU = value - 32768)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from a3d.data.dl_info import read_dl_info
from a3d.data.scans.files import _listdir, scan_name
from a3d.data.scans.geometry import Scan, _sitk, finish_scan
from a3d.errors import A3DError

DL_PNG_OFFSET = 32768  # DeepLesion PNG: HU = value - 32768


def parse_spacing(text: str) -> tuple[float, float, float]:
    """'0.8,0.8,5' -> (0.8, 0.8, 5.0); x, y, z in mm."""
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) and v > 0 for v in vals):
        raise A3DError(f"--spacing {text!r}: expected three positive numbers x,y,z in mm, e.g. 0.8,0.8,5")
    return vals  # type: ignore[return-value]


def _dl_info_spacing(csv_path: Path, series_dir: str) -> tuple[float, float, float] | None:
    """Spacing of a DeepLesion series from DL_info.csv (first row of that series), or None."""
    for rec in read_dl_info(csv_path):
        if rec.series_dir == series_dir:
            return tuple(float(v) for v in rec.spacing)
    return None


def read_deeplesion_png(
    folder: str | os.PathLike, spacing: Sequence[float] | None = None, dl_info: str | os.PathLike | None = None
) -> Scan:
    """A DeepLesion series folder (``NNN.png``, 16-bit, HU = value - 32768).

    Geometry: DeepLesion slices are stored in radiological display (image top anterior, image left
    patient right), so in-plane the direction is LPS; increasing file index is taken as increasing
    z (inferior -> superior, an assumption: the PNGs do not say), origin 0.
    """
    sitk = _sitk()
    folder = Path(folder)
    pngs = [p for p in _listdir(folder) if p.suffix.lower() == ".png"]
    indexed = []
    for p in pngs:
        m = re.fullmatch(r"(\d+)", p.stem)
        if not m:
            raise A3DError(f"{p}: DeepLesion slice names are numbers (e.g. 109.png)")
        indexed.append((int(m.group(1)), p))
    indexed.sort()
    if len(indexed) < 2:
        raise A3DError(f"{folder}: a single PNG slice is a 2D image; expected a DeepLesion series folder with several slices")
    if spacing is None and dl_info is not None:
        spacing = _dl_info_spacing(Path(dl_info), folder.name)
        if spacing is None:
            raise A3DError(f"{dl_info}: no row for series {folder.name}; give its spacing with --spacing x,y,z")
    if spacing is None:
        raise A3DError(f"{folder}: DeepLesion PNGs carry no voxel spacing; give --dl-info DL_info.csv or --spacing x,y,z (mm)")
    slices = []
    for _, p in indexed:
        a = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if a is None:
            raise A3DError(f"{p}: corrupt or unreadable PNG")
        if a.ndim != 2 or a.dtype != np.uint16:
            raise A3DError(f"{p}: expected a 16-bit grayscale DeepLesion PNG, got {a.dtype} {a.shape}")
        slices.append(a)
    if len({s.shape for s in slices}) != 1:
        raise A3DError(f"{folder}: slices differ in size; expected one series")
    vol = (np.stack(slices).astype(np.int32) - DL_PNG_OFFSET).astype(np.int16)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing(tuple(float(s) for s in spacing))
    scan = finish_scan(img, str(folder), "deeplesion-png", scan_name(folder), slice_files=[str(p) for _, p in indexed])
    idx = [i for i, _ in indexed]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        scan.warnings.append(f"{folder}: slice numbers are not contiguous ({idx[0]}..{idx[-1]}, {len(idx)} files)")
    return scan
