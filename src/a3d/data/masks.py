"""GrabCut weak lesion masks from RECIST marks (DeepLesion has no pixel labels).

For every key slice (all its lesions, noisy rows included, in CSV order):

1. the key slice is windowed to 8 bits: HU clipped to the window first, then scaled to 0..255 and
   rounded. Recipe ``"authors"`` (the default, the authors' ``mask_generateor.py``): the fixed
   window [-1024, 2050] HU, whose values they shifted by -50 and let wrap around in the uint8 cast
   (a defect: clipped here); recipe ``"dicom"``: each row's DICOM_windows;
2. a GrabCut mask starts as background; the box (pixels ``floor(x1)..ceil(x2)``) is filled with
   "probable foreground", the quadrilateral of the four RECIST end points in the order long-1,
   short-1, long-2, short-2 with "foreground";
3. ``cv2.grabCut`` with mask initialisation, 3 iterations: recipe ``"authors"`` on the whole slice (as
   they did), ``"dicom"`` on a crop around the box (the box grown by ``max(32 px, half its longer
   side)``, clipped to the image: about 10x faster, the background model then sees only the
   neighbourhood); the RNG is re-seeded per lesion so results do not depend on the order or the process;
4. lesion mask = foreground | probable foreground. If GrabCut fails (OpenCV error) the filled
   RECIST quadrilateral is used and a warning logged.

Both recipes reach the same Dice against synthetic true masks (benchmarks/results/grabcut.md).

Output: ``ROOT/masks/<image_id>.npz`` (no pickle): ``masks`` uint8 (N, H, W) 0/1 and ``boxes`` float32
(N, 4) 0-based (to detect a stale file), written atomically; existing files are skipped (resumable)
unless ``force``.
"""

from __future__ import annotations

import logging
import math
import os
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from a3d.data._npz import save_npz
from a3d.data.dl_info import group_by_key_slice, read_dl_info
from a3d.data.slices import HU_MAX, HU_MIN, read_png_hu, slice_path
from a3d.errors import A3DError
from a3d.progress import Progress

log = logging.getLogger(__name__)

__all__ = ["window_uint8", "grabcut_lesion", "key_slice_masks", "build_masks"]


