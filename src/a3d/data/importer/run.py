"""``a3d data import`` as one call: a source folder of labelled volumes -> a DeepLesion-format root.

Each case is imported on its own and recorded in ``ROOT/import/cases/<case>.json`` (written last,
atomically): a re-run skips the cases whose record matches (same files, sizes and times, same
options and numbering) and redoes the others, so an interrupted import resumes where it stopped.
The tables (``DL_info.csv``, ``import/mapping.csv``, ``luna16/``, ``volumes/``) are rebuilt from
the records at the end of every run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from a3d.data.dl_info import write_dl_info
from a3d.data.importer.lesions import find_lesions
from a3d.data.importer.luna16 import link_volumes, write_luna16
from a3d.data.importer.plan import SPLIT_NAMES, Placement, plan_cases
from a3d.data.importer.series import DEFAULT_CONTEXT_MM, finding, lesion_row, slices_to_write, write_series
from a3d.data.importer.sources import Case, find_cases
from a3d.data.importer.volumes import read_case
from a3d.data.scans import volume_files, volume_kind
from a3d.errors import A3DError
from a3d.io import write_text_atomic

RECORD_FORMAT = 1
MAPPING_COLUMNS = ("case", "image", "label", "seriesuid", "patient", "study", "series", "series_dir", "split",
                   "lesions", "dropped_small", "slices_written", "status", "message")

__all__ = ["ImportOptions", "ImportSummary", "import_volumes"]


@dataclass(frozen=True)
class ImportOptions:
    labels: tuple[int, ...] | None = None  # lesion label values; None: every non-zero value
    min_size_mm3: float = 0.0  # components smaller than this are dropped (and listed as excluded)
    context_mm: float | None = DEFAULT_CONTEXT_MM  # slices kept around key slices; None: every slice
    seed: int = 0  # split seed
    split_file: str | os.PathLike | None = None  # CSV case,split instead of the seeded split
    strict: bool = False  # stop at the first bad case (A3DError) instead of skipping it


@dataclass
class ImportSummary:
    root: Path
    cases: int = 0  # pairs found
    imported: int = 0  # written by this run
    resumed: int = 0  # already done by an earlier run
    lesions: int = 0
    dropped_small: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (case, one-line reason)
    notes: list[str] = field(default_factory=list)  # unpaired files, image warnings
    patients_per_split: dict[str, int] = field(default_factory=dict)


def _stat(path: Path) -> list[int]:
    st = path.stat()
    return [int(st.st_size), int(st.st_mtime_ns)]


def _data_stats(path: Path) -> list[list[int]]:
    """Sizes and times of the data files a detached header (.nhdr, .mhd) names; [] for other inputs."""
    return [_stat(p) for p in volume_files(path, volume_kind(path))[1:]]


def _record_key(case: Case, place: Placement, opts: ImportOptions) -> dict:
    """What a case's outputs depend on: a record with another key is redone."""
    key = {"format": RECORD_FORMAT, "image": str(case.image.resolve()), "label": str(case.label.resolve()),
           "image_stat": _stat(case.image), "label_stat": _stat(case.label),
           "labels": None if opts.labels is None else list(opts.labels), "min_size_mm3": opts.min_size_mm3,
           "context_mm": opts.context_mm, "series_dir": place.series_dir}
    data = {k: _data_stats(p) for k, p in (("image_data_stat", case.image), ("label_data_stat", case.label))}
    return {**key, **{k: v for k, v in data.items() if v}}  # absent for one-file volumes: older records still match


def _record_path(root: Path, case: Case) -> Path:
    return root / "import" / "cases" / f"{case.name}.json"


