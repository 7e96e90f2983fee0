"""One pass over a DICOM folder: every file's header (pydicom, pixel data not loaded), or the
reason the file cannot be used.

A file is *unreadable* when pydicom cannot parse it, when its header stops before the attributes
every CT slice has (a file cut inside its header parses as a partial dataset), or when its pixel
data is shorter than Rows x Columns x bits says (a file cut inside its pixels). Such files are
returned with their reason (and their series when the header tells it), never dropped silently:
:mod:`a3d.data.scans.dicom_series` decides whether the series can be used without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from a3d.data.scans.files import _is_dicom_file, _listdir

PIXEL_DATA = 0x7FE00010
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not a series member
_UNDEFINED_LENGTH = 0xFFFFFFFF
_DEFER = "64 KB"  # pixel data of a CT slice (>= 128 KB) is left on disk; its length is still known


@dataclass
class DicomFile:
    """One readable DICOM file: its path and header (``ds`` has no pixel data element)."""

    path: str
    ds: Dataset
    has_pixels: bool

    @property
    def series_uid(self) -> str:
        return str(self.ds.SeriesInstanceUID)

    @property
    def sop_uid(self) -> str:
        return str(self.ds.get("SOPInstanceUID", ""))

    @property
    def sop_class(self) -> str:
        return str(self.ds.get("SOPClassUID", ""))

    @property
    def modality(self) -> str:
        return str(self.ds.get("Modality", "") or "")

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def image_type(self) -> list[str]:
        v = self.ds.get("ImageType", [])
        return [str(t).upper() for t in (v if isinstance(v, (list, pydicom.multival.MultiValue)) else [v])]

    def acquisition(self) -> int | None:
        v = self.ds.get("AcquisitionNumber")
        return int(v) if v not in (None, "") else None

    def orientation(self) -> np.ndarray | None:
        """(6,) ImageOrientationPatient (row direction, column direction), or None."""
        v = self.ds.get("ImageOrientationPatient")
        return np.asarray([float(x) for x in v]) if v is not None and len(v) == 6 else None

    def position(self) -> np.ndarray | None:
        """(3,) ImagePositionPatient (mm, LPS), or None."""
        v = self.ds.get("ImagePositionPatient")
        return np.asarray([float(x) for x in v]) if v is not None and len(v) == 3 else None


@dataclass
class Unreadable:
    """A file that cannot be used, why, and its series when the header tells it (else None)."""

    path: str
    reason: str
    series_uid: str | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def _pixel_problem(ds: Dataset, path: str) -> str | None:
    """Why the pixel data of a native (uncompressed) file is unusable, or None. Encapsulated
    (compressed) pixel data is checked when it is decoded."""
    el = ds.get_item(PIXEL_DATA)  # a deferred (raw) element: its length is known, its value not loaded
    if getattr(el, "is_raw", False):
        length, tell = int(el.length), el.value_tell
    else:
        length, tell = len(el.value or b""), None
    if length == _UNDEFINED_LENGTH:
        return None
    if tell is not None and tell + length > os.path.getsize(path):
        return f"file ends inside the pixel data ({os.path.getsize(path) - tell} of {length} bytes)"
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8 * frames
    except (AttributeError, TypeError, ValueError):
        return "Rows/Columns/BitsAllocated missing; the pixel data cannot be interpreted"
    if length < expected:
        return f"pixel data holds {length} bytes, Rows x Columns x BitsAllocated needs {expected}"
    return None


def read_dicom_file(path: str) -> DicomFile | Unreadable | None:
    """The header of one file, why it cannot be used, or None for a DICOMDIR (not a series member)."""
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER)
    except Exception as e:  # pydicom raises many types on corrupt files
        return Unreadable(path, f"not a readable DICOM file ({type(e).__name__}: {str(e)[:100]})")
    sop_class = str(ds.get("SOPClassUID", "") or getattr(ds.get("file_meta", Dataset()), "MediaStorageSOPClassUID", ""))
    if sop_class == _DIRECTORY_SOP_CLASS:
        return None
    series = ds.get("SeriesInstanceUID")
    if not series or "SOPClassUID" not in ds:
        return Unreadable(path, "DICOM header incomplete (no SeriesInstanceUID/SOPClassUID: truncated or not an image file)")
    has_pixels = PIXEL_DATA in ds
    if has_pixels:
        problem = _pixel_problem(ds, path)
        if problem:
            return Unreadable(path, problem, str(series))
        del ds[PIXEL_DATA]  # keep the header only: the pixels are decoded by SimpleITK
    return DicomFile(path, ds, has_pixels)


def read_dicom_folder(folder: Path) -> tuple[list[DicomFile], list[Unreadable]]:
    """Every DICOM-looking file directly in ``folder`` (``DICM`` preamble or ``.dcm``), in name order."""
    files, bad = [], []
    for p in _listdir(folder):
        if p.name.startswith(".") or not p.is_file() or not _is_dicom_file(p):
            continue
        got = read_dicom_file(str(p))
        if isinstance(got, DicomFile):
            files.append(got)
        elif got is not None:
            bad.append(got)
    return files, bad
