"""DeepLesion's ``DL_info.csv``: one validated :class:`LesionRecord` per lesion row.

Reading never touches images. Pixel coordinates (RECIST end points, boxes) are made 0-based
(the file's are 1-based); slice indices stay as in the PNG file names. Parsing is column-wise
(one ``float`` per number, arrays built per column), so the full 32,735-row file loads in a
fraction of a second; any malformed row raises :class:`a3d.errors.A3DError` naming the file,
the 1-based line and the column.
"""

from __future__ import annotations

import csv
import gc
import io
import logging
import os
import re
import warnings
from itertools import repeat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from a3d.errors import A3DError
from a3d.io import atomic_path

log = logging.getLogger(__name__)

__all__ = [
    "COLUMNS",
    "SPLITS",
    "LesionRecord",
    "read_dl_info",
    "group_by_key_slice",
    "select_split",
    "format_dl_info_row",
    "write_dl_info",
]

#: The 18 columns of DeepLesion's DL_info.csv, in order.
COLUMNS = (
    "File_name",
    "Patient_index",
    "Study_index",
    "Series_ID",
    "Key_slice_index",
    "Measurement_coordinates",
    "Bounding_boxes",
    "Lesion_diameters_Pixel_",
    "Normalized_lesion_location",
    "Coarse_lesion_type",
    "Possibly_noisy",
    "Slice_range",
    "Spacing_mm_px_",
    "Image_size",
    "DICOM_windows",
    "Patient_gender",
    "Patient_age",
    "Train_Val_Test",
)

#: Split name -> Train_Val_Test codes (the official patient-level split).
SPLITS = {"train": (1,), "val": (2,), "test": (3,), "all": (1, 2, 3)}

_FILE_RE = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)\.png$")


@dataclass(slots=True, eq=False)
class LesionRecord:
    """One DL_info.csv row (one lesion); pixel coordinates are 0-based."""

    line: int  # 1-based line of the row in the CSV (header is line 1)
    file_name: str  # "000001_01_01_109.png"
    patient: int
    study: int
    series: int
    key_slice: int  # as in the PNG file name
    recist: np.ndarray  # float32 (8,): long x1 y1 x2 y2, short x3 y3 x4 y4
    box: np.ndarray  # float32 (4,): x1 y1 x2 y2
    diameters_px: np.ndarray  # float32 (2,): long, short
    location: np.ndarray  # float32 (3,): normalised x y z
    lesion_type: int  # -1..8
    noisy: bool
    slice_range: tuple[int, int]  # first, last slice stored in the folder
    spacing: np.ndarray  # float32 (3,): x, y mm/px, z = slice interval mm (NaN when unknown)
    image_size: tuple[int, int]  # H, W
    window: tuple[float, float]  # DICOM window min, max HU
    gender: str
    age: float | None
    split: int  # 1 train, 2 val, 3 test

    @property
    def series_dir(self) -> str:
        """The image folder name, e.g. ``000001_01_01``."""
        return self.file_name.rsplit("_", 1)[0]

    @property
    def image_id(self) -> str:
        """The key slice's id, e.g. ``000001_01_01_109``."""
        return self.file_name[:-4] if self.file_name.endswith(".png") else self.file_name

    @property
    def slice_interval(self) -> float:
        return float(self.spacing[2])

    @property
    def diameters_mm(self) -> np.ndarray:
        return (self.diameters_px * self.spacing[0]).astype(np.float32)

    def __repr__(self) -> str:  # short: records are printed in error messages and logs
        return f"LesionRecord(line={self.line}, file_name={self.file_name!r}, box={self.box.tolist()})"


# (column, number of values) for the multi-number fields
_VECTORS = {
    "Measurement_coordinates": 8,
    "Bounding_boxes": 4,
    "Lesion_diameters_Pixel_": 2,
    "Normalized_lesion_location": 3,
    "Slice_range": 2,
    "Spacing_mm_px_": 3,
    "Image_size": 2,
    "DICOM_windows": 2,
}
_INTS = ("Patient_index", "Study_index", "Series_ID", "Key_slice_index", "Coarse_lesion_type",
         "Possibly_noisy", "Train_Val_Test")


def _err(path, line, column, msg) -> A3DError:
    return A3DError(f"{path}: line {line}, column {column}: {msg}")


