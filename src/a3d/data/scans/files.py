"""Finding scans: what kind of input a path is, the scans inside a batch folder, output names.

The folder rule: a volume FILE (:data:`VOLUME_SUFFIXES`) is one scan; a folder with a DICOMDIR at its root or DICOM files
directly inside is one DICOM input (its series: the whole tree below, :mod:`~a3d.data.scans.dicom_tree`); a folder of DeepLesion PNGs is one PNG series; any other folder is a BATCH, in
which each volume file directly inside and each sub-folder holding a scan anywhere below it (DICOM
at any depth, or PNGs) is one scan.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from a3d.data.scans.dicom_tree import has_dicom, holds_dicom_directly, is_dicom_file
from a3d.errors import A3DError

# the volume files ITK reads, by kind (the Scan.kind their reader gives them); .nhdr/.mhd: detached headers
VOLUME_KINDS = {".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage",
                ".mhd": "metaimage"}
VOLUME_SUFFIXES = tuple(VOLUME_KINDS)
SLICER_SEG_SUFFIX = ".seg.nrrd"  # 3D Slicer's segmentation file: a label map, not a CT


def volume_kind(path: str | os.PathLike) -> str | None:
    """'nifti', 'nrrd' or 'metaimage' for a volume file name (by its suffix), else None."""
    name = str(path).lower()
    return next((kind for suf, kind in VOLUME_KINDS.items() if name.endswith(suf)), None)


def volume_stem(path: str | os.PathLike) -> str:
    """The file name without its volume suffix (``X`` for ``X.nii.gz``, ``X.mha``), as stored."""
    name = Path(path).name
    suf = next((s for s in VOLUME_SUFFIXES if name.lower().endswith(s)), "")
    return name[: len(name) - len(suf)]


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except PermissionError as e:
        raise A3DError(f"{folder}: folder cannot be read (permission denied)") from e
    except OSError as e:
        raise A3DError(f"{folder}: folder cannot be read ({e.strerror or e})") from e


def _check_volume_file(p: Path) -> str:
    """The kind of a volume file given as input; A3DError for any other file."""
    if p.name.lower().endswith(SLICER_SEG_SUFFIX):
        raise A3DError(f"{p}: a 3D Slicer segmentation (.seg.nrrd) is a label map, not a CT image; give the CT "
                       "volume (label maps are for `a3d data import`)")
    kind = volume_kind(p)
    if kind is not None:
        return kind
    if is_dicom_file(p):
        raise A3DError(f"{p}: a single DICOM file is a 2D image; give the folder holding the whole series")
    if p.suffix.lower() == ".png":
        raise A3DError(f"{p}: a single PNG is a 2D image; give the DeepLesion series folder holding all its slices")
    raise A3DError(f"{p}: unsupported input file (expected a volume file {', '.join(VOLUME_SUFFIXES)}, a DICOM "
                   "series folder or a DeepLesion PNG folder)")


def classify_input(path: str | os.PathLike) -> str:
    """'nifti', 'nrrd', 'metaimage', 'dicom', 'deeplesion-png' or 'batch' (a folder holding several scans)."""
    p = Path(path)
    if not p.exists():
        raise A3DError(f"{p}: input does not exist (expected a DICOM folder, a volume file such as .nii.gz, .nrrd "
                       "or .mha, or a folder of scans)")
    if p.is_file():
        return _check_volume_file(p)
    if not os.access(p, os.R_OK | os.X_OK):
        raise A3DError(f"{p}: folder cannot be read (permission denied)")
    entries = [e for e in _listdir(p) if not e.name.startswith(".")]
    files = [e for e in entries if e.is_file()]
    if holds_dicom_directly(p, entries):  # its series are those of the whole tree below (dicom_tree)
        return "dicom"
    pngs = [f for f in files if f.suffix.lower() == ".png"]
    if pngs and len(pngs) >= len(files) - 1:  # tolerate e.g. a stray DL_info.csv beside them
        return "deeplesion-png"
    if scan_entries(p):
        return "batch"
    raise A3DError(f"{p}: no DICOM series, volume file (NIfTI, NRRD, MetaImage) or DeepLesion PNG series found "
                   "in this folder")


def _holds_scan(folder: Path) -> bool:
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")]
    except OSError:
        return True  # unreadable: listed, so that reading it names the problem
    return any(n.lower().endswith(".png") for n in names) or has_dicom(folder)


def scan_entries(folder: str | os.PathLike) -> list[Path]:
    """The scans inside a batch folder, sorted: volume files directly in it and sub-folders holding
    a DICOM series (at any depth) or DeepLesion PNGs."""
    out = []
    for e in _listdir(Path(folder)):
        if e.name.startswith("."):
            continue
        if (e.is_file() and volume_kind(e) is not None) or (e.is_dir() and _holds_scan(e)):
            out.append(e)
    return out


def scan_name(path: str | os.PathLike) -> str:
    """Output name of a scan: the file name without its volume suffix, or the folder's name, with
    characters other than letters, digits and ``._-`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", volume_stem(path)) or "scan"
