"""Where the DICOM files of one input lie: a DICOMDIR's listing, or every DICOM file of a folder
tree, any depth (docs/predict.md, "How a folder is read").

- A folder with a ``DICOMDIR`` at its root (a CD/USB export) is one DICOM input: the DICOMDIR's
  directory records (ReferencedFileID, read with pydicom) list its files anywhere below. An
  unreadable DICOMDIR, or one that lists missing files, is named in a warning and the tree is
  walked instead.
- Otherwise every DICOM-looking file (``DICM`` preamble, or ``.dcm``) of the folder and of all its
  sub-folders is taken; hidden entries are skipped; a sub-folder that cannot be read is named in a
  warning.

This module only finds files (no header is parsed beyond the 132-byte preamble, except the
DICOMDIR): :mod:`a3d.data.scans.dicom_files` reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pydicom

from a3d.errors import A3DError

DICOMDIR = "DICOMDIR"


def is_dicom_file(path: Path) -> bool:
    """A ``DICM`` preamble at byte 128, or a ``.dcm`` name (files without the preamble exist)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) >= 132 and head[128:132] == b"DICM" or path.suffix.lower() == ".dcm"


def dicomdir_of(folder: Path) -> Path | None:
    """The DICOMDIR at the root of ``folder`` (any letter case, as CD file systems write it), or None."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    hit = [n for n in names if n.upper() == DICOMDIR and (folder / n).is_file()]
    return folder / sorted(hit)[0] if hit else None


def _scandir(folder: Path, warnings: list[str]) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        warnings.append(f"{folder}: sub-folder cannot be read ({e.strerror or e}); its files are left out")
        return []


def walk_dicom(folder: Path, warnings: list[str]) -> list[Path]:
    """Every DICOM-looking file in ``folder`` and all its sub-folders (names sorted, depth first);
    DICOMDIR files are indexes, not images, and are left out."""
    out, todo = [], [folder]
    while todo:
        here = todo.pop()
        subdirs = []
        for e in _scandir(here, warnings):
            if e.is_dir(follow_symlinks=False):
                subdirs.append(Path(e.path))
            elif e.is_file() and e.name.upper() != DICOMDIR and is_dicom_file(Path(e.path)):
                out.append(Path(e.path))
        todo.extend(reversed(subdirs))
    return out


def has_dicom(folder: str | os.PathLike) -> bool:
    """Whether the tree under ``folder`` holds a DICOMDIR or any DICOM file (stops at the first)."""
    todo = [Path(folder)]
    while todo:
        here = todo.pop()
        try:
            with os.scandir(here) as it:
                entries = [e for e in it if not e.name.startswith(".")]
        except OSError:
            continue
        for e in entries:
            if e.is_file() and (e.name.upper() == DICOMDIR or is_dicom_file(Path(e.path))):
                return True
        todo.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))
    return False


def holds_dicom_directly(folder: Path, entries: list[Path]) -> bool:
    """A DICOMDIR at the root, or DICOM files among the first 50 files directly in the folder."""
    files = [e for e in entries if e.is_file()]
    return dicomdir_of(folder) is not None or any(is_dicom_file(f) for f in files[:50])


def _dicomdir_files(folder: Path, dicomdir: Path, warnings: list[str]) -> list[Path] | None:
    """The files a DICOMDIR lists, or None (with a warning naming it) when it cannot be used."""
    try:
        records = pydicom.dcmread(dicomdir).DirectoryRecordSequence
        ids = [r.ReferencedFileID for r in records if "ReferencedFileID" in r]
        listed = [folder.joinpath(*([i] if isinstance(i, str) else list(i))) for i in ids]
    except Exception as e:  # pydicom raises many types on a damaged DICOMDIR
        warnings.append(f"{dicomdir}: DICOMDIR cannot be read ({type(e).__name__}: {str(e)[:100]}); "
                        f"walked the folder tree instead")
        return None
    missing = [p for p in listed if not p.is_file()]
    if missing:
        shown = ", ".join(os.path.relpath(p, folder) for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        warnings.append(f"{dicomdir}: DICOMDIR lists {len(missing)} files that are missing ({shown}); "
                        f"walked the folder tree instead")
        return None
    if not listed:
        warnings.append(f"{dicomdir}: DICOMDIR lists no files; walked the folder tree instead")
        return None
    return listed


def find_dicom_files(folder: str | os.PathLike) -> tuple[list[Path], list[str]]:
    """(the DICOM files of the input ``folder``, warnings): the DICOMDIR's listing when it is whole,
    else every DICOM file of the tree."""
    folder = Path(folder)
    if not os.access(folder, os.R_OK | os.X_OK):
        raise A3DError(f"{folder}: folder cannot be read (permission denied)")
    warnings: list[str] = []
    dicomdir = dicomdir_of(folder)
    listed = _dicomdir_files(folder, dicomdir, warnings) if dicomdir else None
    return (listed if listed is not None else walk_dicom(folder, warnings)), warnings