def _fast_vectors(values, n) -> np.ndarray | None:
    """float64 (len(values), n) or None when any field is malformed (the caller then finds it)."""
    commas = np.fromiter(map(str.count, values, repeat(",")), dtype=np.int64, count=len(values))
    if not (commas == n - 1).all():
        return None
    joined = ",".join(values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:  # C-level text parsing; any junk -> warning/ValueError -> None
            arr = np.fromstring(joined, dtype=np.float64, sep=",")
        except (ValueError, DeprecationWarning):
            return None
    if arr.size != n * len(values):
        return None
    return arr.reshape(len(values), n)


def _parse_vector_column(path, column, values, lines, n) -> np.ndarray:
    """Parse a column of comma-separated numbers into float64 (rows, n); slow path names the row."""
    uniq = list(dict.fromkeys(values))
    if 2 * len(uniq) < len(values):  # repeated per series (spacing, sizes, windows, ranges): parse once
        arr = _fast_vectors(uniq, n)
        if arr is not None:
            pos = {v: i for i, v in enumerate(uniq)}
            return arr[np.fromiter(map(pos.__getitem__, values), dtype=np.int64, count=len(values))]
    else:
        arr = _fast_vectors(values, n)
        if arr is not None:
            return arr
    for v, line in zip(values, lines):  # find the culprit
        items = v.split(",")
        if len(items) != n:
            raise _err(path, line, column, f"expected {n} comma-separated numbers, got {v!r}")
        for it in items:
            try:
                float(it)
            except ValueError:
                raise _err(path, line, column, f"expected a number, got {it.strip()!r} in {v!r}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def _parse_int_column(path, column, values, lines) -> np.ndarray:
    try:
        return np.array(list(map(int, values)), dtype=np.int64)
    except ValueError:
        pass
    out = []
    for v, line in zip(values, lines):
        try:
            f = float(v)
        except ValueError:
            raise _err(path, line, column, f"expected an integer, got {v!r}") from None
        if not np.isfinite(f) or f != int(f):
            raise _err(path, line, column, f"expected an integer, got {v!r}")
        out.append(int(f))
    return np.array(out, dtype=np.int64)


def _first_bad(path, lines, bad, column, msg_fn):
    idx = np.flatnonzero(bad)
    if idx.size:
        i = int(idx[0])
        raise _err(path, lines[i], column, msg_fn(i))


def read_dl_info(csv_path: str | os.PathLike) -> list[LesionRecord]:
    """Read and validate a DeepLesion ``DL_info.csv``; see :func:`_read_dl_info`.

    The cyclic garbage collector is paused while the records are built (tens of thousands of small
    objects, none cyclic): that alone saves about a third of the load time.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _read_dl_info(csv_path)
    finally:
        if enabled:
            gc.enable()


def _read_dl_info(csv_path: str | os.PathLike) -> list[LesionRecord]:
    """Read and validate a DeepLesion ``DL_info.csv``; one :class:`LesionRecord` per row, in file order.

    Raises :class:`A3DError` naming the file, line and column for a missing header column, a wrong
    field count, a non-number, an inverted box (x2 < x1 or y2 < y1), a split other than 1/2/3, a
    lesion type outside -1..8, a key slice outside its Slice_range, or a File_name that disagrees
    with the index columns.
    """
    path = Path(csv_path)
    col, lines = _read_columns(path)
    if not lines:
        return []
    col["Spacing_mm_px_"] = _blank_interval_as_nan(col["Spacing_mm_px_"])
    vec = {name: _parse_vector_column(path, name, col[name], lines, k) for name, k in _VECTORS.items()}
    ints = {name: _parse_int_column(path, name, col[name], lines) for name in _INTS}
    _check_values(path, lines, col, vec, ints)
    _unknown_intervals(path, lines, vec["Spacing_mm_px_"])
    ages = _parse_ages(path, col["Patient_age"], lines)
    _check_file_names(path, lines, col["File_name"], ints)
    return _records(lines, col, vec, ints, ages)


def _read_columns(path: Path) -> tuple[dict[str, tuple[str, ...]], list[int]]:
    """The file's text as columns (name -> one string per row) and each row's 1-based first line;
    header and field counts checked."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise A3DError(f"{path}: file not found (expected DeepLesion's DL_info.csv)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise A3DError(f"{path}: cannot read ({e})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise A3DError(f"{path}: empty file (expected a header with {len(COLUMNS)} columns)") from None
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise A3DError(f"{path}: line 1: header lacks column(s) {', '.join(missing)} "
                       f"(expected DeepLesion's {len(COLUMNS)} columns)")
    try:
        rows: list[list[str]] = list(reader)
    except csv.Error as e:
        raise A3DError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
    n_text_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if n_text_lines == len(rows) + 1 and all(rows):
        lines = list(range(2, len(rows) + 2))  # one row per line (DeepLesion's case)
    else:  # blank lines or quoted newlines: recover each row's first line
        rows, lines = _rows_with_lines(text)
    if len(set(map(len, rows))) > 1 or (rows and len(rows[0]) != len(header)):
        for row, ln in zip(rows, lines):
            if len(row) != len(header):
                raise A3DError(f"{path}: line {ln}: expected {len(header)} fields, got {len(row)}")
    if not rows:
        return {}, []
    cols = list(zip(*rows))
    return {name: cols[header.index(name)] for name in COLUMNS}, lines


def _rows_with_lines(text: str) -> tuple[list[list[str]], list[int]]:
    """Non-empty rows after the header and the 1-based line each starts on."""
    reader = csv.reader(io.StringIO(text, newline=""))
    next(reader)
    rows, lines = [], []
    line = reader.line_num
    for row in reader:
        start = line + 1
        line = reader.line_num
        if row:
            rows.append(row)
            lines.append(start)
    return rows, lines


def _blank_interval_as_nan(values: tuple[str, ...]) -> tuple[str, ...]:
    """``"0.7, 0.7, "`` (no slice interval) -> ``"0.7, 0.7, nan"``; other fields unchanged."""
    if not any(v.rstrip().endswith(",") for v in values):
        return values
    return tuple(v.rstrip() + "nan" if v.rstrip().endswith(",") else v for v in values)


def _unknown_intervals(path, lines, spacing: np.ndarray) -> None:
    """A slice interval that is NaN, blank, infinite or <= 0 becomes NaN (unknown): those key slices
    get their key slice repeated as context (the authors' rule), logged once naming the rows."""
    z = spacing[:, 2]
    bad = np.flatnonzero(~(np.isfinite(z) & (z > 0)))
    if bad.size == 0:
        return
    z[bad] = np.nan
    shown = ", ".join(str(lines[i]) for i in bad[:10]) + (f" (+{bad.size - 10} more)" if bad.size > 10 else "")
    log.warning("%s: line(s) %s: Spacing_mm_px_ has no usable slice interval (z); those key slices use "
                "the key slice repeated as context", path, shown)


def _check_values(path, lines, col, vec, ints) -> None:
    """Range checks of the parsed columns; the first bad row raises, naming line and column."""
    for name, arr in vec.items():
        arr = arr[:, :2] if name == "Spacing_mm_px_" else arr  # the slice interval may be unknown
        _first_bad(path, lines, ~np.isfinite(arr).all(1), name, lambda i: "expected finite numbers")
    box = vec["Bounding_boxes"]
    _first_bad(path, lines, box[:, 2] < box[:, 0], "Bounding_boxes",
               lambda i: f"x2 < x1 in {col['Bounding_boxes'][i]!r} (expected x1, y1, x2, y2)")
    _first_bad(path, lines, box[:, 3] < box[:, 1], "Bounding_boxes",
               lambda i: f"y2 < y1 in {col['Bounding_boxes'][i]!r} (expected x1, y1, x2, y2)")
    split = ints["Train_Val_Test"]
    _first_bad(path, lines, (split < 1) | (split > 3), "Train_Val_Test",
               lambda i: f"expected 1, 2 or 3, got {col['Train_Val_Test'][i]!r}")
    ltype = ints["Coarse_lesion_type"]
    _first_bad(path, lines, (ltype < -1) | (ltype > 8) | (ltype == 0), "Coarse_lesion_type",
               lambda i: f"expected -1 or 1..8, got {col['Coarse_lesion_type'][i]!r}")
    noisy = ints["Possibly_noisy"]
    _first_bad(path, lines, (noisy != 0) & (noisy != 1), "Possibly_noisy",
               lambda i: f"expected 0 or 1, got {col['Possibly_noisy'][i]!r}")
    srange = vec["Slice_range"]
    _first_bad(path, lines, (srange != np.round(srange)).any(1) | (srange[:, 1] < srange[:, 0]), "Slice_range",
               lambda i: f"expected two integers first <= last, got {col['Slice_range'][i]!r}")
    key = ints["Key_slice_index"]
    _first_bad(path, lines, (key < srange[:, 0]) | (key > srange[:, 1]), "Key_slice_index",
               lambda i: f"key slice {key[i]} outside Slice_range {col['Slice_range'][i]!r}")
    spacing = vec["Spacing_mm_px_"]
    _first_bad(path, lines, (spacing[:, :2] <= 0).any(1), "Spacing_mm_px_",
               lambda i: f"expected positive pixel spacings x, y, got {col['Spacing_mm_px_'][i]!r}")
    size = vec["Image_size"]
    _first_bad(path, lines, (size <= 0).any(1) | (size != np.round(size)).any(1), "Image_size",
               lambda i: f"expected two positive integers, got {col['Image_size'][i]!r}")


def _parse_ages(path, ages, lines) -> list[float | None]:
    try:
        return [float(a) if a else None for a in ages]
    except ValueError:
        pass
    out: list[float | None] = []
    for i, a in enumerate(ages):
        a = a.strip()
        try:
            out.append(float(a) if a else None)
        except ValueError:
            raise _err(path, lines[i], "Patient_age", f"expected a number or empty, got {a!r}") from None
    return out


def _check_file_names(path, lines, names, ints) -> None:
    """Each File_name must be <patient>_<study>_<series>_<slice>.png of its own index columns."""
    patient, study = ints["Patient_index"].tolist(), ints["Study_index"].tolist()
    series, keyl = ints["Series_ID"].tolist(), ints["Key_slice_index"].tolist()
    expected = [f"{p:06d}_{s:02d}_{se:02d}_{k:03d}.png" for p, s, se, k in zip(patient, study, series, keyl)]
    if expected == list(names):
        return
    for i, (fn, ex) in enumerate(zip(names, expected)):
        if fn == ex:
            continue
        m = _FILE_RE.match(fn)
        if m is None:
            raise _err(path, lines[i], "File_name", f"expected <patient>_<study>_<series>_<slice>.png, got {fn!r}")
        p, s, se, k = map(int, m.groups())
        if p != patient[i] or s != study[i] or se != series[i] or k != keyl[i]:
            raise _err(path, lines[i], "File_name",
                       f"{fn!r} disagrees with Patient_index/Study_index/Series_ID/Key_slice_index "
                       f"({patient[i]}, {study[i]}, {series[i]}, {keyl[i]})")


def _records(lines, col, vec, ints, ages) -> list[LesionRecord]:
    """The checked columns as LesionRecords (pixel coordinates made 0-based)."""
    srange, size, win = vec["Slice_range"], vec["Image_size"], vec["DICOM_windows"]
    columns = (
        lines, col["File_name"], ints["Patient_index"].tolist(), ints["Study_index"].tolist(),
        ints["Series_ID"].tolist(), ints["Key_slice_index"].tolist(),
        (vec["Measurement_coordinates"] - 1).astype(np.float32), (vec["Bounding_boxes"] - 1).astype(np.float32),
        vec["Lesion_diameters_Pixel_"].astype(np.float32), vec["Normalized_lesion_location"].astype(np.float32),
        ints["Coarse_lesion_type"].tolist(), ints["Possibly_noisy"].astype(bool).tolist(),
        list(zip(srange[:, 0].astype(np.int64).tolist(), srange[:, 1].astype(np.int64).tolist())),
        vec["Spacing_mm_px_"].astype(np.float32),
        list(zip(size[:, 0].astype(np.int64).tolist(), size[:, 1].astype(np.int64).tolist())),
        list(zip(win[:, 0].tolist(), win[:, 1].tolist())),
        [g.strip() for g in col["Patient_gender"]], ages, ints["Train_Val_Test"].tolist(),
    )
    return [LesionRecord(*fields) for fields in zip(*columns)]


def select_split(records: Iterable[LesionRecord], split: str) -> list[LesionRecord]:
    """Records of one split: ``train`` (1), ``val`` (2), ``test`` (3) or ``all``."""
    if split not in SPLITS:
        raise A3DError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    codes = SPLITS[split]
    return [r for r in records if r.split in codes]


def group_by_key_slice(records: Iterable[LesionRecord], drop_noisy: bool = False) -> list[list[LesionRecord]]:
    """Lesions grouped per key slice (one group per image), groups in order of first appearance."""
    groups: dict[str, list[LesionRecord]] = {}
    for r in records:
        if drop_noisy and r.noisy:
            continue
        groups.setdefault(r.file_name, []).append(r)
    return list(groups.values())


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(_num(v) for v in values)


def _num(v: float) -> str:
    v = float(v)
    if np.isfinite(v) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.6g}" if abs(v) >= 1e-4 else f"{v:.4g}"


def format_dl_info_row(
    *, patient: int, study: int, series: int, key_slice: int, recist_1based: Sequence[float],
    box_1based: Sequence[float], diameters_px: Sequence[float], location: Sequence[float], lesion_type: int,
    noisy: bool, slice_range: Sequence[int], spacing: Sequence[float], image_size: Sequence[int],
    window: Sequence[float], gender: str, age: float | None, split: int,
) -> list[str]:
    """One CSV row (list of 18 strings) in DeepLesion's formatting (1-based coordinates given)."""
    return [
        f"{patient:06d}_{study:02d}_{series:02d}_{key_slice:03d}.png",
        str(patient), str(study), str(series), str(key_slice),
        _fmt(recist_1based), _fmt(box_1based), _fmt(diameters_px), _fmt(location),
        str(int(lesion_type)), str(int(bool(noisy))), _fmt(slice_range), _fmt(spacing), _fmt(image_size),
        _fmt(window), gender, "" if age is None else _num(age), str(int(split)),
    ]


def write_dl_info(path: str | os.PathLike, rows: Iterable[Sequence[str]]) -> None:
    """Write a DL_info.csv (header + rows) atomically."""
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
