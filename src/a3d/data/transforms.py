"""Training augmentation (spec section 4): random horizontal flip and shift/scale/rotate.

The same geometric transform is applied to all D slices, the masks, the RECIST points and the boxes.

Choices (docs/data.md):
- Parameters as albumentations' ShiftScaleRotate used by the authors: shift ``U(-0.04, 0.04)`` of the
  width/height, scale factor ``1 + U(-0.2, 0.2)``, rotation ``U(-15, 15)`` degrees about the image
  centre, applied with probability 0.8; horizontal flip with probability 0.5.
- Images are resampled as the authors' albumentations call does: bicubic (``cv2.INTER_CUBIC``) with
  reflect-101 borders (``cv2.BORDER_REFLECT_101``: pixels from outside mirror the image, no edge
  repeat), ``interpolation="bicubic", border="reflect101"``; ``"bilinear"`` / ``"constant"``
  (outside = ``fill``, -50, air) remain available (our earlier behaviour: no invented anatomy at the
  borders, no bicubic overshoot). Masks are resampled nearest with 0 outside (the authors' reflected
  the masks too, drawing mirrored lesions that have no box).
- Boxes after rotation: when a lesion has a non-empty mask, its box is the tight box of the
  transformed mask grown by the lesion's original margins (box minus the mask's tight box, per side)
  times the scale factor; otherwise it is the tight box of the transformed RECIST end points grown by
  the margins between the original box and the RECIST extremes (times the scale). This keeps
  DeepLesion's "RECIST extremes + 5 px" and the synthetic "shape + 5 px" conventions instead of
  inflating boxes as rotated corners would. Boxes are clipped to the image.
- A lesion is dropped when it leaves the image: its transformed mask is empty or, without a mask,
  the centre of its transformed box lies outside the image (or its clipped box is under 1 px).
- A sample left without any lesion is re-drawn (new shift/scale/rotate) up to ``max_tries`` times;
  if every draw loses all lesions, the sample is returned with only the flip applied.
- Randomness comes from the ``generator`` argument (a ``torch.Generator``) or, when None, from torch's
  global RNG, which DataLoader seeds per worker (``base_seed + worker_id``): runs are reproducible
  under ``torch.manual_seed`` / a seeded DataLoader generator.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

__all__ = ["TrainTransform", "hflip", "affine_matrix", "warp", "INTERPOLATIONS", "BORDERS"]

INTERPOLATIONS = {"bicubic": cv2.INTER_CUBIC, "bilinear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
BORDERS = {"reflect101": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror left-right: image (..., W), boxes, RECIST points and masks."""
    w = image.shape[-1]
    t = dict(target)
    image = image.flip(-1)
    b = target["boxes"]
    t["boxes"] = torch.stack([w - 1 - b[:, 2], b[:, 1], w - 1 - b[:, 0], b[:, 3]], 1)
    if "recist" in target:
        r = target["recist"].clone()
        r[:, 0::2] = w - 1 - r[:, 0::2]
        t["recist"] = r
    if "masks" in target:
        t["masks"] = target["masks"].flip(-1)
    return image, t


