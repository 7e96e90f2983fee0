"""The in-plane input geometry: fit in ``size x size`` keeping the aspect ratio, pad to a multiple of 32.

The authors' pipeline (mmdetection 1.x ``Resize(img_scale=(512, 512), keep_ratio=True)`` then
``Pad(size_divisor=32)``): a slice of H x W pixels is scaled by one factor
``s = min(long_max / max(H, W), short_max / min(H, W))`` (mmcv's ``imrescale``; for a square
``size`` that is ``size / max(H, W)``), its sides become ``int(H * s + 0.5)`` x ``int(W * s + 0.5)``,
it sits at the top left and is padded at the bottom and right to multiples of ``divisor``. A
512 x 512 slice passes unchanged.

Our choices (docs/fidelity.md): pixel-centre mapping of boxes and points (:func:`a3d.boxes.rescale_boxes`,
the mapping cv2.resize applies to pixels; mmdetection multiplies coordinates by ``s``, half a pixel
off); area interpolation when shrinking (no aliasing), bilinear otherwise (mmcv: bilinear always);
the padding holds air (:data:`a3d.data.slices.PAD_VALUE`, the input value of HU <= -1024), where
mmdetection pads with 0, which after the authors' intensity mapping is -421 HU. Masks are resized
nearest and padded with 0. :meth:`FitPad.to_original` undoes it for predictions (padding dropped,
resize inverted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from a3d.boxes import rescale_boxes
from a3d.data.slices import PAD_VALUE
from a3d.errors import A3DError

__all__ = ["FitPad"]


@dataclass(frozen=True)
class FitPad:
    """How one (H, W) slice becomes the model's input: resized to ``resized``, padded to ``padded``."""

    original: tuple[int, int]  # (H, W) of the slice
    resized: tuple[int, int]  # (h, w) after the aspect-preserving resize: the image's true extent
    padded: tuple[int, int]  # (H', W') input size, multiples of the divisor

    @classmethod
    def create(cls, height: int, width: int, size: int | Sequence[int] | None, divisor: int = 32) -> "FitPad":
        """``size``: int (fit in size x size), (a, b) (long side <= max, short side <= min, as mmcv)
        or None (native size, no padding)."""
        h, w = int(height), int(width)
        if h < 1 or w < 1:
            raise A3DError(f"image size must be positive, got {h} x {w}")
        if size is None:
            return cls((h, w), (h, w), (h, w))
        if divisor < 1:
            raise A3DError(f"pad divisor must be >= 1, got {divisor}")
        a, b = (int(size), int(size)) if isinstance(size, (int, np.integer)) else (int(size[0]), int(size[1]))
        s = min(max(a, b) / max(h, w), min(a, b) / min(h, w))
        rh, rw = max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))
        return cls((h, w), (rh, rw), (math.ceil(rh / divisor) * divisor, math.ceil(rw / divisor) * divisor))

    @classmethod
    def of_target(cls, target: dict, padded: Sequence[int]) -> "FitPad":
        """The geometry a dataset sample went through (its target's ``original_size`` and
        ``image_size``), for an input of size ``padded`` (H', W') (a batch may pad it further)."""
        size = lambda k: tuple(int(v) for v in target[k])  # noqa: E731
        return cls(size("original_size"), size("image_size"), tuple(int(v) for v in padded))

    @property
    def identity(self) -> bool:
        return self.original == self.resized == self.padded

    def image(self, x: np.ndarray, fill: float = PAD_VALUE) -> np.ndarray:
        """(D, H, W) float32 -> (D, H', W'): resized (area when shrinking, else bilinear), padded with ``fill``."""
        if self.identity:
            return x
        (h, w), (rh, rw) = self.original, self.resized
        interp = cv2.INTER_AREA if rh < h and rw < w else cv2.INTER_LINEAR
        out = np.full((x.shape[0],) + self.padded, fill, dtype=np.float32)
        for i in range(x.shape[0]):
            r = x[i] if (rh, rw) == (h, w) else cv2.resize(x[i], (rw, rh), interpolation=interp)
            out[i, :rh, :rw] = r
        return out

    def masks(self, m: np.ndarray) -> np.ndarray:
        """(N, H, W) uint8 -> (N, H', W'): nearest, padded with 0."""
        if self.identity:
            return m
        (h, w), (rh, rw) = self.original, self.resized
        out = np.zeros((m.shape[0],) + self.padded, dtype=m.dtype)
        for i in range(m.shape[0]):
            out[i, :rh, :rw] = m[i] if (rh, rw) == (h, w) else cv2.resize(m[i], (rw, rh), interpolation=cv2.INTER_NEAREST)
        return out

    def points(self, xy: np.ndarray) -> np.ndarray:
        """Boxes / RECIST points (last axis x, y pairs) on the slice -> on the input."""
        return rescale_boxes(xy, self.original, self.resized)

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Boxes on the input (inside the resized extent) -> on the original slice."""
        return rescale_boxes(boxes, self.resized, self.original)

    def masks_to_original(self, m: np.ndarray) -> np.ndarray:
        """(N, H', W') uint8 masks on the input -> (N, H, W) on the original slice (nearest)."""
        (h, w), (rh, rw) = self.original, self.resized
        crop = np.ascontiguousarray(m[:, :rh, :rw])
        if (rh, rw) == (h, w):
            return crop
        return np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_NEAREST) for c in crop]).reshape(-1, h, w)

    def spacing(self, sx: float, sy: float) -> tuple[float, float]:
        """Pixel spacing (mm) of the input, from the slice's."""
        (h, w), (rh, rw) = self.original, self.resized
        return sx * w / rw, sy * h / rh
