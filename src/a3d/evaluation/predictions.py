"""Predictions files: one JSON document per evaluated split, plus a flat CSV export.

JSON (the format ``a3d eval`` reads and writes; ``save_predictions`` writes it for any suffix but
``.csv``)::

    {"format": "a3d-predictions", "version": 1,
     "images": [{"image_id": "000001_01_01_109",
                 "boxes": [[x1, y1, x2, y2], ...],      # 0-based pixels, inclusive, x2 >= x1, y2 >= y1
                 "scores": [0.97, ...]},                 # one finite number per box
                {"image_id": "000002_01_01_050", "boxes": [], "scores": []}, ...]}

Every evaluated image is listed, including those with no prediction, so "no detection" and
"not evaluated" differ. Image ids appear once each.

CSV (``.csv`` suffix; for spreadsheets and other tools): header ``image_id,x1,y1,x2,y2,score``,
one row per box. A CSV cannot list images without boxes: when a CSV is scored, images of the split
that it does not name count as images with no prediction (the one documented difference).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from a3d.errors import A3DError
from a3d.io import write_text_atomic

FORMAT = "a3d-predictions"
VERSION = 1
CSV_HEADER = ("image_id", "x1", "y1", "x2", "y2", "score")


@dataclass
class ImagePredictions:
    """Detections on one key slice: ``boxes`` (N, 4) 0-based x1 y1 x2 y2, ``scores`` (N,), optional masks."""

    image_id: str
    boxes: np.ndarray
    scores: np.ndarray
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.image_id = str(self.image_id)
        b = np.asarray(self.boxes, dtype=np.float64)
        self.boxes = b.reshape(0, 4) if b.size == 0 else b
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)


def validate_predictions(preds: Sequence[ImagePredictions], source: str = "predictions") -> None:
    """Raise A3DError naming ``source`` and the image for duplicate ids, bad shapes, x2 < x1, NaN."""
    seen: dict[str, int] = {}
    for k, p in enumerate(preds):
        where = f"{source}: image {k} ({p.image_id!r})"
        if not p.image_id:
            raise A3DError(f"{source}: image {k}: empty image_id")
        if p.image_id in seen:
            raise A3DError(f"{where}: image id repeated (first at image {seen[p.image_id]}); list each image once")
        seen[p.image_id] = k
        b, s = p.boxes, p.scores
        if b.ndim != 2 or b.shape[1] != 4:
            raise A3DError(f"{where}: boxes must be N x 4 (x1 y1 x2 y2), got shape {b.shape}")
        if b.shape[0] != s.shape[0]:
            raise A3DError(f"{where}: {b.shape[0]} boxes but {s.shape[0]} scores")
        bad = np.nonzero(~np.isfinite(b).all(axis=1))[0]
        if bad.size:
            raise A3DError(f"{where}, box {bad[0]}: coordinates must be finite numbers, got {b[bad[0]].tolist()}")
        bad = np.nonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))[0]
        if bad.size:
            raise A3DError(f"{where}, box {bad[0]}: expected x2 >= x1 and y2 >= y1, got {b[bad[0]].tolist()}")
        bad = np.nonzero(~np.isfinite(s))[0]
        if bad.size:
            raise A3DError(f"{where}, box {bad[0]}: score must be a finite number, got {s[bad[0]]}")


def predictions_to_json(preds: Sequence[ImagePredictions]) -> str:
    validate_predictions(preds)
    images = [
        {"image_id": p.image_id, "boxes": [[float(v) for v in row] for row in p.boxes], "scores": [float(v) for v in p.scores]}
        for p in preds
    ]
    lines = [f'{{"format": "{FORMAT}", "version": {VERSION}, "images": [']
    lines.append(",\n".join(json.dumps(im) for im in images))
    lines.append("]}\n")
    return "\n".join(lines)


def predictions_to_csv(preds: Sequence[ImagePredictions]) -> str:
    validate_predictions(preds)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_HEADER)
    for p in preds:
        for box, score in zip(p.boxes, p.scores):
            w.writerow([p.image_id, *(repr(float(v)) for v in box), repr(float(score))])
    return buf.getvalue()


def save_predictions(path: str | os.PathLike, preds: Sequence[ImagePredictions]) -> Path:
    """Write ``preds`` atomically: CSV when ``path`` ends in .csv, else the JSON document."""
    path = Path(path)
    text = predictions_to_csv(preds) if path.suffix.lower() == ".csv" else predictions_to_json(preds)
    write_text_atomic(path, text)
    return path


def load_predictions(path: str | os.PathLike) -> list[ImagePredictions]:
    """Read a predictions file (JSON document, or CSV by suffix); A3DError names file and image/row."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise A3DError(f"{path}: predictions file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise A3DError(f"{path}: cannot read predictions file ({e})") from None
    if not text.strip():
        raise A3DError(f"{path}: predictions file is empty")
    if path.suffix.lower() == ".csv":
        preds = _parse_csv(text, str(path))
    else:
        preds = _parse_json(text, str(path))
    validate_predictions(preds, str(path))
    return preds


