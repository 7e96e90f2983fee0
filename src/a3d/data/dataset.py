"""DeepLesionDataset: one sample per key slice, all its (non-noisy) lesions together."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from a3d.config import OPERATORS
from a3d.data.cache import AutoSource, CacheSource
from a3d.data.dl_info import LesionRecord, group_by_key_slice, read_dl_info, select_split
from a3d.data.resize import FitPad
from a3d.data.slices import PAD_VALUE, PngSource, context_thickness, hu_to_input, load_stack
from a3d.errors import A3DError

__all__ = ["DeepLesionDataset", "collate", "load_masks", "mask_path"]


def mask_path(root: str | os.PathLike, image_id: str, mask_dir: str = "masks") -> Path:
    return Path(root) / mask_dir / f"{image_id}.npz"


def load_masks(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one key slice's mask file: (masks uint8 (N, H, W) 0/1, boxes float32 (N, 4) 0-based)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            masks = np.asarray(z["masks"], dtype=np.uint8)
            boxes = np.asarray(z["boxes"], dtype=np.float32)
    except FileNotFoundError:
        raise
    except Exception as e:  # zipfile.BadZipFile, KeyError, ValueError, OSError
        raise A3DError(f"{path}: unreadable mask file ({type(e).__name__}: {e})") from None
    if masks.ndim != 3 or boxes.shape != (masks.shape[0], 4):
        raise A3DError(f"{path}: expected masks (N, H, W) and boxes (N, 4), got {masks.shape} and {boxes.shape}")
    return masks, boxes


class DeepLesionDataset(torch.utils.data.Dataset):
    """DeepLesion key slices as ``(image, target)``.

    Args:
        root: folder with ``DL_info.csv`` and ``Images_png/`` (optionally ``masks/``, ``cache/``).
        split: ``train``, ``val``, ``test`` or ``all`` (official Train_Val_Test 1, 2, 3).
        slices: D, odd number of context slices centred on the key slice (:func:`a3d.data.slices.context_plan`).
        size: None (native) or int / (a, b): each slice is resized keeping its aspect ratio to fit
            ``size x size`` (long side <= max(a, b), short side <= min(a, b)), placed top left and
            padded with air to multiples of ``pad_divisor`` (:class:`a3d.data.resize.FitPad`, the
            authors' Resize + Pad); boxes, RECIST, masks and spacing follow.
        transform: callable ``(image, target) -> (image, target)`` (e.g. TrainTransform), applied at
            the slice's own size, before the resize (the authors' order: augment, resize, pad).
        masks: load lesion masks from ``root/<mask_dir>/<image_id>.npz`` when present. A key slice
            without a mask file simply has no ``masks`` key in its target.
        drop_noisy: drop Possibly_noisy rows (a key slice left without lesions is dropped).
        cache: ``"auto"`` (use ``root/cache`` per series when present), True (require it) or False.
        mask_dir: folder under root holding mask files (``masks`` = GrabCut; ``masks_true`` = synthetic truth).
        csv: DL_info.csv path (default ``root/DL_info.csv``).
        context_spacing_mm: distance between context slices along z (the paper's 2 mm;
            ``cfg.data.context_spacing_mm``).
        operator: the model's operator (``cfg.model.operator``): it chooses the context rule
            (AlignShift takes the stored neighbours of series >= ``context_spacing_mm``).
        pad_divisor: the padded sides are multiples of this (the authors': 32; ``cfg.data.pad_divisor``).

    Targets hold ``boxes``, ``labels``, ``thickness`` (what AlignShift is given,
    :func:`a3d.data.slices.context_thickness`), ``recist``, ``image_id``, ``spacing`` (input mm/px),
    ``image_size`` (int64 (2,): h, w of the resized slice inside the padded input),
    ``original_size`` (int64 (2,): H, W of the slice), ``lesion_type``, ``diameters_mm`` [, ``masks``].

    Attributes: ``records`` (list of lesion groups, one list of LesionRecord per sample, in sample order),
    ``lesions`` (flat list of the kept LesionRecords).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", slices: int = 3,
                 size: int | Sequence[int] | None = None, transform: Callable | None = None,
                 masks: bool = True, drop_noisy: bool = True, cache: bool | str = "auto",
                 mask_dir: str = "masks", csv: str | os.PathLike | None = None,
                 records: Sequence[LesionRecord] | None = None, context_spacing_mm: float = 2.0,
                 operator: str = "a3d", pad_divisor: int = 32):
        self.root = Path(root)
        if slices < 1 or slices % 2 == 0:
            raise A3DError(f"slices must be an odd number >= 1, got {slices}")
        self.slices = int(slices)
        if not context_spacing_mm > 0:
            raise A3DError(f"context_spacing_mm must be a positive distance in mm, got {context_spacing_mm}")
        self.context_spacing_mm = float(context_spacing_mm)
        if operator not in OPERATORS:
            raise A3DError(f"operator must be one of {', '.join(OPERATORS)}, got {operator!r}")
        self.operator = operator
        self.size = None if size is None else (int(size), int(size)) if isinstance(size, int) else tuple(size)
        FitPad.create(1, 1, self.size, pad_divisor)  # checks size and divisor now
        self.pad_divisor = int(pad_divisor)
        self.transform = transform
        self.masks = bool(masks)
        self.mask_dir = mask_dir
        self.split = split
        if records is None:
            csv_path = Path(csv) if csv is not None else self.root / "DL_info.csv"
            records = read_dl_info(csv_path)
        self.records: list[list[LesionRecord]] = group_by_key_slice(select_split(records, split),
                                                                    drop_noisy=drop_noisy)
        self.lesions = [r for g in self.records for r in g]
        # all lesions of each key slice in CSV order (mask files follow this order, noisy rows included)
        self._all_rows: dict[str, list[LesionRecord]] = {}
        for g in group_by_key_slice(records):
            self._all_rows[g[0].file_name] = g
        self.source = _make_source(self.root, cache)

    def __len__(self) -> int:
        return len(self.records)

    def image_ids(self) -> list[str]:
        return [g[0].image_id for g in self.records]

    def _masks_for(self, group: list[LesionRecord]) -> np.ndarray | None:
        r0 = group[0]
        path = mask_path(self.root, r0.image_id, self.mask_dir)
        if not path.exists():
            return None
        masks, boxes = load_masks(path)
        rows = self._all_rows[r0.file_name]
        if masks.shape[0] != len(rows):
            raise A3DError(f"{path}: holds {masks.shape[0]} masks but DL_info has {len(rows)} lesions on "
                           f"{r0.file_name} (stale mask file? rerun 'a3d data masks')")
        pos = {id(r): i for i, r in enumerate(rows)}
        idx = [pos[id(r)] for r in group]
        if not np.allclose(boxes[idx], np.stack([r.box for r in group]), atol=0.01):
            raise A3DError(f"{path}: boxes differ from DL_info's for {r0.file_name} (stale mask file?)")
        return masks[idx]

    def __getitem__(self, index: int):
        group = self.records[index]
        r0 = group[0]
        stack = load_stack(self.source, r0.series_dir, r0.key_slice, r0.slice_interval, self.slices,
                           r0.slice_range, spacing_mm=self.context_spacing_mm, operator=self.operator)
        masks = self._masks_for(group) if self.masks else None
        if masks is not None and masks.shape[1:] != stack.shape[1:]:
            raise A3DError(f"{mask_path(self.root, r0.image_id, self.mask_dir)}: mask size {masks.shape[1:]} "
                           f"differs from the image's {stack.shape[1:]}")
        n = len(group)
        target = {
            "boxes": torch.from_numpy(np.stack([r.box for r in group]).astype(np.float32)),
            "labels": torch.ones(n, dtype=torch.int64),
            "thickness": torch.tensor(context_thickness(r0.slice_interval, self.context_spacing_mm),
                                      dtype=torch.float32),
            "recist": torch.from_numpy(np.stack([r.recist for r in group]).astype(np.float32)),
            "image_id": r0.image_id,
            "spacing": torch.from_numpy(np.array(r0.spacing, dtype=np.float32)),
            "lesion_type": torch.tensor([r.lesion_type for r in group], dtype=torch.int64),
            "diameters_mm": torch.tensor([float(r.diameters_px[0] * r.spacing[0]) for r in group],
                                         dtype=torch.float32),
        }
        if masks is not None:
            target["masks"] = torch.from_numpy(np.ascontiguousarray(masks))
        img = torch.from_numpy(hu_to_input(stack)).unsqueeze(0)
        if self.transform is not None:
            img, target = self.transform(img, target)
        return fit_and_pad(img, target, self.size, self.pad_divisor)


