"""DICOM series -> :class:`Scan` (SimpleITK/GDCM for the voxels, pydicom for the metadata checks)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from a3d.data.scans.files import _listdir, scan_name
from a3d.data.scans.geometry import Scan, _sitk, finish_scan
from a3d.errors import A3DError

log = logging.getLogger(__name__)

_CT_MODALITIES = {"CT"}


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


def list_dicom_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """All DICOM series in ``folder`` (not recursive), largest first."""
    sitk = _sitk()
    folder = Path(folder)
    _listdir(folder)
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as e:
        raise A3DError(f"{folder}: DICOM folder cannot be scanned ({str(e).strip().splitlines()[-1][:160]})") from e
    out = []
    for uid in uids:
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        modality, desc = _dicom_header(files[0]) if files else ("", "")
        out.append(SeriesInfo(uid=uid, files=files, modality=modality, description=desc))
    out.sort(key=lambda s: (-s.n_files, s.uid))
    return out


def _dicom_header(path: str) -> tuple[str, str]:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # pydicom raises many types on corrupt files
        raise A3DError(f"{path}: corrupt or unreadable DICOM file ({type(e).__name__}: {str(e)[:120]})") from e
    return str(getattr(ds, "Modality", "") or ""), str(getattr(ds, "SeriesDescription", "") or "")


def _slice_gaps(files: list[str], first) -> np.ndarray | None:
    """Distances (mm) between consecutive slices along the slice normal, from ImagePositionPatient."""
    try:
        iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        pos = []
        for f in files:
            d = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["ImagePositionPatient"])
            pos.append(float(np.dot(normal, [float(v) for v in d.ImagePositionPatient])))
    except Exception:  # a header problem here is reported by the reader itself
        return None
    return np.abs(np.diff(np.sort(np.asarray(pos))))


def _choose_series(folder: Path, series: list[SeriesInfo], series_uid: str | None) -> SeriesInfo:
    if not series:
        raise A3DError(f"{folder}: no readable DICOM series in this folder (files corrupt or not DICOM)")
    if series_uid is not None:
        match = [s for s in series if s.uid == series_uid]
        if not match:
            listed = ", ".join(f"{s.uid} ({s.n_files} files)" for s in series)
            raise A3DError(f"{folder}: no series with --series {series_uid}; found: {listed}")
        chosen = match[0]
    else:
        chosen = series[0]
        if len(series) > 1:
            log.info("%s: %d series, using the largest %s (%d files)", folder, len(series), chosen.uid, chosen.n_files)
    if chosen.n_files < 2:
        raise A3DError(f"{folder}: series {chosen.uid} holds a single 2D image; expected a CT volume with several slices")
    return chosen


def _checked_header(first: str):
    """The pydicom header of a series' first file, checked: CT (or no modality), in-plane spacing,
    slice position and orientation present."""
    try:
        ds = pydicom.dcmread(first, stop_before_pixels=True)
    except Exception as e:
        raise A3DError(f"{first}: corrupt or unreadable DICOM file ({type(e).__name__}: {str(e)[:120]})") from e
    modality = str(getattr(ds, "Modality", "") or "")
    if modality and modality not in _CT_MODALITIES:
        raise A3DError(f"{first}: DICOM Modality is {modality}; a3d predict expects CT (Modality CT)")
    if "PixelSpacing" not in ds:
        raise A3DError(f"{first}: DICOM PixelSpacing (0028,0030) missing; expected the in-plane spacing in mm")
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        raise A3DError(f"{first}: DICOM ImagePositionPatient/ImageOrientationPatient missing; slice spacing unknown")
    return ds


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> Scan:
    """Read one series of a DICOM folder: ``series_uid`` or else the one with most files.

    HU: SimpleITK's GDCM reader applies RescaleSlope/RescaleIntercept (checked by the tests).
    """
    folder = Path(folder)
    series = list_dicom_series(folder)
    chosen = _choose_series(folder, series, series_uid)
    first = chosen.files[0]
    ds = _checked_header(first)
    warnings = []
    if series_uid is None and len(series) > 1:
        others = ", ".join(f"{s.uid} ({s.n_files} files)" for s in series[1:4]) + (" ..." if len(series) > 4 else "")
        warnings.append(f"{folder}: {len(series)} series; used the largest, {chosen.uid} ({chosen.n_files} files); "
                        f"others: {others}; choose one with --series UID")
    if not str(getattr(ds, "Modality", "") or ""):
        warnings.append(f"{first}: DICOM Modality missing; assumed CT")
    reader = _sitk().ImageSeriesReader()
    reader.SetFileNames(chosen.files)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise A3DError(f"{folder}: DICOM series {chosen.uid} cannot be read ({str(e).strip().splitlines()[-1][:160]})") from e
    if img.GetDimension() == 3 and img.GetSize()[2] != len(chosen.files):
        raise A3DError(f"{folder}: DICOM series {chosen.uid}: read {img.GetSize()[2]} slices from {len(chosen.files)} files")
    scan = finish_scan(img, str(folder), "dicom", scan_name(folder), series_uid=chosen.uid, slice_files=list(chosen.files))
    gaps = _slice_gaps(chosen.files, ds)
    if gaps is not None and len(gaps) and (gaps.max() - gaps.min()) > 0.1 * max(float(np.median(gaps)), 1e-6):
        warnings.append(
            f"{folder}: non-uniform slice spacing ({gaps.min():.2f}..{gaps.max():.2f} mm; missing slices?); "
            f"the volume uses {img.GetSpacing()[2]:.2f} mm throughout"
        )
    scan.warnings[:0] = warnings
    return scan