def _done_record(root: Path, case: Case, key: dict) -> dict | None:
    """The stored record of ``case`` if it matches ``key`` and its slices are still there."""
    try:
        rec = json.loads(_record_path(root, case).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("key") != key:
        return None
    if rec.get("slices_written") and not (root / "Images_png" / key["series_dir"]).is_dir():
        return None
    return rec


def _chosen_values(labels: np.ndarray, case: Case, opts: ImportOptions) -> list[int]:
    present = [int(v) for v in np.unique(labels) if v != 0]
    if not present:
        raise A3DError(f"{case.label}: empty label map (every voxel is 0)")
    if opts.labels is None:
        return present
    chosen = [v for v in opts.labels if v in present]
    if not chosen:
        raise A3DError(f"{case.label}: no voxel labelled {','.join(map(str, opts.labels))} "
                       f"(values present: {','.join(map(str, present[:12]))})")
    return chosen


def _clear_series(root: Path, place: Placement) -> None:
    """Remove what an earlier, different import of this series left (slices, mask files)."""
    shutil.rmtree(root / "Images_png" / place.series_dir, ignore_errors=True)
    for p in (root / "masks_true").glob(f"{place.series_dir}_*.npz"):
        p.unlink()


def _import_case(root: Path, case: Case, place: Placement, opts: ImportOptions, key: dict) -> dict:
    """Read, measure and write one case; returns (and stores) its record."""
    scan, labels = read_case(case)
    found = find_lesions(labels, _chosen_values(labels, case, opts), scan.spacing)
    kept = [les for les in found if les.volume_mm3 >= opts.min_size_mm3]
    dropped = [les for les in found if les.volume_mm3 < opts.min_size_mm3]
    slices = slices_to_write(kept, scan.shape[0], scan.spacing[2], opts.context_mm)
    _clear_series(root, place)
    write_series(root, place, scan, kept, slices)
    rec = {"key": key, "case": case.name, "image": str(case.image), "label": str(case.label),
           "seriesuid": scan.series_uid or scan.name, "rows": [lesion_row(les, place, scan) for les in kept],
           "findings": [finding(les, scan) for les in kept], "excluded": [finding(les, scan) for les in dropped],
           "slices_written": len(slices), "warnings": [f"{case.image}: {w}" for w in scan.warnings]}
    write_text_atomic(_record_path(root, case), json.dumps(rec) + "\n")
    return rec


def _mapping_csv(rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(MAPPING_COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _mapping_row(case: Case, place: Placement, rec: dict | None, error: str | None) -> dict:
    row = {"case": case.name, "image": str(case.image), "label": str(case.label), "patient": place.patient,
           "study": place.study, "series": place.series, "series_dir": place.series_dir,
           "split": SPLIT_NAMES[place.split]}
    if rec is None:
        return {**row, "status": "skipped", "message": error}
    return {**row, "seriesuid": rec["seriesuid"], "lesions": len(rec["findings"]),
            "dropped_small": len(rec["excluded"]), "slices_written": rec["slices_written"], "status": "imported"}


def _assemble(root: Path, records: list[dict], mapping: list[dict]) -> None:
    """DL_info.csv, import/mapping.csv, luna16/ and volumes/ from the cases' records."""
    rows = [r[:-1] + [str(rec["split"])] for rec in records for r in rec["rows"]]
    write_dl_info(root / "DL_info.csv", rows)
    write_text_atomic(root / "import" / "mapping.csv", _mapping_csv(mapping))
    write_luna16(root, records)
    link_volumes(root, records)


def import_volumes(src: str | os.PathLike, out: str | os.PathLike, opts: ImportOptions = ImportOptions(),
                   progress: Callable[[int, int, str, str], None] | None = None) -> ImportSummary:
    """Import the labelled volumes of ``src`` into the DeepLesion-format root ``out``.

    ``progress(done, total, case, line)`` after each case. A bad case is skipped and listed in the
    summary (``opts.strict``: raised). A3DError when no case could be imported.
    """
    root = Path(out)
    cases, notes = find_cases(src)
    placements = plan_cases([c.name for c in cases], opts.seed, opts.split_file)
    summary = ImportSummary(root, cases=len(cases), notes=list(notes))
    records, mapping = [], []
    for i, case in enumerate(cases, 1):
        place = placements[case.name]
        rec, error = None, None
        try:
            key = _record_key(case, place, opts)
            rec = _done_record(root, case, key)
            resumed = rec is not None
            if rec is None:
                rec = _import_case(root, case, place, opts, key)
        except A3DError as e:
            if opts.strict:
                raise
            error = str(e)
            summary.skipped.append((case.name, error))
        if rec is not None:
            summary.resumed += resumed
            summary.imported += not resumed
            summary.lesions += len(rec["findings"])
            summary.dropped_small += len(rec["excluded"])
            summary.notes += rec["warnings"]
            records.append({**rec, "split": place.split})
        mapping.append(_mapping_row(case, place, rec, error))
        if progress is not None:
            status = f"skipped: {error}" if error else \
                f"{'already imported' if resumed else 'imported'}: {len(rec['findings'])} lesion(s)"
            progress(i, len(cases), case.name, status)
    if not records:
        raise A3DError(f"{src}: none of the {len(cases)} cases could be imported (first: {summary.skipped[0][1]})")
    _assemble(root, records, mapping)
    summary.patients_per_split = {n: sum(r["split"] == c for r in records) for c, n in SPLIT_NAMES.items()}
    return summary
