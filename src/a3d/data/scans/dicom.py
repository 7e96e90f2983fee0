"""DICOM input -> :class:`Scan`: the files of a folder tree or DICOMDIR
(:mod:`~a3d.data.scans.dicom_tree`), their headers and checks (:mod:`~a3d.data.scans.dicom_files`,
:mod:`~a3d.data.scans.dicom_series`), each image's pixels decoded by pydicom's pixel backend
(:mod:`~a3d.data.scans.dicom_pixels`) with RescaleSlope/RescaleIntercept applied per image (per
frame for multi-frame files), the volume built on the true slice positions."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from a3d.data.scans.dicom_files import NO_UID_PREFIX, UID_KEYS, DicomFile, Unreadable, missing_uids, read_dicom_tree
from a3d.data.scans.dicom_frames import DicomImage, file_images
from a3d.data.scans.dicom_pixels import FrameError, decode_frame
from a3d.data.scans.dicom_series import SliceGrid, assemble_stack, check_files, name_list
from a3d.data.scans.files import scan_name
from a3d.data.scans.geometry import Scan, _sitk, finish_scan
from a3d.errors import A3DError

log = logging.getLogger(__name__)


@dataclass
class SeriesInfo:
    """One DICOM series found under an input folder. ``uid``: its SeriesInstanceUID, or the
    ``no-uid:FOLDER[:FRAME_OF_REFERENCE]`` key of files without one (what ``--series`` takes)."""

    uid: str
    files: list[str]
    modality: str = ""
    description: str = ""
    folders: list[str] = field(default_factory=list)  # relative to the input folder ("." = itself)
    images: int = 0  # slices: files, or frames of multi-frame files

    @property
    def n_files(self) -> int:
        return len(self.files)

    @property
    def folder(self) -> str:
        """The folder of its files (several: their common parent, or a list when they share none)."""
        if len(self.folders) == 1:
            return self.folders[0]
        common = os.path.commonpath(self.folders) if self.folders else "."
        return common if common not in ("", ".") else ", ".join(self.folders)


def _group_series(files: list[DicomFile]) -> dict[str, list[DicomFile]]:
    groups: dict[str, list[DicomFile]] = {}
    for f in files:
        groups.setdefault(f.series_key, []).append(f)
    return groups


def _series_infos(groups: dict[str, list[DicomFile]]) -> list[SeriesInfo]:
    out = [SeriesInfo(key, [f.path for f in fs], fs[0].modality, str(fs[0].ds.get("SeriesDescription", "") or ""),
                      sorted({f.folder for f in fs}), sum(f.n_frames for f in fs))
           for key, fs in groups.items()]
    out.sort(key=lambda s: (-s.images, s.uid))
    return out


def list_dicom_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Every DICOM series under ``folder`` (its DICOMDIR, or the whole tree), most images first;
    unreadable files are not listed."""
    files, _, _ = read_dicom_tree(Path(folder))
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
        log.info("%s: %d series, using the largest %s (%d images)", folder, len(series), series[0].uid, series[0].images)
    return series[0]


def _decode_file(path: str, images: list[DicomImage]) -> tuple[dict, list[Unreadable]]:
    """HU pixels (rows, cols) float32 of the given images of one file (by image key), and the
    images that cannot be decoded (each named with the codec's reason)."""
    out, bad = {}, []
    uid = images[0].file.series_key
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # the header was read before: the file changed or its pixel data is damaged
        return {}, [Unreadable(path, f"pixel data cannot be read ({type(e).__name__}: {str(e)[:100]})", uid)]
    for im in images:
        try:
            stored = decode_frame(ds, im.frame or 0, path)
        except FrameError as e:
            bad.append(Unreadable(path, str(e), uid))
            continue
        if stored.shape != (im.rows, im.columns):
            bad.append(Unreadable(path, f"decoded {stored.shape} pixels, Rows x Columns say {(im.rows, im.columns)}", uid))
            continue
        out[im.key] = stored.astype(np.float32) * np.float32(im.slope) + np.float32(im.intercept)
    return out, bad


def _decode(images: list[DicomImage]) -> tuple[dict, list[Unreadable]]:
    by_file: dict[str, list[DicomImage]] = {}
    for im in images:
        by_file.setdefault(im.path, []).append(im)
    pixels, bad = {}, []
    for path, ims in by_file.items():
        got, failed = _decode_file(path, ims)
        pixels.update(got)
        bad += failed
    return pixels, bad


