"""What the volume-level evaluation needs after an import: LUNA16 CSVs and the volumes of each split.

- ``luna16/annotations_<split>.csv``: ``seriesuid,coordX,coordY,coordZ,diameter_mm`` (world LPS mm)
  of every imported lesion, the input of ``a3d eval3d``;
- ``luna16/annotations_excluded_<split>.csv``: the components dropped by ``--min-size`` (same
  columns), for ``a3d eval3d --excluded``: a candidate on a speck is neither a hit nor a false positive;
- ``luna16/seriesuids_<split>.csv``: the split's scans, one per line (``--scans``);
- ``volumes/<split>/``: a symbolic link to each source image of the split (a copy where links are
  not allowed), named as the source, so that ``a3d predict volumes/test`` gives each scan the
  seriesuid the annotations use; a detached header (``.nhdr``, ``.mhd``) brings the links of its
  data files, at the same place relative to it.

The seriesuid is the rule of ``a3d predict``'s ``candidates_luna16.csv``: the DICOM
SeriesInstanceUID, else the scan name (the volume file name without ``.nii.gz``, ``.nrrd``, ...).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path
from typing import Sequence

from a3d.data.importer.plan import SPLIT_NAMES
from a3d.data.scans import volume_files, volume_kind
from a3d.io import atomic_dir, write_text_atomic

COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")

__all__ = ["COLUMNS", "write_luna16", "link_volumes"]


def _csv(columns: Sequence[str], rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write_luna16(root: Path, records: Sequence[dict]) -> None:
    """The three CSVs of every split from the cases' records (``seriesuid``, ``split``, ``findings``,
    ``excluded``), cases in the order given."""
    for code, name in SPLIT_NAMES.items():
        cases = [r for r in records if r["split"] == code]
        found = [{"seriesuid": r["seriesuid"], **f} for r in cases for f in r["findings"]]
        excluded = [{"seriesuid": r["seriesuid"], **f} for r in cases for f in r["excluded"]]
        write_text_atomic(root / "luna16" / f"annotations_{name}.csv", _csv(COLUMNS, found))
        write_text_atomic(root / "luna16" / f"annotations_excluded_{name}.csv", _csv(COLUMNS, excluded))
        write_text_atomic(root / "luna16" / f"seriesuids_{name}.csv",
                          _csv(["seriesuid"], [{"seriesuid": r["seriesuid"]} for r in cases]))


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst, target_is_directory=src.is_dir())
    except OSError:  # no symbolic links here (e.g. Windows without the privilege): copy
        if src.is_dir():
            shutil.copytree(src, dst)
        else:
            shutil.copy2(src, dst)


def _link_data_files(header: Path, folder: Path) -> None:
    """The data files of a detached header, linked where the header's relative names find them
    (absolute names, or names leading out of the header's folder, need no link: they still resolve
    or cannot be mirrored)."""
    for data in volume_files(header, volume_kind(header))[1:]:
        rel = Path(os.path.relpath(data, header.parent))
        if not rel.parts or rel.parts[0] == ".." or (folder / rel).exists():
            continue
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        _link(data, folder / rel)


def link_volumes(root: Path, records: Sequence[dict]) -> None:
    """``root/volumes/<split>/`` holding each case's source image (``image``), replaced whole."""
    with atomic_dir(root / "volumes") as tmp:
        for code, name in SPLIT_NAMES.items():
            folder = tmp / name
            folder.mkdir()
            for r in records:
                if r["split"] == code:
                    src = Path(r["image"])
                    _link(src, folder / src.name)
                    _link_data_files(src, folder)
