"""Lesions of a label volume: 3D connected components, their key slice and RECIST-like measurement.

- A lesion is a 3D connected component (26-connectivity: faces, edges and corners touch) of the
  voxels of **one** chosen label value (two touching values are two lesions).
- Its key slice is its largest axial cross-section (most voxels); among equal ones, the slice
  nearest its centroid, then the lowest.
- On that cross-section: RECIST long and short axes (:func:`a3d.data.recist.recist_from_mask`:
  boundary pixel centres, 0-based here) and DeepLesion's box (extremes padded by 5 px).
- Its centre is the mean of its voxel centres (canonical voxel indices); its volume the voxel count
  times the voxel volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from a3d.data.recist import padded_box, recist_from_mask

__all__ = ["Lesion", "find_lesions"]


@dataclass(frozen=True)
class Lesion:
    """One labelled lesion, in canonical (LPS) voxel indices."""

    value: int  # its label value
    key: int  # canonical slice (0-based, inferior -> superior) of the largest axial cross-section
    mask: np.ndarray  # bool (H, W): the cross-section on the key slice
    centre: tuple[float, float, float]  # x, y, z: mean voxel index
    volume_mm3: float
    recist: np.ndarray  # float64 (8,) 0-based: long x1 y1 x2 y2, short x3 y3 x4 y4
    diameters_px: np.ndarray  # float64 (2,): long, short
    box: np.ndarray  # float64 (4,) 0-based x1 y1 x2 y2 (padded, clipped)


def _sitk():
    # SimpleITK: imported when a volume is imported (connected components), keeping a3d.data light
    import SimpleITK as sitk

    return sitk


def _key_slice(areas: np.ndarray, zs_mean: float) -> int:
    """Index of the largest area; ties: nearest to ``zs_mean``, then the lowest."""
    best = np.flatnonzero(areas == areas.max())
    return int(best[np.argmin(np.abs(best - zs_mean))])


def _lesion(value: int, crop: np.ndarray, offset: tuple[int, int, int], shape_hw: tuple[int, int],
            voxel_mm3: float) -> Lesion:
    """The lesion of one component, given its boolean (z, y, x) crop at ``offset`` (z0, y0, x0)."""
    z0, y0, x0 = offset
    zz, yy, xx = np.nonzero(crop)
    areas = np.bincount(zz, minlength=crop.shape[0])
    k = _key_slice(areas, float(zz.mean()))
    mask = np.zeros(shape_hw, dtype=bool)
    mask[y0:y0 + crop.shape[1], x0:x0 + crop.shape[2]] = crop[k]
    recist, diameters = recist_from_mask(mask)
    centre = (float(xx.mean() + x0), float(yy.mean() + y0), float(zz.mean() + z0))
    return Lesion(int(value), int(k + z0), mask, centre, float(len(zz) * voxel_mm3), recist, diameters,
                  padded_box(mask))


def _components(binary: np.ndarray):
    """(component image as a numpy int array, LabelShapeStatistics) of a boolean volume, 26-connected."""
    sitk = _sitk()
    cc = sitk.ConnectedComponent(sitk.GetImageFromArray(binary.astype(np.uint8)), True)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(cc)
    return sitk.GetArrayFromImage(cc), stats


def find_lesions(labels: np.ndarray, values: Sequence[int] | None, spacing: Sequence[float]) -> list[Lesion]:
    """Every lesion of ``labels`` (int (Z, Y, X), canonical) among ``values`` (None: every non-zero
    value), ordered by key slice, label value, then centre (y, x).

    ``spacing``: (x, y, z) mm of the voxels.
    """
    chosen = sorted(int(v) for v in np.unique(labels) if v != 0) if values is None else sorted(set(values))
    voxel_mm3 = float(np.prod(spacing))
    out: list[Lesion] = []
    for value in chosen:
        binary = labels == value
        if not binary.any():
            continue
        cc, stats = _components(binary)
        for c in stats.GetLabels():
            x0, y0, z0, w, h, d = stats.GetBoundingBox(c)
            crop = cc[z0:z0 + d, y0:y0 + h, x0:x0 + w] == c
            out.append(_lesion(value, crop, (z0, y0, x0), labels.shape[1:], voxel_mm3))
    out.sort(key=lambda les: (les.key, les.value, les.centre[1], les.centre[0]))
    return out