def _parse_json(text: str, src: str) -> list[ImagePredictions]:
    try:
        doc = json.loads(text, parse_constant=lambda c: float(c))
    except json.JSONDecodeError as e:
        raise A3DError(f"{src}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise A3DError(f'{src}: expected a JSON object with "format": "{FORMAT}"')
    if doc.get("version") != VERSION:
        raise A3DError(f'{src}: unsupported "version" {doc.get("version")!r}, expected {VERSION}')
    images = doc.get("images")
    if not isinstance(images, list):
        raise A3DError(f'{src}: expected "images" to be a list')
    out = []
    for k, im in enumerate(images):
        if not isinstance(im, dict):
            raise A3DError(f"{src}: image {k}: expected an object with image_id, boxes, scores")
        iid = im.get("image_id")
        if not isinstance(iid, str) or not iid:
            raise A3DError(f"{src}: image {k}: missing or non-string image_id")
        boxes, scores = im.get("boxes"), im.get("scores")
        if not isinstance(boxes, list) or not isinstance(scores, list):
            raise A3DError(f"{src}: image {k} ({iid!r}): boxes and scores must be lists")
        try:
            b = np.array(boxes, dtype=np.float64)
            s = np.array(scores, dtype=np.float64)
        except (TypeError, ValueError):
            raise A3DError(f"{src}: image {k} ({iid!r}): boxes must be lists of 4 numbers and scores numbers") from None
        if b.size == 0 and len(boxes) == 0:
            b = b.reshape(0, 4)
        if b.ndim != 2 or b.shape[1] != 4:
            raise A3DError(f"{src}: image {k} ({iid!r}): each box must be 4 numbers x1 y1 x2 y2")
        if s.ndim != 1:
            raise A3DError(f"{src}: image {k} ({iid!r}): scores must be a flat list of numbers")
        out.append(ImagePredictions(iid, b, s))
    return out


def _parse_csv(text: str, src: str) -> list[ImagePredictions]:
    rows = csv.reader(io.StringIO(text))
    header = next(rows, None)
    if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
        raise A3DError(f"{src}: line 1: expected the header {','.join(CSV_HEADER)}")
    groups: dict[str, tuple[list, list]] = {}
    for line, row in enumerate(rows, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != 6:
            raise A3DError(f"{src}: line {line}: expected 6 fields {','.join(CSV_HEADER)}, got {len(row)}")
        iid = row[0].strip()
        if not iid:
            raise A3DError(f"{src}: line {line}: empty image_id")
        try:
            vals = [float(c) for c in row[1:]]
        except ValueError:
            raise A3DError(f"{src}: line {line} ({iid!r}): x1,y1,x2,y2,score must be numbers, got {row[1:]}") from None
        if not all(math.isfinite(v) for v in vals):
            raise A3DError(f"{src}: line {line} ({iid!r}): values must be finite, got {row[1:]}")
        if vals[2] < vals[0] or vals[3] < vals[1]:
            raise A3DError(f"{src}: line {line} ({iid!r}): expected x2 >= x1 and y2 >= y1, got {vals[:4]}")
        b, s = groups.setdefault(iid, ([], []))
        b.append(vals[:4])
        s.append(vals[4])
    return [ImagePredictions(iid, np.array(b).reshape(-1, 4), np.array(s)) for iid, (b, s) in groups.items()]


def complete_predictions(preds: Iterable[ImagePredictions], image_ids: Iterable[str]) -> list[ImagePredictions]:
    """One entry per id of ``image_ids``, in that order: its entry in ``preds``, or an empty one
    (no boxes, no scores) for an image nothing was predicted on."""
    by_id = {p.image_id: p for p in preds}
    return [by_id[i] if i in by_id else ImagePredictions(i, np.zeros((0, 4)), np.zeros(0)) for i in image_ids]
