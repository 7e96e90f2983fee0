"""Box arithmetic on numpy arrays: the one IoU and the one box rescale of a3d.

Boxes are ``(N, 4)`` arrays ``x1 y1 x2 y2`` in pixels. Two conventions exist in this field and both
are needed:

- pixel edges (default, torchvision's): a box covering pixels 0..9 is ``0 0 10 10``, width
  ``x2 - x1``;
- inclusive pixel indices (DeepLesion's ground truth and its official FROC): the same box is
  ``0 0 9 9``, width ``x2 - x1 + 1`` (``inclusive=True``).

numpy only, so that evaluation and data code can use it without importing torch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["box_area", "box_iou", "box_iou_pairs", "box_iomin", "rescale_boxes"]


def _as_boxes(b) -> np.ndarray:
    return np.asarray(b, dtype=np.float64).reshape(-1, 4)


def _area(b: np.ndarray, one: float) -> np.ndarray:
    """(..., 4) -> (...) areas, 0 for degenerate boxes."""
    return np.clip(b[..., 2] - b[..., 0] + one, 0, None) * np.clip(b[..., 3] - b[..., 1] + one, 0, None)


def _intersection(a: np.ndarray, b: np.ndarray, one: float) -> np.ndarray:
    """Intersection areas of boxes ``a`` (..., 4) and ``b`` (..., 4), broadcast against each other."""
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + one
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + one
    return np.clip(iw, 0, None) * np.clip(ih, 0, None)


def _iou(a: np.ndarray, b: np.ndarray, inclusive: bool) -> np.ndarray:
    """IoU of broadcastable box arrays; 0 where the union is empty."""
    one = 1.0 if inclusive else 0.0
    inter = _intersection(a, b, one)
    union = _area(a, one) + _area(b, one) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def box_area(boxes, inclusive: bool = False) -> np.ndarray:
    """(N, 4) -> (N,) areas; degenerate boxes have area 0."""
    return _area(_as_boxes(boxes), 1.0 if inclusive else 0.0)


def box_iou(a, b, inclusive: bool = False) -> np.ndarray:
    """Pairwise intersection over union: (N, 4), (M, 4) -> (N, M); 0 where the union is empty."""
    a, b = _as_boxes(a), _as_boxes(b)
    return _iou(a[:, None, :], b[None, :, :], inclusive)


def box_iou_pairs(a, b, inclusive: bool = False) -> np.ndarray:
    """IoU of matching rows: (K, 4), (K, 4) -> (K,), row k of ``a`` against row k of ``b``
    (what the FROC needs for its (prediction, box of the same image) pairs, without an (N, M) matrix)."""
    a, b = _as_boxes(a), _as_boxes(b)
    if a.shape != b.shape:
        raise ValueError(f"box_iou_pairs: expected two (K, 4) arrays of one K, got {a.shape} and {b.shape}")
    return _iou(a, b, inclusive)


def box_iomin(a, b, inclusive: bool = False) -> np.ndarray:
    """Pairwise intersection over the smaller box's area: (N, 4), (M, 4) -> (N, M)."""
    a, b = _as_boxes(a)[:, None, :], _as_boxes(b)[None, :, :]
    one = 1.0 if inclusive else 0.0
    small = np.minimum(_area(a, one), _area(b, one))
    return np.where(small > 0, _intersection(a, b, one) / np.maximum(small, 1e-12), 0.0)


def rescale_boxes(boxes, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """Boxes (or any array whose last axis holds x, y pairs, such as RECIST end points) on an image of
    size ``from_hw`` (H, W) -> the same points on that image resized to ``to_hw``; a new array of the
    same shape, float32 for float32 input (computed in float32, as the dataset's targets are), else float64.

    Pixel-centre mapping (the one cv2.resize uses): ``x' = (x + 0.5) * W'/W - 0.5``.
    """
    dtype = np.float32 if np.asarray(boxes).dtype == np.float32 else np.float64
    b = np.array(boxes, dtype=dtype)
    (h, w), (th, tw) = from_hw, to_hw
    if (h, w) == (th, tw):
        return b
    b[..., 0::2] = (b[..., 0::2] + 0.5) * (tw / w) - 0.5
    b[..., 1::2] = (b[..., 1::2] + 0.5) * (th / h) - 0.5
    return b
