"""Finding scans: what kind of input a path is, the scans inside a batch folder, output names."""

from __future__ import annotations

import os
import re
from pathlib import Path

from a3d.data.scans.dicom_tree import holds_dicom_directly, is_dicom_file
from a3d.errors import A3DError

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except PermissionError as e:
        raise A3DError(f"{folder}: folder cannot be read (permission denied)") from e
    except OSError as e:
        raise A3DError(f"{folder}: folder cannot be read ({e.strerror or e})") from e


def classify_input(path: str | os.PathLike) -> str:
    """'nifti', 'dicom', 'deeplesion-png' or 'batch' (a folder holding several scans)."""
    p = Path(path)
    if not p.exists():
        raise A3DError(f"{p}: input does not exist (expected a DICOM folder, a .nii/.nii.gz file or a folder of scans)")
    if p.is_file():
        if is_nifti(p):
            return "nifti"
        if is_dicom_file(p):
            raise A3DError(f"{p}: a single DICOM file is a 2D image; give the folder holding the whole series")
        if p.suffix.lower() == ".png":
            raise A3DError(f"{p}: a single PNG is a 2D image; give the DeepLesion series folder holding all its slices")
        raise A3DError(f"{p}: unsupported input file (expected .nii, .nii.gz, a DICOM series folder or a DeepLesion PNG folder)")
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
    raise A3DError(f"{p}: no DICOM series, NIfTI file or DeepLesion PNG series found in this folder")


def scan_entries(folder: Path) -> list[Path]:
    """The scans inside a batch folder: NIfTI files and sub-folders holding DICOM or PNG series."""
    out = []
    for e in _listdir(Path(folder)):
        if e.name.startswith("."):
            continue
        if e.is_file() and is_nifti(e):
            out.append(e)
        elif e.is_dir():
            try:
                sub = [f for f in _listdir(e) if f.is_file() and not f.name.startswith(".")]
            except A3DError:
                out.append(e)  # reported when read
                continue
            if any(is_dicom_file(f) for f in sub[:50]) or any(f.suffix.lower() == ".png" for f in sub):
                out.append(e)
    return out


def scan_name(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "scan"