def _volume(grid: SliceGrid, pixels: dict) -> np.ndarray:
    """(n_grid, rows, cols) HU: the source image of each grid slice, or the linear interpolation at
    its position between the nearest source images below and above."""
    px = [pixels[f.key] for f in grid.files]
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
           acquisition: int | None) -> tuple[SliceGrid, dict]:
    """The checked stack and its pixels; images that fail to decode count as unreadable (and refuse
    the series unless ``allow_missing``)."""
    check_files(group)
    images = [im for f in group for im in file_images(f)]
    grid = assemble_stack(images, unreadable, uid, allow_missing, acquisition)
    pixels, bad = _decode(grid.files)
    if bad:
        good = [f for f in grid.files if f.key in pixels]
        if not good:
            raise A3DError(f"{Path(grid.files[0].path).parent}: series {uid}: no image can be decoded "
                           f"({name_list([f'{u.name}: {u.reason}' for u in bad])})")
        grid = assemble_stack(good, unreadable + bad, uid, allow_missing, acquisition)
    return grid, pixels


def _read_warnings(folder: Path, series: list[SeriesInfo], chosen: SeriesInfo, explicit: bool,
                   group: list[DicomFile], unreadable: list[Unreadable]) -> list[str]:
    """Other series, anonymised files, unreadable files of unknown series elsewhere in the tree."""
    out = []
    if not explicit and len(series) > 1:
        others = ", ".join(f"{s.uid} ({s.images} images, {s.folder})" for s in series[1:4]) + (" ..." if len(series) > 4 else "")
        out.append(f"{folder}: {len(series)} series; used the largest, {chosen.uid} ({chosen.images} images); "
                   f"others: {others}; choose one with --series UID")
    lacking = [k for k in UID_KEYS if any(k in missing_uids(f) for f in group)]
    if lacking:
        how = ("one series per folder and Frame of Reference" if chosen.uid.startswith(NO_UID_PREFIX)
               else f"series {chosen.uid}")
        out.append(f"{folder}: {sum(1 for f in group if missing_uids(f))} of {len(group)} files of the series lack "
                   f"{'/'.join(lacking)} (an anonymised export?): read as {how}; --dicom needs --new-uids")
    if not group[0].modality:
        out.append(f"{group[0].path}: DICOM Modality missing; assumed CT")
    chosen_dirs = {str(Path(p).parent) for p in chosen.files}
    out += [f"{u.path}: unreadable, not in the folders of the series used ({u.reason}); left out"
            for u in unreadable if u.series_uid is None and str(Path(u.path).parent) not in chosen_dirs]
    return out


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None, allow_missing: bool = False,
                      acquisition: int | None = None) -> Scan:
    """Read one series of a DICOM input (a folder tree or a DICOMDIR): ``series_uid`` (or a
    ``no-uid:`` key) or else the one with most images, checked and placed on its slice grid
    (:func:`a3d.data.scans.dicom_series.assemble_stack`).

    ``allow_missing``: interpolate holes (missing/unreadable slices, irregular positions) instead of
    refusing; ``acquisition``: use only the images with this AcquisitionNumber.
    """
    folder = Path(folder)
    files, unreadable, tree_warnings = read_dicom_tree(folder)
    groups = _group_series(files)
    series = _series_infos(groups)
    chosen = _choose_series(folder, series, series_uid, unreadable)
    grid, pixels = _stack(groups[chosen.uid], unreadable, chosen.uid, allow_missing, acquisition)
    warnings = tree_warnings + _read_warnings(folder, series, chosen, series_uid is not None, groups[chosen.uid], unreadable)
    slices = [grid.files[s] if s is not None else None for s in grid.slots]
    scan = finish_scan(_image(grid, _volume(grid, pixels)), str(folder), "dicom", scan_name(folder),
                       series_uid=None if chosen.uid.startswith(NO_UID_PREFIX) else chosen.uid, slice_files=[f.path if f else None for f in slices],
                       interpolated=tuple(grid.interpolated), source_headers=[f.file.ds if f else None for f in slices],
                       source_frames=[f.frame + 1 if f and f.frame is not None else None for f in slices])
    scan.warnings[:0] = warnings + grid.warnings
    return scan
