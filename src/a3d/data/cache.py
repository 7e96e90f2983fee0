"""Slice cache: one int16 HU volume per series folder, read by memory map.

Layout under ``ROOT/cache/``:
- ``<series_dir>.npy``: int16 array (n, H, W), HU, slices in ascending slice-number order;
- ``<series_dir>.json``: ``{"format": 1, "series": ..., "slices": [...], "shape": [n, H, W]}``.

The ``.npy`` is written first and the ``.json`` last, both atomically (temp + rename), so a series
counts as cached only when its index exists and matches the volume; interrupted runs resume.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from a3d.data.masks import _init_worker, _mp_context
from a3d.data.slices import PngSource, read_png_hu, slice_path
from a3d.errors import A3DError
from a3d.io import atomic_path, write_text_atomic
from a3d.progress import Progress

log = logging.getLogger(__name__)
FORMAT = 1

__all__ = ["build_cache", "cache_series", "CacheSource", "AutoSource", "FORMAT"]


def _index_path(root: Path, series_dir: str) -> Path:
    return root / "cache" / f"{series_dir}.json"


def _volume_path(root: Path, series_dir: str) -> Path:
    return root / "cache" / f"{series_dir}.npy"


def _read_index(root: Path, series_dir: str) -> dict | None:
    p = _index_path(root, series_dir)
    try:
        idx = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise A3DError(f"{p}: unreadable cache index ({e})") from None
    if idx.get("format") != FORMAT or not isinstance(idx.get("slices"), list):
        raise A3DError(f"{p}: unsupported cache index (expected format {FORMAT}); rerun 'a3d data cache --force'")
    return idx


def cache_is_complete(root: Path, series_dir: str) -> bool:
    try:
        idx = _read_index(root, series_dir)
    except A3DError:
        return False
    if idx is None:
        return False
    vp = _volume_path(root, series_dir)
    try:
        v = np.load(vp, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return list(v.shape) == list(idx["shape"]) and v.dtype == np.int16


def cache_series(root: str | os.PathLike, series_dir: str, force: bool = False) -> bool:
    """Convert one series folder into ``cache/<series>.npy`` + ``.json``; False if already complete."""
    root = Path(root)
    if not force and cache_is_complete(root, series_dir):
        return False
    folder = root / "Images_png" / series_dir
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        raise A3DError(f"{folder}: series folder not found") from None
    nums = sorted(int(n[:-4]) for n in names if n.endswith(".png") and n[:-4].isdigit())
    if not nums:
        raise A3DError(f"{folder}: no slice PNGs in the series folder")
    first = read_png_hu(slice_path(root, series_dir, nums[0]))
    vol = np.empty((len(nums),) + first.shape, dtype=np.int16)
    vol[0] = first
    for i, n in enumerate(nums[1:], 1):
        a = read_png_hu(slice_path(root, series_dir, n))
        if a.shape != first.shape:
            raise A3DError(f"{slice_path(root, series_dir, n)}: size {a.shape} differs from the series' {first.shape}")
        vol[i] = a
    # the index is removed first so that a crash between the two writes leaves no stale index
    _index_path(root, series_dir).unlink(missing_ok=True)
    with atomic_path(_volume_path(root, series_dir)) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, vol, allow_pickle=False)
    write_text_atomic(_index_path(root, series_dir),
                      json.dumps({"format": FORMAT, "series": series_dir, "slices": nums,
                                  "shape": list(vol.shape)}))
    return True


def _work(args):
    root, series, force = args
    return series, cache_series(root, series, force)


def build_cache(root: str | os.PathLike, workers: int = 1, force: bool = False, progress: bool = True,
                series: list[str] | None = None) -> tuple[int, int]:
    """Cache every series folder under ``ROOT/Images_png`` (or those named). Returns (written, skipped)."""
    root = Path(root)
    img_root = root / "Images_png"
    if series is None:
        if not img_root.is_dir():
            raise A3DError(f"{img_root}: folder not found (expected DeepLesion's Images_png)")
        series = sorted(d.name for d in os.scandir(img_root) if d.is_dir())
    written = skipped = 0
    jobs = [(str(root), s, force) for s in series]
    bar = Progress(len(jobs), "cache", "series", enabled=progress)
    if workers <= 1:
        results = map(_work, jobs)
        for _, done in results:
            written += done
            skipped += not done
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_init_worker) as ex:
            for _, done in ex.map(_work, jobs, chunksize=4):
                written += done
                skipped += not done
                bar.update()
    bar.close()
    return written, skipped


class CacheSource:
    """Slices from ``ROOT/cache`` (memory-mapped .npy per series)."""

    kind = "cache"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._vols: dict[str, tuple[np.ndarray, dict[int, int]]] = {}

    def __getstate__(self):  # DataLoader workers (spawn) re-open the memory maps instead of copying them
        return {"root": self.root, "_vols": {}}

    def has(self, series_dir: str) -> bool:
        return series_dir in self._vols or _index_path(self.root, series_dir).exists()

    def _get(self, series_dir: str):
        v = self._vols.get(series_dir)
        if v is None:
            idx = _read_index(self.root, series_dir)
            if idx is None:
                raise A3DError(f"{_index_path(self.root, series_dir)}: series not in the slice cache "
                               f"(run 'a3d data cache {self.root}')")
            vp = _volume_path(self.root, series_dir)
            try:
                vol = np.load(vp, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise A3DError(f"{vp}: unreadable cache volume ({e})") from None
            if list(vol.shape) != list(idx["shape"]) or vol.dtype != np.int16:
                raise A3DError(f"{vp}: cache volume {vol.shape} {vol.dtype} does not match its index "
                               f"{idx['shape']} int16; rerun 'a3d data cache --force'")
            v = (vol, {int(n): i for i, n in enumerate(idx["slices"])})
            self._vols[series_dir] = v
        return v

    def stored(self, series_dir: str) -> frozenset[int]:
        return frozenset(self._get(series_dir)[1])

    def read(self, series_dir: str, slice_index: int) -> np.ndarray:
        vol, pos = self._get(series_dir)
        return np.array(vol[pos[slice_index]])

    def describe(self, series_dir: str, slice_index: int) -> str:
        return f"{_volume_path(self.root, series_dir)}[slice {slice_index}]"


class AutoSource:
    """Cache for series that have a complete cache entry, PNGs otherwise."""

    kind = "auto"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.png = PngSource(root)
        self.cache = CacheSource(root)
        self._use: dict[str, object] = {}

    def _pick(self, series_dir: str):
        s = self._use.get(series_dir)
        if s is None:
            s = self.cache if self.cache.has(series_dir) else self.png
            self._use[series_dir] = s
        return s

    def stored(self, series_dir):
        return self._pick(series_dir).stored(series_dir)

    def read(self, series_dir, slice_index):
        return self._pick(series_dir).read(series_dir, slice_index)

    def describe(self, series_dir, slice_index):
        return self._pick(series_dir).describe(series_dir, slice_index)