def fit_and_pad(img: torch.Tensor, target: dict, size, divisor: int) -> tuple[torch.Tensor, dict]:
    """The sample (1, D, H, W) resized and padded by :class:`FitPad`; boxes, RECIST, masks, spacing
    follow; ``image_size`` and ``original_size`` added to the target."""
    h, w = img.shape[-2:]
    g = FitPad.create(h, w, size, divisor)
    t = dict(target)
    if not g.identity:
        img = torch.from_numpy(g.image(img[0].numpy())).unsqueeze(0)
        t["boxes"] = torch.from_numpy(g.points(target["boxes"].numpy()))
        if "recist" in t:
            t["recist"] = torch.from_numpy(g.points(target["recist"].numpy()))
        if "masks" in t:
            t["masks"] = torch.from_numpy(g.masks(target["masks"].numpy()))
        if "spacing" in t:
            sp = t["spacing"].clone()
            sp[0], sp[1] = g.spacing(float(sp[0]), float(sp[1]))
            t["spacing"] = sp
    t["image_size"] = torch.tensor(g.resized, dtype=torch.int64)
    t["original_size"] = torch.tensor(g.original, dtype=torch.int64)
    return img, t


def _make_source(root: Path, cache: bool | str):
    if cache is False or cache == "off":
        return PngSource(root)
    if cache is True or cache == "on":
        if not (root / "cache").is_dir():
            raise A3DError(f"{root / 'cache'}: slice cache not found (run 'a3d data cache {root}')")
        return CacheSource(root)
    if cache == "auto":
        return AutoSource(root)
    raise A3DError(f"cache must be 'auto', True or False, got {cache!r}")


def collate(batch):
    """``[(image, target), ...]`` -> ``(images (B, 1, D, H, W), [target, ...])``.

    Images of different sizes are padded at the bottom and right to the largest (with air, as
    mmcv's collate pads to the batch's largest); each target's ``image_size`` keeps its own extent."""
    images = [b[0] for b in batch]
    if len({tuple(i.shape[:-2]) for i in images}) != 1:
        raise A3DError(f"cannot batch images of different depths {sorted({tuple(i.shape) for i in images})}")
    h = max(i.shape[-2] for i in images)
    w = max(i.shape[-1] for i in images)
    out = images[0].new_full((len(images),) + tuple(images[0].shape[:-2]) + (h, w), PAD_VALUE)
    for k, i in enumerate(images):
        out[k, ..., : i.shape[-2], : i.shape[-1]] = i
    return out, [b[1] for b in batch]
