"""Finding the image/label pairs of a source folder (the naming rules of ``a3d data import``).

Images and labels are volume files (NIfTI ``.nii.gz``/``.nii``, NRRD ``.nrrd``/``.nhdr``, MetaImage
``.mha``/``.mhd``: :data:`a3d.data.scans.VOLUME_SUFFIXES`), in any mix; an image may also be a DICOM
series folder; a label may be 3D Slicer's ``X.seg.nrrd``. ``X`` below is the name without that suffix.

Layouts, tried in this order:

1. ``SRC/dataset.json`` with a ``training`` list (Medical Segmentation Decathlon): its
   ``{"image", "label"}`` pairs, paths relative to SRC.
2. ``SRC/imagesTr/`` + ``SRC/labelsTr/`` (MSD without dataset.json, nnU-Net): label ``X``
   pairs with image ``X`` or ``X_0000`` (nnU-Net's first channel).
3. ``SRC/images/`` + ``SRC/labels/``: equal names (label ``X.nii.gz`` or ``X.seg.nrrd`` for image
   ``X.nrrd``, or for the DICOM series folder ``images/X/``).
4. A flat folder of pairs: image ``X.nii.gz`` (or DICOM folder ``X/``) with label
   ``X_seg``, ``X_label``, ``X_labels``, ``X_mask`` or ``X.seg.nrrd`` (``X_seg.nii.gz``, ``X_mask.mha``, ...).

An image without a label (or a label without an image) is not imported and is reported by name.
A case is named after its image (:func:`a3d.data.scans.scan_name`: ``X`` for ``X.nii.gz``), the
name the split file, the mapping and the messages use.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from a3d.data.scans import SLICER_SEG_SUFFIX, scan_name, volume_kind, volume_stem
from a3d.errors import A3DError

LABEL_SUFFIXES = ("_seg", "_label", "_labels", "_mask")

__all__ = ["Case", "LABEL_SUFFIXES", "find_cases"]


@dataclass(frozen=True)
class Case:
    """One labelled volume: ``image`` (volume file or DICOM series folder) and ``label`` (volume file)."""

    name: str
    image: Path
    label: Path


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise A3DError(f"{folder}: folder cannot be read ({e.strerror or e})") from None


def _is_slicer_seg(path: Path) -> bool:
    return path.name.lower().endswith(SLICER_SEG_SUFFIX)


def _is_image(path: Path) -> bool:
    return path.is_dir() or (volume_kind(path) is not None and not _is_slicer_seg(path))


def _stem(path: Path) -> str:
    """The name without its volume suffix, ``.seg.nrrd`` included (unsanitised: pairing compares file names)."""
    return path.name[: -len(SLICER_SEG_SUFFIX)] if _is_slicer_seg(path) else volume_stem(path)


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
    by_stem = {_stem(p): p for p in _entries(images) if _is_image(p)}
    cases, notes, used = [], [], set()
    for label in (p for p in _entries(labels) if volume_kind(p) is not None):
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
        if _is_slicer_seg(p):
            labels[stem] = p
        for suf in LABEL_SUFFIXES:
            if volume_kind(p) is not None and stem.endswith(suf) and len(stem) > len(suf):
                labels[stem[: -len(suf)]] = p
    label_files = set(labels.values())
    cases, notes = [], []
    for p in entries:
        if p in label_files or not _is_image(p):
            continue
        label = labels.pop(_stem(p), None)
        if label is not None:
            cases.append(Case(scan_name(p), p, label))
        elif volume_kind(p) is not None:
            notes.append(f"{p}: no label file {_stem(p)}{{{','.join(LABEL_SUFFIXES)}}}.nii.gz (or .nrrd, .mha, "
                         f"{_stem(p)}.seg.nrrd, ...) beside it; image not imported")
    notes += [f"{p}: no image {stem}.nii.gz (or .nrrd, .mha, ...) beside this label; label not imported"
              for stem, p in labels.items()]
    return cases, notes


def find_cases(src: str | os.PathLike) -> tuple[list[Case], list[str]]:
    """The labelled cases of ``src`` sorted by name, and notes naming the files left unpaired.

    A3DError when ``src`` is not a folder, holds no pair, or two cases share a name."""
    src = Path(src)
    if not src.is_dir():
        raise A3DError(f"{src}: not a folder (expected imagesTr/ + labelsTr/, images/ + labels/, or image/label "
                       "pairs such as X.nii.gz + X_seg.nii.gz or X.nrrd + X.seg.nrrd)")
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
                       f"X.nii.gz + X_seg.nii.gz pairs (.nrrd, .mha, ... too); {len(notes)} unpaired file(s))")
    cases.sort(key=lambda c: c.name)
    names = [c.name for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise A3DError(f"{src}: several images map to the case name {dup[0]!r}; rename them")
    return cases, notes
