"""Reading the LUNA16-format CSVs: annotations, excluded findings, candidates, the scan list.

Series IDs stay strings (leading zeros and long DICOM UIDs are kept as written, never parsed as
numbers). Files are read with the ``csv`` module (UTF-8, an optional BOM); the header names the
columns (extra columns are ignored, order is free); blank lines are skipped. Every problem is one
:class:`a3d.errors.A3DError` line naming the file, the row (its line number, the header being
line 1) and the column.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from a3d.errors import A3DError
from a3d.evaluation.froc3d import Candidates, Findings

ANNOTATION_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "probability")


def _open_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank row; errors name the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                for fields in reader:
                    if any(v.strip() for v in fields):
                        yield reader.line_num, fields
            except csv.Error as e:
                raise A3DError(f"{path}: row {reader.line_num}: not valid CSV ({e})") from None
    except FileNotFoundError:
        raise A3DError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise A3DError(f"{path}: is a directory, expected a CSV file") from None
    except UnicodeDecodeError as e:
        raise A3DError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _table(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, {column: text}) for each data row, after checking the header has ``columns``."""
    rows = _open_rows(path)
    first = next(rows, None)
    if first is None:
        raise A3DError(f"{path}: empty file, expected a header {','.join(columns)}")
    header = [h.strip() for h in first[1]]
    missing = [c for c in columns if c not in header]
    if missing:
        raise A3DError(
            f"{path}: row {first[0]}: missing column(s) {', '.join(missing)} in the header "
            f"(expected {','.join(columns)}; found {','.join(header)})"
        )
    twice = sorted({c for c in columns if header.count(c) > 1})
    if twice:
        raise A3DError(f"{path}: row {first[0]}: column(s) {', '.join(twice)} appear twice in the header")
    where = {c: header.index(c) for c in columns}
    for line, fields in rows:
        if len(fields) != len(header):
            raise A3DError(f"{path}: row {line}: expected {len(header)} fields as in the header, got {len(fields)}")
        yield line, {c: fields[i].strip() for c, i in where.items()}


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise A3DError(f"{path}: row {line}: column {column}: expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise A3DError(f"{path}: row {line}: column {column}: expected a finite number, got {text!r}")
    return v


def _seriesuid(text: str, path: Path, line: int) -> str:
    if not text:
        raise A3DError(f"{path}: row {line}: column seriesuid: empty")
    return text


def read_findings(path: str | os.PathLike) -> Findings:
    """An annotations CSV (``annotations.csv`` or ``annotations_excluded.csv``): seriesuid,
    coordX, coordY, coordZ (world mm), diameter_mm (> 0, or negative for the 10 mm default)."""
    path = Path(path)
    uids, xyz, diam, lines = [], [], [], []
    for line, r in _table(path, ANNOTATION_COLUMNS):
        uids.append(_seriesuid(r["seriesuid"], path, line))
        xyz.append([_number(r[c], path, line, c) for c in ANNOTATION_COLUMNS[1:4]])
        d = _number(r["diameter_mm"], path, line, "diameter_mm")
        if d == 0:
            raise A3DError(f"{path}: row {line}: column diameter_mm: expected a diameter > 0 mm "
                           "(or a negative number for the 10 mm default), got 0")
        diam.append(d)
        lines.append(line)
    return Findings(tuple(uids), np.array(xyz).reshape(-1, 3), np.array(diam), tuple(lines))


def read_candidates(path: str | os.PathLike) -> Candidates:
    """A candidates CSV: seriesuid, coordX, coordY, coordZ (world mm), probability (any finite score)."""
    path = Path(path)
    uids, xyz, prob = [], [], []
    for line, r in _table(path, CANDIDATE_COLUMNS):
        uids.append(_seriesuid(r["seriesuid"], path, line))
        xyz.append([_number(r[c], path, line, c) for c in CANDIDATE_COLUMNS[1:4]])
        prob.append(_number(r["probability"], path, line, "probability"))
    return Candidates(tuple(uids), np.array(xyz).reshape(-1, 3), np.array(prob))


def read_scan_list(path: str | os.PathLike) -> list[str]:
    """The scans to evaluate: one seriesuid per line (the first field of a CSV row, like LUNA16's
    ``seriesuids.csv``); an optional first line ``seriesuid`` is a header. A repeat is an error."""
    path = Path(path)
    seen: dict[str, int] = {}
    for line, fields in _open_rows(path):
        uid = fields[0].strip()
        if not seen and uid == "seriesuid":
            continue
        if not uid:
            raise A3DError(f"{path}: row {line}: empty seriesuid in the first field")
        if uid in seen:
            raise A3DError(f"{path}: row {line}: seriesuid {uid!r} already listed on row {seen[uid]}")
        seen[uid] = line
    if not seen:
        raise A3DError(f"{path}: no seriesuid listed")
    return list(seen)


def default_scans(annotations: Findings, candidates: Candidates) -> list[str]:
    """The scans named in the annotations or the candidates, in order of first appearance."""
    return list(dict.fromkeys(annotations.seriesuid + candidates.seriesuid))
