"""DICOM series -> :class:`Scan`: pydicom for the headers and the checks
(:mod:`~a3d.data.scans.dicom_files`, :mod:`~a3d.data.scans.dicom_series`), SimpleITK/GDCM to decode
each slice's pixels (RescaleSlope/RescaleIntercept applied), the volume built on the true slice
positions."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from a3d.data.scans.dicom_files import DicomFile, Unreadable, read_dicom_folder
from a3d.data.scans.dicom_series import SliceGrid, assemble_stack, name_list
from a3d.data.scans.files import _listdir, scan_name
from a3d.data.scans.geometry import Scan, _sitk, finish_scan
from a3d.errors import A3DError

log = logging.getLogger(__name__)


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder."""

    uid: str
    files: list[str]
    modality: str = ""
    description: str = ""

    @property
    def n_files(self) -> int:
        return len(self.files)


def _group_series(files: list[DicomFile]) -> dict[str, list[DicomFile]]:
    groups: dict[str, list[DicomFile]] = {}
    for f in files:
        groups.setdefault(f.series_uid, []).append(f)
    return groups


def _series_infos(groups: dict[str, list[DicomFile]]) -> list[SeriesInfo]:
    out = [SeriesInfo(uid, [f.path for f in fs], fs[0].modality, str(fs[0].ds.get("SeriesDescription", "") or ""))
           for uid, fs in groups.items()]
    out.sort(key=lambda s: (-s.n_files, s.uid))
    return out


def list_dicom_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """All DICOM series in ``folder`` (not recursive), largest first; unreadable files are not listed."""
    files, _ = read_dicom_folder(Path(folder))
    return _series_infos(_group_series(files))


def _choose_series(folder: Path, series: list[SeriesInfo], series_uid: str | None, unreadable: list[Unreadable]) -> SeriesInfo:
    if not series:
        bad = f" ({name_list([f'{u.name}: {u.reason}' for u in unreadable])})" if unreadable else ""
        raise A3DError(f"{folder}: no readable DICOM series in this folder (files corrupt or not DICOM){bad}")
    if series_uid is not None:
        match = [s for s in series if s.uid == series_uid]
        if not match:
            listed = ", ".join(f"{s.uid} ({s.n_files} files)" for s in series)
            raise A3DError(f"{folder}: no series with --series {series_uid}; found: {listed}")
        return match[0]
    if len(series) > 1:
        log.info("%s: %d series, using the largest %s (%d files)", folder, len(series), series[0].uid, series[0].n_files)
    return series[0]


def _decode(files: list[DicomFile]) -> tuple[dict[str, np.ndarray], list[Unreadable]]:
    """HU pixels (rows, cols) float32 of each file (by path), and the files GDCM cannot decode."""
    sitk = _sitk()
    out, bad = {}, []
    for f in files:
        try:
            a = sitk.GetArrayFromImage(sitk.ReadImage(f.path)).astype(np.float32)
        except RuntimeError as e:
            bad.append(Unreadable(f.path, f"pixel data cannot be decoded ({str(e).strip().splitlines()[-1][:100]})", f.series_uid))
            continue
        a = a.reshape(a.shape[-2:]) if a.size == a.shape[-1] * a.shape[-2] else a
        if a.shape != (int(f.ds.Rows), int(f.ds.Columns)):
            bad.append(Unreadable(f.path, f"decoded {a.shape} pixels, Rows x Columns say "
                                          f"{(int(f.ds.Rows), int(f.ds.Columns))}", f.series_uid))
            continue
        out[f.path] = a
    return out, bad


def _volume(grid: SliceGrid, pixels: dict[str, np.ndarray]) -> np.ndarray:
    """(n_grid, rows, cols) HU: the source image of each grid slice, or the linear interpolation at
    its position between the nearest source images below and above."""
    px = [pixels[f.path] for f in grid.files]
    vol = np.empty((len(grid.slots),) + px[0].shape, dtype=np.float32)
    for i, s in enumerate(grid.slots):
        if s is not None:
            vol[i] = px[s]
        else:
            lo, hi, w = grid.neighbours(i)
            vol[i] = px[lo] * (1 - w) + px[hi] * w
    return vol


def _image(grid: SliceGrid, vol: np.ndarray):
    """SimpleITK image of the grid volume: x along the rows' direction, y down the columns, z the normal."""
    img = _sitk().GetImageFromArray(vol)
    img.SetSpacing((grid.pixel_spacing[0], grid.pixel_spacing[1], grid.spacing))
    img.SetOrigin(tuple(float(v) for v in grid.origin))
    img.SetDirection(tuple(float(v) for v in np.stack([grid.row_dir, grid.col_dir, grid.normal], axis=1).ravel()))
    return img


def _stack(group: list[DicomFile], unreadable: list[Unreadable], uid: str, allow_missing: bool,
           acquisition: int | None) -> tuple[SliceGrid, dict[str, np.ndarray]]:
    """The checked stack and its pixels; files that fail to decode count as unreadable (and refuse
    the series unless ``allow_missing``)."""
    grid = assemble_stack(group, unreadable, uid, allow_missing, acquisition)
    pixels, bad = _decode(grid.files)
    if bad:
        failed = {b.path for b in bad}
        good = [f for f in grid.files if f.path not in failed]
        grid = assemble_stack(good, unreadable + bad, uid, allow_missing, acquisition)
    return grid, pixels


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None, allow_missing: bool = False,
                      acquisition: int | None = None) -> Scan:
    """Read one series of a DICOM folder: ``series_uid`` or else the one with most files, checked
    and placed on its slice grid (:func:`a3d.data.scans.dicom_series.assemble_stack`).

    ``allow_missing``: interpolate holes (missing/unreadable slices, irregular positions) instead of
    refusing; ``acquisition``: use only the files with this AcquisitionNumber.
    """
    folder = Path(folder)
    _listdir(folder)
    files, unreadable = read_dicom_folder(folder)
    groups = _group_series(files)
    series = _series_infos(groups)
    chosen = _choose_series(folder, series, series_uid, unreadable)
    grid, pixels = _stack(groups[chosen.uid], unreadable, chosen.uid, allow_missing, acquisition)
    warnings = []
    if series_uid is None and len(series) > 1:
        others = ", ".join(f"{s.uid} ({s.n_files} files)" for s in series[1:4]) + (" ..." if len(series) > 4 else "")
        warnings.append(f"{folder}: {len(series)} series; used the largest, {chosen.uid} ({chosen.n_files} files); "
                        f"others: {others}; choose one with --series UID")
    if not grid.files[0].modality:
        warnings.append(f"{grid.files[0].path}: DICOM Modality missing; assumed CT")
    slices = [grid.files[s] if s is not None else None for s in grid.slots]
    scan = finish_scan(_image(grid, _volume(grid, pixels)), str(folder), "dicom", scan_name(folder), series_uid=chosen.uid,
                       slice_files=[f.path if f else None for f in slices],
                       interpolated=tuple(grid.interpolated), source_headers=[f.ds if f else None for f in slices])
    scan.warnings[:0] = warnings + grid.warnings
    return scan
