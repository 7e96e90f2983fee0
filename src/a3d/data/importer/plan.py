"""Numbering and split of the imported cases.

Each case (one volume) becomes one patient with one study and one series: patient numbers 1..N in
the order of the case names, study 1, series 1 (``Images_png/000007_01_01/``). The split is at
patient level: seeded 70/15/15 (:func:`a3d.data.synth.split_codes`: at least one validation and
one test patient when N >= 3), or given by a CSV ``case,split`` (``train``/``val``/``test`` or
1/2/3) naming every case.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from a3d.data.synth import split_codes
from a3d.errors import A3DError

SPLIT_NAMES = {1: "train", 2: "val", 3: "test"}
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3, "1": 1, "2": 2, "3": 3}

__all__ = ["Placement", "SPLIT_NAMES", "plan_cases", "read_split_file"]


@dataclass(frozen=True)
class Placement:
    """Where a case goes: its invented DeepLesion numbering and its split (1 train, 2 val, 3 test)."""

    patient: int
    split: int
    study: int = 1
    series: int = 1

    @property
    def series_dir(self) -> str:
        return f"{self.patient:06d}_{self.study:02d}_{self.series:02d}"


def read_split_file(path: str | os.PathLike, names: Sequence[str]) -> dict[str, int]:
    """``case,split`` rows (a header line ``case,split``) -> {case: code}; every case of ``names``
    must be listed, and only those."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(i, r) for i, r in enumerate(csv.reader(f), 1) if any(v.strip() for v in r)]
    except OSError as e:
        raise A3DError(f"{path}: split file cannot be read ({e.strerror or e})") from None
    if not rows or [v.strip() for v in rows[0][1][:2]] != ["case", "split"]:
        raise A3DError(f"{path}: line 1: expected the header case,split")
    known, out = set(names), {}
    for line, r in rows[1:]:
        if len(r) < 2:
            raise A3DError(f"{path}: line {line}: expected case,split")
        case, split = r[0].strip(), r[1].strip().lower()
        if case not in known:
            raise A3DError(f"{path}: line {line}: case {case!r} is not in the source folder")
        if split not in _SPLIT_CODES:
            raise A3DError(f"{path}: line {line}: split {r[1]!r}: expected train, val or test")
        if case in out:
            raise A3DError(f"{path}: line {line}: case {case!r} listed twice")
        out[case] = _SPLIT_CODES[split]
    missing = [n for n in names if n not in out]
    if missing:
        raise A3DError(f"{path}: case {missing[0]!r} (and {len(missing) - 1} more) not listed; "
                       "the split file must name every case")
    return out


def plan_cases(names: Sequence[str], seed: int, split_file: str | os.PathLike | None = None) -> dict[str, Placement]:
    """{case name: Placement} for the cases ``names`` (sorted, as :func:`find_cases` gives them)."""
    if split_file is not None:
        codes = read_split_file(split_file, names)
        splits = [codes[n] for n in names]
    else:
        splits = split_codes(len(names), np.random.default_rng(int(seed)))
    if len(names) > 999_999:
        raise A3DError(f"{len(names)} cases: at most 999,999 (6-digit patient index)")
    return {n: Placement(patient=i + 1, split=s) for i, (n, s) in enumerate(zip(names, splits))}
