"""Reading one case: the image and its label volume on the same canonical (LPS) grid, checked.

Both files go through :func:`a3d.data.scans.read_scan` / :func:`a3d.data.scans.read_volume`, so the
label is re-oriented by the very code that orients the image (and that ``a3d predict`` uses), in
whichever volume format each is stored.
"""

from __future__ import annotations

import numpy as np

from a3d.data.importer.sources import Case
from a3d.data.scans import Scan, read_scan, read_volume
from a3d.errors import A3DError

# geometry agreement between image and label: relative spacing, origin (mm), direction cosines
_SPACING_RTOL = 1e-4
_ORIGIN_ATOL_MM = 1e-3
_DIRECTION_ATOL = 1e-4
# in-plane pixels must be square (DeepLesion stores one pixel size): relative difference allowed
_SQUARE_RTOL = 1e-3

__all__ = ["read_case"]


def _grid(scan: Scan) -> tuple[np.ndarray, ...]:
    img = scan.image
    return (np.array(img.GetSize()), np.array(img.GetSpacing()), np.array(img.GetOrigin()),
            np.array(img.GetDirection()))


def _check_same_grid(image: Scan, label: Scan, case: Case) -> None:
    size, spacing, origin, direction = _grid(image)
    l_size, l_spacing, l_origin, l_direction = _grid(label)
    problem = None
    if not np.array_equal(size, l_size):
        problem = f"size {tuple(l_size)} vs the image's {tuple(size)}"
    elif not np.allclose(spacing, l_spacing, rtol=_SPACING_RTOL, atol=0):
        problem = f"spacing {tuple(l_spacing.round(4))} vs the image's {tuple(spacing.round(4))} mm"
    elif not np.allclose(origin, l_origin, rtol=0, atol=_ORIGIN_ATOL_MM):
        problem = f"origin {tuple(l_origin.round(3))} vs the image's {tuple(origin.round(3))} mm"
    elif not np.allclose(direction, l_direction, rtol=0, atol=_DIRECTION_ATOL):
        problem = "orientation (direction cosines) differs from the image's"
    if problem:
        raise A3DError(f"{case.label}: label volume not on its image's grid ({problem}; image {case.image})")


def _label_values(label: Scan, case: Case) -> np.ndarray:
    """The label volume as int32 (Z, Y, X); A3DError for non-integer or negative values."""
    v = label.hu
    frac = v != np.round(v)
    if frac.any():
        example = float(v[frac].flat[0])
        raise A3DError(f"{case.label}: label map has non-integer values (e.g. {example:g}); expected integer labels")
    lo, hi = float(v.min()), float(v.max())
    if lo < 0:
        raise A3DError(f"{case.label}: label map has negative values (min {lo:g}); expected labels 0 (background) "
                       "and positive integers")
    if hi > np.iinfo(np.int32).max:
        raise A3DError(f"{case.label}: label values up to {hi:g}; expected integer labels below 2**31")
    return v.astype(np.int32)


def read_case(case: Case) -> tuple[Scan, np.ndarray]:
    """(image Scan in canonical LPS, int32 label array (Z, Y, X) on the same canonical grid).

    A3DError naming the file: unreadable or 2D image or label, different grids, non-integer or
    negative labels, non-square in-plane pixels.
    """
    image = read_scan(case.image)
    if image.kind == "deeplesion-png":
        raise A3DError(f"{case.image}: expected a volume file (NIfTI, NRRD, MetaImage) or a DICOM series folder, "
                       f"got a {image.kind} input")
    if not case.label.is_file():
        raise A3DError(f"{case.label}: label file not found")
    label = read_volume(case.label)
    _check_same_grid(image, label, case)
    sx, sy, _sz = image.spacing
    if abs(sx - sy) > _SQUARE_RTOL * max(sx, sy):
        raise A3DError(f"{case.image}: in-plane pixels are not square ({sx:g} x {sy:g} mm); the DeepLesion format "
                       "stores one pixel size (resample the volume first)")
    return image, _label_values(label, case)
