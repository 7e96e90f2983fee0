"""Finding the image/label pairs of a source folder (the naming rules of ``a3d data import``).

Layouts, tried in this order:

1. ``SRC/dataset.json`` with a ``training`` list (Medical Segmentation Decathlon): its
   ``{"image", "label"}`` pairs, paths relative to SRC.
2. ``SRC/imagesTr/`` + ``SRC/labelsTr/`` (MSD without dataset.json, nnU-Net): label ``X.nii.gz``
   pairs with image ``X.nii.gz`` or ``X_0000.nii.gz`` (nnU-Net's first channel).
3. ``SRC/images/`` + ``SRC/labels/``: equal names (label ``X.nii.gz`` for image ``X.nii.gz``, or
   for the DICOM series folder ``images/X/``).
4. A flat folder of pairs: image ``X.nii.gz`` (or DICOM folder ``X/``) with label
   ``X_seg.nii.gz``, ``X_label.nii.gz``, ``X_labels.nii.gz`` or ``X_mask.nii.gz`` (``.nii`` too).

An image without a label (or a label without an image) is not imported and is reported by name.
A case is named after its image (:func:`a3d.data.scans.scan_name`: ``X`` for ``X.nii.gz``), the
name the split file, the mapping and the messages use.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from a3d.data.scans import is_nifti, scan_name
from a3d.errors import A3DError

LABEL_SUFFIXES = ("_seg", "_label", "_labels", "_mask")

__all__ = ["Case", "LABEL_SUFFIXES", "find_cases"]


@dataclass(frozen=True)
class Case:
    """One labelled volume: ``image`` (NIfTI file or DICOM series folder) and ``label`` (NIfTI)."""

    name: str
    image: Path
    label: Path


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise A3DError(f"{folder}: folder cannot be read ({e.strerror or e})") from None


def _stem(path: Path) -> str:
    """The name without .nii/.nii.gz (unsanitised: pairing compares file names)."""
    name = path.name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def _from_dataset_json(src: Path, path: Path) -> tuple[list[Case], list[str]]:
    try:
        desc = json.loads(path.read_text(encoding="utf-8"))
        training = desc["training"]
        pairs = [(src / str(t["image"]), src / str(t["label"])) for t in training]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise A3DError(f"{path}: expected an MSD dataset.json with a 'training' list of "
                       f"{{\"image\", \"label\"}} entries ({type(e).__name__}: {e})") from None
    cases, notes = [], []
    for image, label in pairs:
        missing = [p for p in (image, label) if not p.exists()]
        if missing:
            notes.append(f"{missing[0]}: listed in {path.name} but not found; case not imported")
        else:
            cases.append(Case(scan_name(image), image, label))
    return cases, notes


def _pair_by_name(images: Path, labels: Path, channel_suffix: bool) -> tuple[list[Case], list[str]]:
    """Cases of images/ + labels/ folders whose names agree (``X_0000`` allowed when ``channel_suffix``)."""
    by_stem = {_stem(p): p for p in _entries(images) if is_nifti(p) or p.is_dir()}
    cases, notes, used = [], [], set()
    for label in (p for p in _entries(labels) if is_nifti(p)):
        stem = _stem(label)
        key = stem if stem in by_stem else f"{stem}_0000" if channel_suffix and f"{stem}_0000" in by_stem else None
        if key is None:
            notes.append(f"{label}: no image named {stem} in {images}; label not imported")
            continue
        used.add(key)
        cases.append(Case(scan_name(by_stem[key]), by_stem[key], label))
    notes += [f"{p}: no label named {_stem(p)} in {labels}; image not imported"
              for k, p in by_stem.items() if k not in used]
    return cases, notes


def _flat_pairs(src: Path) -> tuple[list[Case], list[str]]:
    entries = _entries(src)
    labels = {}
    for p in entries:
        stem = _stem(p)
        for suf in LABEL_SUFFIXES:
            if is_nifti(p) and stem.endswith(suf) and len(stem) > len(suf):
                labels[stem[: -len(suf)]] = p
    label_files = set(labels.values())
    cases, notes = [], []
    for p in entries:
        if p in label_files or not (is_nifti(p) or p.is_dir()):
            continue
        label = labels.pop(_stem(p), None)
        if label is not None:
            cases.append(Case(scan_name(p), p, label))
        elif is_nifti(p):
            notes.append(f"{p}: no label file {_stem(p)}{{{','.join(LABEL_SUFFIXES)}}}.nii.gz beside it; "
                         "image not imported")
    notes += [f"{p}: no image {stem}.nii.gz beside this label; label not imported" for stem, p in labels.items()]
    return cases, notes


def find_cases(src: str | os.PathLike) -> tuple[list[Case], list[str]]:
    """The labelled cases of ``src`` sorted by name, and notes naming the files left unpaired.

    A3DError when ``src`` is not a folder, holds no pair, or two cases share a name."""
    src = Path(src)
    if not src.is_dir():
        raise A3DError(f"{src}: not a folder (expected imagesTr/ + labelsTr/, images/ + labels/, or image/label "
                       "NIfTI pairs such as X.nii.gz + X_seg.nii.gz)")
    if (src / "dataset.json").is_file():
        cases, notes = _from_dataset_json(src, src / "dataset.json")
    elif (src / "imagesTr").is_dir() and (src / "labelsTr").is_dir():
        cases, notes = _pair_by_name(src / "imagesTr", src / "labelsTr", channel_suffix=True)
    elif (src / "images").is_dir() and (src / "labels").is_dir():
        cases, notes = _pair_by_name(src / "images", src / "labels", channel_suffix=False)
    else:
        cases, notes = _flat_pairs(src)
    if not cases:
        raise A3DError(f"{src}: no image/label pair found (expected imagesTr/ + labelsTr/, images/ + labels/, or "
                       f"X.nii.gz + X_seg.nii.gz pairs; {len(notes)} unpaired file(s))")
    cases.sort(key=lambda c: c.name)
    names = [c.name for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise A3DError(f"{src}: several images map to the case name {dup[0]!r}; rename them")
    return cases, notes
