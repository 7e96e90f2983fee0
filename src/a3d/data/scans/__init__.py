"""Reading whole CT scans for inference: DICOM series, volume files (NIfTI, NRRD, MetaImage), DeepLesion PNG series.

Every reader returns a :class:`Scan`: the volume in Hounsfield units brought to one canonical
axial orientation, plus the geometry needed to map anything found in it back to the input file
(voxel indices) and to the patient (physical LPS millimetres, as ITK and DICOM use). Modules:
``files`` (which kind of input a path is), ``geometry`` (:class:`Scan`), ``dicom``, ``volume``,
``png`` (the readers; ``dicom_files`` and ``dicom_series`` read and check a DICOM folder's
headers and place its slices on their grid; ``nifti`` and ``itk_headers`` are the format-specific
checks of ``volume``); :func:`read_scan` picks the reader.

Canonical orientation (``CANONICAL = "LPS"``): the SimpleITK image is re-oriented with
``DICOMOrient(image, "LPS")`` so that, for an axial acquisition, the direction matrix is the
identity in LPS. In the numpy array ``hu[z, y, x]``:

- ``x`` (columns) runs from the patient's right to the patient's left: image left = patient right,
  as radiologists view axial slices;
- ``y`` (rows) runs from anterior to posterior: image top = anterior;
- ``z`` (slices) runs from inferior to superior: slice 0 is the lowest (feet side).

Oblique acquisitions keep their (permuted, sign-corrected) direction cosines; the physical
coordinates reported always come from the image geometry, so they stay correct.
"""

from __future__ import annotations

import os
from typing import Sequence

from a3d.data.scans.dicom import SeriesInfo, list_dicom_series, read_dicom_series
from a3d.data.scans.dicom_tree import has_dicom
from a3d.data.scans.files import (SLICER_SEG_SUFFIX, VOLUME_SUFFIXES, classify_input, scan_entries, scan_name,
                                  volume_kind, volume_stem)
from a3d.data.scans.geometry import CANONICAL, Scan
from a3d.data.scans.itk_headers import volume_files
from a3d.data.scans.png import DL_PNG_OFFSET, parse_spacing, read_deeplesion_png
from a3d.data.scans.volume import read_volume
from a3d.errors import A3DError

__all__ = [
    "CANONICAL", "DL_PNG_OFFSET", "SLICER_SEG_SUFFIX", "Scan", "SeriesInfo", "VOLUME_SUFFIXES",
    "classify_input", "list_dicom_series", "parse_spacing", "read_deeplesion_png", "read_dicom_series",
    "read_scan", "read_volume", "scan_entries", "scan_name", "volume_files", "volume_kind", "volume_stem",
]


def read_scan(
    path: str | os.PathLike,
    series_uid: str | None = None,
    spacing: Sequence[float] | None = None,
    dl_info: str | os.PathLike | None = None,
    allow_missing: bool = False,
    acquisition: int | None = None,
    batch_entry: bool = False,
) -> Scan:
    """Read any supported single-scan input (not a batch folder). DICOM only: ``series_uid``,
    ``allow_missing`` (interpolate holes instead of refusing), ``acquisition`` (AcquisitionNumber).
    ``batch_entry``: ``path`` is one scan of a batch folder (:func:`scan_entries`), so a sub-folder
    whose DICOM files lie only deeper down (patient/study/series folders) is one DICOM tree."""
    kind = classify_input(path)
    if kind == "batch" and batch_entry and has_dicom(path):
        kind = "dicom"
    if kind in ("nifti", "nrrd", "metaimage"):
        return read_volume(path)
    if kind == "dicom":
        return read_dicom_series(path, series_uid, allow_missing=allow_missing, acquisition=acquisition)
    if kind == "deeplesion-png":
        return read_deeplesion_png(path, spacing=spacing, dl_info=dl_info)
    raise A3DError(f"{path}: folder holds several scans; read them one by one (batch mode)")
