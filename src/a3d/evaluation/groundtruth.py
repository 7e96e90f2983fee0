"""Ground truth for the FROC: DeepLesion lesion records grouped per key slice (image).

Records are duck typed (the LesionRecord of ``docs/interfaces.md``; this module never imports
``a3d.data``). Attributes read: ``image_id`` (or ``file_name`` without its suffix), ``box``
(0-based x1 y1 x2 y2), ``diameters_px`` (long, short), ``spacing`` (x, y mm/px, z = slice interval
mm), ``lesion_type`` (-1..8), ``noisy``, ``split`` (1 train, 2 val, 3 test) and optionally ``line``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Iterable, Sequence

import numpy as np

from a3d.errors import A3DError

SPLITS = {"train": 1, "val": 2, "validation": 2, "test": 3}
SPLIT_NAMES = {1: "train", 2: "val", 3: "test"}


def split_code(split: int | str | None) -> int | None:
    """1/2/3 from 1/2/3 or "train"/"val"/"validation"/"test"; None stays None."""
    if split is None:
        return None
    if isinstance(split, str):
        key = split.strip().lower()
        if key.isdigit():
            split = int(key)
        elif key in SPLITS:
            return SPLITS[key]
        else:
            raise A3DError(f"unknown split {split!r}: expected train, val or test (or 1, 2, 3)")
    if int(split) not in (1, 2, 3):
        raise A3DError(f"unknown split {split!r}: expected train, val or test (or 1, 2, 3)")
    return int(split)


@dataclass
class ImageGroundTruth:
    """The lesions of one key slice. ``diameters_mm``: long diameter (px x x-spacing)."""

    image_id: str
    boxes: np.ndarray  # (G, 4) float64
    lesion_types: np.ndarray  # (G,) int
    diameters_mm: np.ndarray  # (G,) float64, NaN when unknown
    slice_interval: float  # mm, NaN when unknown
    lines: list[int] = field(default_factory=list)


@dataclass
class GroundTruth:
    images: list[ImageGroundTruth]
    split: int | None = None

    def __post_init__(self) -> None:
        self.index = {im.image_id: k for k, im in enumerate(self.images)}

    @property
    def image_ids(self) -> list[str]:
        return [im.image_id for im in self.images]

    @property
    def n_lesions(self) -> int:
        return int(sum(len(im.boxes) for im in self.images))

    def __len__(self) -> int:
        return len(self.images)


def _image_id(r) -> str:
    iid = getattr(r, "image_id", None)
    if iid:
        return str(iid)
    fn = getattr(r, "file_name", None)
    if not fn:
        raise A3DError(f"lesion record {getattr(r, 'line', '?')}: has neither image_id nor file_name")
    return PurePath(str(fn)).stem


def _get(r, name, default=None):
    return getattr(r, name, default)


def ground_truth_from_records(
    records: Iterable, split: int | str | None = None, drop_noisy: bool = True
) -> GroundTruth:
    """Group lesion records per image (key slice), optionally keeping one split.

    Rows flagged ``noisy`` are dropped by default (authors and MULAN do this); an image whose only
    lesions are noisy is then not part of the evaluation. Images keep the order of their first
    record, lesions the record order.
    """
    want = split_code(split)
    groups: dict[str, list] = {}
    for r in records:
        if want is not None and int(_get(r, "split", -1)) != want:
            continue
        if drop_noisy and bool(_get(r, "noisy", False)):
            continue
        groups.setdefault(_image_id(r), []).append(r)
    images = []
    for iid, rs in groups.items():
        boxes = []
        for r in rs:
            b = np.asarray(_get(r, "box"), dtype=np.float64).reshape(-1)
            if b.shape != (4,) or not np.isfinite(b).all() or b[2] < b[0] or b[3] < b[1]:
                raise A3DError(
                    f"lesion record line {_get(r, 'line', '?')} ({iid}): box must be 4 finite numbers with "
                    f"x2 >= x1 and y2 >= y1, got {b.tolist()}"
                )
            boxes.append(b)
        types = np.array([int(_get(r, "lesion_type", -1)) for r in rs], dtype=np.int64)
        diam = []
        for r in rs:
            d = _get(r, "diameters_px")
            sp = _get(r, "spacing")
            try:
                diam.append(float(np.asarray(d, dtype=np.float64).reshape(-1)[0]) * float(np.asarray(sp).reshape(-1)[0]))
            except (TypeError, IndexError, ValueError):
                diam.append(float("nan"))
        sp0 = _get(rs[0], "spacing")
        try:
            interval = float(np.asarray(sp0, dtype=np.float64).reshape(-1)[2])
        except (TypeError, IndexError, ValueError):
            interval = float("nan")
        images.append(
            ImageGroundTruth(
                image_id=iid,
                boxes=np.stack(boxes),
                lesion_types=types,
                diameters_mm=np.array(diam, dtype=np.float64),
                slice_interval=interval,
                lines=[int(_get(r, "line", -1)) for r in rs],
            )
        )
    return GroundTruth(images, want)


def ground_truth_from_boxes(image_ids: Sequence[str], boxes: Sequence) -> GroundTruth:
    """Minimal ground truth from ids and per-image (G, 4) boxes (no types, diameters, intervals)."""
    ims = []
    for iid, b in zip(image_ids, boxes):
        b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
        n = len(b)
        ims.append(ImageGroundTruth(str(iid), b, np.full(n, -1), np.full(n, np.nan), float("nan")))
    return GroundTruth(ims)
