"""Where things are: the in-plane fit of a slice into the model input, and slice numbering.

- :class:`InplaneFit`: a canonical slice (H x W, pixel spacing sx, sy) is fitted into the model's
  ``size x size`` input with square pixels of ``max(W * sx, H * sy) / size`` mm, centred, padded;
  boxes and masks are mapped back by the inverse.
- :func:`canonical_to_original_slices`: canonical (inferior -> superior) slice -> index along the
  input file's own slice axis; :func:`key_slices`: a ``[start, stop)`` range of the latter -> the
  canonical key slices to run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from a3d.data.scans import Scan
from a3d.errors import A3DError


@dataclass(frozen=True)
class InplaneFit:
    """Maps a canonical slice (H x W, spacing sx, sy) into the model's size x size input."""

    size: int
    height: int
    width: int
    fx: float  # resized width / width
    fy: float
    ox: int  # left padding in model pixels
    oy: int
    resized: tuple[int, int]  # (Wr, Hr)
    pixel_mm: float  # model pixel size

    @classmethod
    def create(cls, height: int, width: int, sx: float, sy: float, size: int) -> "InplaneFit":
        t = max(width * sx, height * sy) / size
        wr = max(1, min(size, int(round(width * sx / t))))
        hr = max(1, min(size, int(round(height * sy / t))))
        return cls(size, height, width, wr / width, hr / height, (size - wr) // 2, (size - hr) // 2, (wr, hr), t)

    def apply(self, slice2d: np.ndarray, fill: float) -> np.ndarray:
        """(H, W) -> (size, size) float32: resized (bilinear), centred, the rest ``fill``."""
        import cv2  # lazy: keeps `import a3d.predict` light

        wr, hr = self.resized
        out = np.full((self.size, self.size), fill, dtype=np.float32)
        if (wr, hr) == (self.width, self.height):
            r = slice2d.astype(np.float32, copy=False)
        else:
            r = cv2.resize(slice2d.astype(np.float32, copy=False), (wr, hr), interpolation=cv2.INTER_LINEAR)
        out[self.oy : self.oy + hr, self.ox : self.ox + wr] = r
        return out

    def boxes_back(self, boxes: np.ndarray) -> np.ndarray:
        """Model-input boxes (N, 4) x1 y1 x2 y2, pixel-edge coordinates -> canonical slice pixels."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).copy()
        b[:, [0, 2]] = (b[:, [0, 2]] - self.ox) / self.fx
        b[:, [1, 3]] = (b[:, [1, 3]] - self.oy) / self.fy
        b[:, [0, 2]] = b[:, [0, 2]].clip(0, self.width)
        b[:, [1, 3]] = b[:, [1, 3]].clip(0, self.height)
        return b

    def mask_back(self, prob: np.ndarray, threshold: float) -> np.ndarray:
        """Model-input mask probabilities (size, size) -> boolean mask (H, W) on the canonical slice."""
        import cv2  # lazy: keeps `import a3d.predict` light

        wr, hr = self.resized
        crop = np.ascontiguousarray(prob[self.oy : self.oy + hr, self.ox : self.ox + wr], dtype=np.float32)
        if (wr, hr) != (self.width, self.height):
            crop = cv2.resize(crop, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        return crop > threshold


def canonical_to_original_slices(scan: Scan) -> np.ndarray:
    """(Z,) int64: index along the input's slice axis for each canonical slice."""
    n = scan.hu.shape[0]
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    a, b = scan.original_slice_index(0), scan.original_slice_index(n - 1)
    if abs(a - b) == n - 1:
        return np.linspace(a, b, n).round().astype(np.int64)
    return np.array([scan.original_slice_index(z) for z in range(n)], dtype=np.int64)


def interpolated_canonical(scan: Scan) -> set[int]:
    """Canonical indices of the slices without a source image (``scan.interpolated``)."""
    if not scan.interpolated:
        return set()
    orig = canonical_to_original_slices(scan)
    return {int(z) for z in np.nonzero(np.isin(orig, np.asarray(scan.interpolated, dtype=np.int64)))[0]}


def key_slices(scan: Scan, slices: tuple[int | None, int | None] | None) -> list[int]:
    """Canonical key slices for an ``[start, stop)`` range of original slice indices (None: all).
    Interpolated slices (``scan.interpolated``: no source image) are never key slices."""
    orig = canonical_to_original_slices(scan)
    n = len(orig)
    real = np.ones(n, dtype=bool)
    real[list(interpolated_canonical(scan))] = False
    if slices is None:
        return [int(z) for z in np.nonzero(real)[0]]
    start, stop = slices
    lo = 0 if start is None else start
    hi = n if stop is None else stop
    what = f"--slice {lo}" if hi == lo + 1 else f"--slices {lo}:{hi}"
    if lo < 0 or lo >= n or hi <= lo or hi > n:
        raise A3DError(f"{scan.source}: {what} out of range; the scan has slices 0..{n - 1}")
    keys = np.nonzero((orig >= lo) & (orig < hi) & real)[0]
    if not len(keys):
        raise A3DError(f"{scan.source}: {what}: only interpolated slices (no source image: {list(scan.interpolated)}); "
                       "choose slices that exist in the series")
    return sorted(int(z) for z in keys)
