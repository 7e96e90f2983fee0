"""DeepLesionDataset: one sample per key slice, all its (non-noisy) lesions together."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from a3d.boxes import rescale_boxes
from a3d.data.cache import AutoSource, CacheSource
from a3d.data.dl_info import LesionRecord, group_by_key_slice, read_dl_info, select_split
from a3d.data.slices import PngSource, hu_to_input, load_stack
from a3d.errors import A3DError

__all__ = ["DeepLesionDataset", "collate", "load_masks", "mask_path", "resize_target"]


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


def resize_target(image: np.ndarray, boxes: np.ndarray, recist: np.ndarray, masks: np.ndarray | None,
                  size: tuple[int, int]):
    """Resize a (D, H, W) stack to ``size`` (H', W') and scale boxes / RECIST / masks consistently."""
    d, h, w = image.shape
    nh, nw = size
    if (nh, nw) == (h, w):
        return image, boxes, recist, masks
    interp = cv2.INTER_AREA if nh < h and nw < w else cv2.INTER_LINEAR
    out = np.empty((d, nh, nw), dtype=np.float32)
    for i in range(d):
        out[i] = cv2.resize(image[i], (nw, nh), interpolation=interp)
    boxes = rescale_boxes(boxes.astype(np.float32), (h, w), (nh, nw))
    recist = rescale_boxes(recist.astype(np.float32), (h, w), (nh, nw))
    if masks is not None:
        m = np.zeros((masks.shape[0], nh, nw), dtype=np.uint8)
        for i in range(masks.shape[0]):
            m[i] = cv2.resize(masks[i], (nw, nh), interpolation=cv2.INTER_NEAREST)
        masks = m
    return out, boxes, recist, masks


class DeepLesionDataset(torch.utils.data.Dataset):
    """DeepLesion key slices as ``(image, target)``.

    Args:
        root: folder with ``DL_info.csv`` and ``Images_png/`` (optionally ``masks/``, ``cache/``).
        split: ``train``, ``val``, ``test`` or ``all`` (official Train_Val_Test 1, 2, 3).
        slices: D, odd number of context slices centred on the key slice, ``context_spacing_mm`` apart.
        size: None (native) or int / (H, W): resize images; boxes, RECIST and masks follow.
        transform: callable ``(image, target) -> (image, target)`` applied last (e.g. TrainTransform).
        masks: load lesion masks from ``root/<mask_dir>/<image_id>.npz`` when present. A key slice
            without a mask file simply has no ``masks`` key in its target.
        drop_noisy: drop Possibly_noisy rows (a key slice left without lesions is dropped).
        cache: ``"auto"`` (use ``root/cache`` per series when present), True (require it) or False.
        mask_dir: folder under root holding mask files (``masks`` = GrabCut; ``masks_true`` = synthetic truth).
        csv: DL_info.csv path (default ``root/DL_info.csv``).
        context_spacing_mm: distance between context slices along z (the paper's 2 mm;
            ``cfg.data.context_spacing_mm``), neighbours linearly interpolated.

    Attributes: ``records`` (list of lesion groups, one list of LesionRecord per sample, in sample order),
    ``lesions`` (flat list of the kept LesionRecords).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", slices: int = 3,
                 size: int | Sequence[int] | None = None, transform: Callable | None = None,
                 masks: bool = True, drop_noisy: bool = True, cache: bool | str = "auto",
                 mask_dir: str = "masks", csv: str | os.PathLike | None = None,
                 records: Sequence[LesionRecord] | None = None, context_spacing_mm: float = 2.0):
        self.root = Path(root)
        if slices < 1 or slices % 2 == 0:
            raise A3DError(f"slices must be an odd number >= 1, got {slices}")
        self.slices = int(slices)
        if not context_spacing_mm > 0:
            raise A3DError(f"context_spacing_mm must be a positive distance in mm, got {context_spacing_mm}")
        self.context_spacing_mm = float(context_spacing_mm)
        if size is None:
            self.size = None
        elif isinstance(size, int):
            self.size = (int(size), int(size))
        else:
            self.size = (int(size[0]), int(size[1]))
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
                           r0.slice_range, spacing_mm=self.context_spacing_mm)
        image = hu_to_input(stack)
        boxes = np.stack([r.box for r in group]).astype(np.float32)
        recist = np.stack([r.recist for r in group]).astype(np.float32)
        masks = self._masks_for(group) if self.masks else None
        if masks is not None and masks.shape[1:] != image.shape[1:]:
            raise A3DError(f"{mask_path(self.root, r0.image_id, self.mask_dir)}: mask size {masks.shape[1:]} "
                           f"differs from the image's {image.shape[1:]}")
        spacing = np.array(r0.spacing, dtype=np.float32)
        if self.size is not None:
            h, w = image.shape[1:]
            image, boxes, recist, masks = resize_target(image, boxes, recist, masks, self.size)
            spacing = spacing.copy()
            spacing[0] *= w / self.size[1]
            spacing[1] *= h / self.size[0]
        n = len(group)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.ones(n, dtype=torch.int64),
            "thickness": torch.tensor(float(r0.spacing[2]), dtype=torch.float32),
            "recist": torch.from_numpy(recist),
            "image_id": r0.image_id,
            "spacing": torch.from_numpy(spacing),
            "lesion_type": torch.tensor([r.lesion_type for r in group], dtype=torch.int64),
            "diameters_mm": torch.tensor([float(r.diameters_px[0] * r.spacing[0]) for r in group],
                                         dtype=torch.float32),
        }
        if masks is not None:
            target["masks"] = torch.from_numpy(np.ascontiguousarray(masks))
        img = torch.from_numpy(image).unsqueeze(0)
        if self.transform is not None:
            img, target = self.transform(img, target)
        return img, target


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
    """``[(image, target), ...]`` -> ``(images (B, 1, D, H, W), [target, ...])``."""
    images = [b[0] for b in batch]
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1:
        raise A3DError(f"cannot batch images of different shapes {sorted(shapes)} (set the dataset's size)")
    return torch.stack(images, 0), [b[1] for b in batch]
