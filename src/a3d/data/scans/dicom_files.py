"""One pass over the DICOM files of an input (a folder tree or a DICOMDIR's listing,
:mod:`a3d.data.scans.dicom_tree`): every file's header (pydicom, pixel data not loaded), or the
reason the file cannot be used.

A file is *unreadable* when pydicom cannot parse it, when the file ends inside its header (pydicom
silently returns the elements before the cut: the bytes after the last whole element tell it),
when its transfer syntax is not one a3d decodes, or when its pixel data is incomplete: uncompressed
data shorter than Rows x Columns x bits x frames, compressed data whose items run past the end of
the file or lack their sequence delimiter, fewer fragments than frames, an offset table with the
wrong number of entries. Such files are returned with their reason (and their series when the
header tells it), never dropped silently: :mod:`a3d.data.scans.dicom_series` decides whether the
series can be used without them.

Files without a SeriesInstanceUID (anonymised exports blank it) are grouped by folder and Frame of
Reference under a series key ``no-uid:FOLDER[:FRAME_OF_REFERENCE]``: :func:`missing_uids` names what
is absent for the warning.
"""

from __future__ import annotations

import os
import warnings as _warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from a3d.data.scans.dicom_pixels import (PIXEL_DATA, encapsulated_problem, native_problem, syntax_problem,
                                         transfer_syntax)
from a3d.data.scans.dicom_tree import find_dicom_files

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_SOP_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR: an index, not a series member
_UNDEFINED_LENGTH = 0xFFFFFFFF
_DEFER = "64 KB"  # uncompressed pixel data of a CT slice (>= 128 KB) is left on disk; its length is still known
UID_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
NO_UID_PREFIX = "no-uid:"


@dataclass
class DicomFile:
    """One readable DICOM file: its path, header (``ds`` has no pixel data element), the series it
    is grouped in (its SeriesInstanceUID, or a ``no-uid:`` key) and its folder relative to the input."""

    path: str
    ds: Dataset
    has_pixels: bool
    series_key: str = ""
    folder: str = "."

    @property
    def series_uid(self) -> str:
        return str(self.ds.get("SeriesInstanceUID", "") or "")

    @property
    def sop_uid(self) -> str:
        return str(self.ds.get("SOPInstanceUID", "") or "")

    @property
    def sop_class(self) -> str:
        meta = self.ds.get("file_meta")
        return str(self.ds.get("SOPClassUID", "") or getattr(meta, "MediaStorageSOPClassUID", "") or "")

    @property
    def modality(self) -> str:
        return str(self.ds.get("Modality", "") or "")

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def n_frames(self) -> int:
        return int(self.ds.get("NumberOfFrames", 1) or 1)


def missing_uids(f: DicomFile) -> list[str]:
    """The instance UIDs (Study/Series/SOP) this file lacks or leaves empty."""
    return [k for k in UID_KEYS if not str(f.ds.get(k, "") or "").strip()]


@dataclass
class Unreadable:
    """A file that cannot be used, why, and its series key when the header tells it (else None)."""

    path: str
    reason: str
    series_uid: str | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def _header_cut(ds: Dataset, path: str) -> str | None:
    """Why the file ends inside its header (bytes after the last whole element), or None. Call it
    before any attribute is read, while the elements are still raw (their offsets known)."""
    if transfer_syntax(ds) == pydicom.uid.DeflatedExplicitVRLittleEndian:
        return None  # offsets are in the inflated stream
    size = os.path.getsize(path)
    tags = list(ds.keys())
    if not tags:
        return f"file ends inside its header ({size} bytes, no data element after the file meta information)"
    last = ds.get_item(tags[-1])
    if not getattr(last, "is_raw", False) or last.length == _UNDEFINED_LENGTH:
        return None
    end = int(last.value_tell) + int(last.length)
    if end > size:
        return (f"file ends inside its header: element {tags[-1]} holds {size - int(last.value_tell)} of its "
                f"{int(last.length)} bytes (file truncated)")
    if end < size:
        return (f"file ends inside its header: the {size - end} bytes after element {tags[-1]} do not make a "
                f"whole element (file truncated)")
    return None


def _pixel_check(ds: Dataset, path: str, frames: int) -> tuple[bool, str | None]:
    """(has pixel data, what is wrong with it or None)."""
    if transfer_syntax(ds).is_encapsulated:
        return encapsulated_problem(ds, path, frames)
    if PIXEL_DATA not in ds:
        return False, None
    return True, native_problem(ds, path, frames)


def read_dicom_file(path: str) -> DicomFile | Unreadable | None:
    """The header of one file, why it cannot be used, or None for a DICOMDIR (not a series member)."""
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")  # pydicom's warnings about a file end are turned into reasons below
            ds = pydicom.dcmread(path, defer_size=_DEFER)
    except Exception as e:  # pydicom raises many types on corrupt files
        return Unreadable(path, f"not a readable DICOM file ({type(e).__name__}: {str(e)[:100]})")
    cut = _header_cut(ds, path)
    f = DicomFile(path, ds, False)
    if f.sop_class == _DIRECTORY_SOP_CLASS:
        return None
    series = f.series_uid or None
    try:
        frames = f.n_frames
    except (TypeError, ValueError):
        return Unreadable(path, f"NumberOfFrames {ds.get('NumberOfFrames')!r} is not a number", series)
    has_pixels, problem = _pixel_check(ds, path, frames)
    problem = problem or (syntax_problem(ds) if has_pixels else None)
    if problem:
        return Unreadable(path, problem, series)
    if cut and not has_pixels:
        return Unreadable(path, cut)  # its series cannot be trusted: the cut may be inside the UID
    if not has_pixels and not series:
        return Unreadable(path, "DICOM file without SeriesInstanceUID and without pixel data (not an image)")
    if has_pixels:
        del ds[PIXEL_DATA]  # keep the header only: the pixels are decoded frame by frame later
    f.has_pixels = has_pixels
    return f


def _series_key(f: DicomFile) -> str:
    if f.series_uid:
        return f.series_uid
    fo_r = str(f.ds.get("FrameOfReferenceUID", "") or "").strip()
    return NO_UID_PREFIX + f.folder + (f":{fo_r}" if fo_r else "")


def read_dicom_tree(folder: Path) -> tuple[list[DicomFile], list[Unreadable], list[str]]:
    """(readable files, unreadable files, warnings) of the DICOM input ``folder``: the files its
    DICOMDIR lists, or every DICOM-looking file of the tree (``DICM`` preamble or ``.dcm``), in order."""
    paths, warnings = find_dicom_files(folder)
    files, bad = [], []
    for p in paths:
        got = read_dicom_file(str(p))
        if isinstance(got, DicomFile):
            got.folder = os.path.relpath(p.parent, folder)
            got.series_key = _series_key(got)
            files.append(got)
        elif got is not None:
            bad.append(got)
    return files, bad, warnings