def window_uint8(hu: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clip HU to [lo, hi] first, then scale to 0..255 uint8 (no wrap-around)."""
    if not hi > lo:
        raise A3DError(f"window max must exceed min, got ({lo}, {hi})")
    x = (np.clip(hu.astype(np.float32), lo, hi) - lo) * (255.0 / (hi - lo))
    return np.round(x).astype(np.uint8)


def grabcut_lesion(img8: np.ndarray, box: Sequence[float], recist: Sequence[float], iterations: int = 3,
                   crop_margin: int | None = 32) -> np.ndarray:
    """GrabCut mask (uint8 0/1, image size) of one lesion on an 8-bit grey image.

    ``box`` x1 y1 x2 y2 and ``recist`` (8,) are 0-based pixel coordinates. ``crop_margin=None`` runs on
    the whole image (slower, same initialisation).
    """
    h, w = img8.shape
    x1, y1 = max(int(math.floor(box[0])), 0), max(int(math.floor(box[1])), 0)
    x2, y2 = min(int(math.ceil(box[2])), w - 1), min(int(math.ceil(box[3])), h - 1)
    if crop_margin is None:
        cx1, cy1, cx2, cy2 = 0, 0, w - 1, h - 1
    else:
        mg = max(int(crop_margin), (max(x2 - x1, y2 - y1) + 1) // 2)
        cx1, cy1, cx2, cy2 = max(x1 - mg, 0), max(y1 - mg, 0), min(x2 + mg, w - 1), min(y2 + mg, h - 1)
    crop = img8[cy1:cy2 + 1, cx1:cx2 + 1]
    gc = np.full(crop.shape, cv2.GC_BGD, np.uint8)
    gc[y1 - cy1:y2 - cy1 + 1, x1 - cx1:x2 - cx1 + 1] = cv2.GC_PR_FGD
    r = np.asarray(recist, dtype=np.float64).reshape(4, 2)
    quad = r[[0, 2, 1, 3]] - [cx1, cy1]  # long-1, short-1, long-2, short-2
    quad_i = np.round(quad).astype(np.int32)
    cv2.fillPoly(gc, [quad_i], cv2.GC_FGD)
    cv2.polylines(gc, [quad_i], True, cv2.GC_FGD)
    out = np.zeros((h, w), np.uint8)
    fallback = gc == cv2.GC_FGD
    try:
        if not (gc == cv2.GC_BGD).any():
            raise cv2.error("no background pixels around the box")
        cv2.setRNGSeed(0)
        bgd = np.zeros((1, 65), np.float64)
        fgd = np.zeros((1, 65), np.float64)
        cv2.grabCut(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR), gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
        res = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    except cv2.error as e:
        log.warning("GrabCut failed (%s); using the RECIST quadrilateral", str(e).strip().splitlines()[-1])
        res = fallback
    out[cy1:cy2 + 1, cx1:cx2 + 1] = res
    return out


def key_slice_masks(hu: np.ndarray, boxes: np.ndarray, recists: np.ndarray, windows: Sequence[Sequence[float]],
                    iterations: int = 3, crop_margin: int | None = 32) -> np.ndarray:
    """(N, H, W) uint8 masks for the lesions of one key slice (HU image, per-lesion window)."""
    masks = np.zeros((len(boxes),) + hu.shape, np.uint8)
    cache: dict[tuple, np.ndarray] = {}
    for i, (b, r, win) in enumerate(zip(boxes, recists, windows)):
        win = (float(win[0]), float(win[1]))
        img8 = cache.get(win)
        if img8 is None:
            img8 = cache[win] = window_uint8(hu, *win)
        masks[i] = grabcut_lesion(img8, b, r, iterations, crop_margin)
    return masks


#: recipe -> (fixed HU window or None for each row's DICOM_windows, crop margin or None for the whole image)
RECIPES = {"authors": ((HU_MIN, HU_MAX), None), "dicom": (None, 32)}


def _job(args) -> tuple[str, bool]:
    root, series_dir, key, boxes, recists, windows, crop, out_path, force = args
    if not force and os.path.exists(out_path):
        return out_path, False
    hu = read_png_hu(slice_path(root, series_dir, key))
    masks = key_slice_masks(hu, boxes, recists, windows, crop_margin=crop)
    save_npz(out_path, masks=masks, boxes=np.asarray(boxes, np.float32))
    return out_path, True


def _mp_context():
    """forkserver (spawn where unavailable), never plain fork.

    Forking a process that has used OpenCV's or torch's thread pools can deadlock the children
    (seen here). The fork server preloads this module once, so each worker starts quickly.
    """
    import multiprocessing

    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = get_context("forkserver")
        ctx.set_forkserver_preload(["a3d.data.masks", "a3d.data.cache"])
        return ctx
    return get_context("spawn")


def _init_worker():
    cv2.setNumThreads(1)


def build_masks(root: str | os.PathLike, workers: int = 1, out_dir: str = "masks",
                window: Sequence[float] | None = None, force: bool = False, progress: bool = True,
                csv: str | os.PathLike | None = None, limit: int | None = None,
                recipe: str = "authors") -> tuple[int, int]:
    """GrabCut masks for every key slice of ``ROOT/DL_info.csv``; returns (written, skipped).

    ``recipe``: ``"authors"`` (the fixed window [-1024, 2050] HU over the whole slice, their uint8
    wrap fixed) or ``"dicom"`` (each row's DICOM_windows, a crop around the box); ``window`` (MIN, MAX)
    replaces the recipe's window."""
    root = Path(root)
    if recipe not in RECIPES:
        raise A3DError(f"--recipe {recipe!r}: expected one of {', '.join(RECIPES)}")
    if window is not None and not float(window[1]) > float(window[0]):
        raise A3DError(f"--window MAX must exceed MIN, got {window[0]} {window[1]}")
    window = window if window is not None else RECIPES[recipe][0]
    crop = RECIPES[recipe][1]
    recs = read_dl_info(Path(csv) if csv is not None else root / "DL_info.csv")
    if not (root / "Images_png").is_dir():
        raise A3DError(f"{root / 'Images_png'}: folder not found (expected DeepLesion's Images_png)")
    groups = group_by_key_slice(recs)
    if limit is not None:
        groups = groups[:limit]
    out = root / out_dir
    jobs, skipped = [], 0
    for g in groups:
        r0 = g[0]
        path = out / f"{r0.image_id}.npz"
        if not force and path.exists():
            skipped += 1
            continue
        wins = [tuple(window)] * len(g) if window is not None else [r.window for r in g]
        jobs.append((str(root), r0.series_dir, r0.key_slice, np.stack([r.box for r in g]),
                     np.stack([r.recist for r in g]), wins, crop, str(path), force))
    # check every key slice exists before starting the long run
    for j in jobs:
        p = slice_path(root, j[1], j[2])
        if not p.exists():
            folder = p.parent
            what = "series folder not found" if not folder.is_dir() else "key slice file not found"
            raise A3DError(f"{folder if not folder.is_dir() else p}: {what}")
    written = 0
    bar = Progress(len(jobs), "masks", "slice", enabled=progress)
    try:
        if workers <= 1 or len(jobs) <= 1:
            for j in jobs:
                written += _job(j)[1]
                bar.update()
        else:
            with _mp_context().Pool(workers, initializer=_init_worker) as pool:
                for _, done in pool.imap_unordered(_job, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers)))):
                    written += done
                    bar.update()
    finally:
        bar.close()
    return written, skipped + (len(jobs) - written)