def affine_matrix(h: int, w: int, angle_deg: float, scale: float, dx: float, dy: float) -> torch.Tensor:
    """3x3 forward matrix (float64) in 0-based pixel coordinates: rotate+scale about the centre, shift."""
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    a = math.radians(angle_deg)
    c, s = math.cos(a) * scale, math.sin(a) * scale
    # p' = A (p - centre) + centre + shift
    return torch.tensor([[c, -s, cx - c * cx + s * cy + dx * w],
                         [s, c, cy - s * cx - c * cy + dy * h],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)


def warp(x: np.ndarray, m: torch.Tensor, interpolation: str = "bicubic", border: str = "reflect101",
         fill: float = 0.0) -> np.ndarray:
    """Warp (C, H, W) by the forward matrix ``m`` (output pixel p' samples input M^-1 p'), one
    ``cv2.warpAffine`` per channel; ``fill`` outside when ``border == "constant"``."""
    c, h, w = x.shape
    a = m[:2].numpy().astype(np.float64)
    out = np.empty_like(x)
    for i in range(c):
        out[i] = cv2.warpAffine(x[i], a, (w, h), flags=INTERPOLATIONS[interpolation], borderMode=BORDERS[border],
                                borderValue=float(fill))
    return out


def _apply_points(m: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 matrix to (..., 2k) interleaved x y coordinates."""
    shp = xy.shape
    p = xy.reshape(-1, 2).to(torch.float64)
    q = p @ m[:2, :2].T + m[:2, 2]
    return q.reshape(shp).to(xy.dtype)


def _tight_boxes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 4) tight boxes of (N, H, W) masks and a (N,) bool 'non-empty'."""
    n = masks.shape[0]
    out = torch.zeros(n, 4)
    ok = torch.zeros(n, dtype=torch.bool)
    for i in range(n):
        ys, xs = torch.nonzero(masks[i], as_tuple=True)
        if len(xs):
            out[i] = torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).float()
            ok[i] = True
    return out, ok


def _points_box(recist: torch.Tensor) -> torch.Tensor:
    x, y = recist[:, 0::2], recist[:, 1::2]
    return torch.stack([x.amin(1), y.amin(1), x.amax(1), y.amax(1)], 1)


class TrainTransform:
    """Random flip + shift/scale/rotate on ``(image (1, D, H, W), target)``; see the module docstring."""

    def __init__(self, flip_p: float = 0.5, shift: float = 0.04, scale: float = 0.2, rotate: float = 15.0,
                 p: float = 0.8, max_tries: int = 10, fill: float = -50.0, interpolation: str = "bicubic",
                 border: str = "reflect101"):
        if interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"interpolation must be bicubic or bilinear, got {interpolation!r}")
        if border not in BORDERS:
            raise ValueError(f"border must be one of {', '.join(BORDERS)}, got {border!r}")
        self.flip_p, self.shift, self.scale, self.rotate, self.p = flip_p, shift, scale, rotate, p
        self.max_tries, self.fill, self.interpolation, self.border = max_tries, fill, interpolation, border

    def __repr__(self) -> str:
        return (f"TrainTransform(flip_p={self.flip_p}, shift={self.shift}, scale={self.scale}, "
                f"rotate={self.rotate}, p={self.p}, interpolation={self.interpolation!r}, border={self.border!r})")

    def __call__(self, image: torch.Tensor, target: dict, generator: torch.Generator | None = None):
        def rand() -> float:
            return float(torch.rand((), generator=generator, dtype=torch.float64))

        if rand() < self.flip_p:
            image, target = hflip(image, target)
        if rand() >= self.p or target["boxes"].shape[0] == 0:
            return image, target
        for _ in range(self.max_tries):
            angle = (2 * rand() - 1) * self.rotate
            s = 1.0 + (2 * rand() - 1) * self.scale
            dx = (2 * rand() - 1) * self.shift
            dy = (2 * rand() - 1) * self.shift
            out = self.apply(image, target, angle, s, dx, dy)
            if out[1]["boxes"].shape[0] > 0:
                return out
        return image, target

    def apply(self, image: torch.Tensor, target: dict, angle: float, scale: float, dx: float, dy: float):
        """Apply one shift/scale/rotate with given parameters (degrees, factor, fractions of W/H)."""
        _, d, h, w = image.shape
        m = affine_matrix(h, w, angle, scale, dx, dy)
        img = torch.from_numpy(warp(np.ascontiguousarray(image[0].numpy()), m, self.interpolation, self.border,
                                    self.fill))
        boxes = target["boxes"].float()
        n = boxes.shape[0]
        recist = target.get("recist")
        t = dict(target)
        keep = torch.ones(n, dtype=torch.bool)
        new_boxes = torch.zeros(n, 4)
        if recist is not None:
            new_recist = _apply_points(m, recist.float())
            t["recist"] = new_recist
            src_pts_box = _points_box(recist.float())
        else:
            # no RECIST: use the box corners (a rotated box grows)
            corners = torch.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [2, 3]], boxes[:, [0, 3]]], 1)
            new_recist = _apply_points(m, corners.reshape(n, 8))
            src_pts_box = boxes
        pts_box = _points_box(new_recist)
        margin_pts = torch.cat([src_pts_box[:, :2] - boxes[:, :2], boxes[:, 2:] - src_pts_box[:, 2:]], 1)
        new_boxes[:] = pts_box + torch.cat([-margin_pts[:, :2], margin_pts[:, 2:]], 1) * scale
        ctr = (pts_box[:, :2] + pts_box[:, 2:]) / 2
        keep &= (ctr[:, 0] >= 0) & (ctr[:, 0] <= w - 1) & (ctr[:, 1] >= 0) & (ctr[:, 1] <= h - 1)
        if "masks" in target and n:
            masks = target["masks"]
            src_mb, src_ok = _tight_boxes(masks)
            wm = torch.from_numpy(warp(masks.numpy().astype(np.uint8), m, "nearest", "constant", 0)) > 0
            mb, ok = _tight_boxes(wm)
            margin = torch.cat([src_mb[:, :2] - boxes[:, :2], boxes[:, 2:] - src_mb[:, 2:]], 1)
            mbox = mb + torch.cat([-margin[:, :2], margin[:, 2:]], 1) * scale
            new_boxes = torch.where(src_ok[:, None], mbox, new_boxes)
            keep = torch.where(src_ok, ok, keep)
            t["masks"] = wm.to(masks.dtype)
        new_boxes[:, 0::2] = new_boxes[:, 0::2].clamp(0, w - 1)
        new_boxes[:, 1::2] = new_boxes[:, 1::2].clamp(0, h - 1)
        keep &= (new_boxes[:, 2] - new_boxes[:, 0] >= 1) & (new_boxes[:, 3] - new_boxes[:, 1] >= 1)
        t["boxes"] = new_boxes[keep].to(target["boxes"].dtype)
        for k in ("labels", "recist", "masks", "lesion_type", "diameters_mm"):
            if k in t and torch.is_tensor(t[k]) and t[k].ndim >= 1 and t[k].shape[0] == n:
                t[k] = t[k][keep]
        if "spacing" in t:
            sp = t["spacing"].clone()
            sp[:2] = sp[:2] / scale
            t["spacing"] = sp
        return img.unsqueeze(0), t
