"""The :class:`Scan` every reader returns, and the last step of every reader (:func:`finish_scan`):
checks, canonical LPS orientation, float32 HU. See :mod:`a3d.data.scans` for the orientation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from a3d.errors import A3DError

CANONICAL = "LPS"
NON_FINITE_HU = -1024.0  # what NaN/infinite voxels become: air, like the padding of the model input


def _sitk():
    # SimpleITK: imported when a scan is read, so that a3d.data stays light for the training workers
    import SimpleITK as sitk

    return sitk


@dataclass
class Scan:
    """A CT volume in HU, canonical (LPS) orientation, with its geometry.

    ``hu`` is float32 (Z, Y, X). ``image`` is the canonical SimpleITK image (same voxels; holds
    spacing/origin/direction) and ``original`` the image as read from the input (the geometry
    outputs such as the NIfTI label volume are written in).
    """

    hu: np.ndarray
    image: object  # SimpleITK.Image, geometry of the canonical orientation (uint8 placeholder voxels)
    original: object  # SimpleITK.Image, geometry of the input as read (uint8 placeholder voxels)
    source: str
    kind: str  # "dicom" | "nifti" | "deeplesion-png"
    name: str
    series_uid: str | None = None
    slice_files: list[str | None] | None = None  # DICOM/PNG: file of each original slice (None: interpolated)
    warnings: list[str] = field(default_factory=list)
    # DICOM: original slice indices with no source image (filled by interpolation, --allow-missing)
    interpolated: tuple[int, ...] = ()
    # DICOM: the pydicom header (no pixel data) of each original slice's source image (None: interpolated)
    source_headers: list | None = None
    # DICOM: 1-based frame number of each original slice in its multi-frame source file (None: single-frame)
    source_frames: list[int | None] | None = None

    # geometry helpers -------------------------------------------------------------------------
    @property
    def spacing(self) -> tuple[float, float, float]:
        """(x, y, z) voxel spacing in mm of the canonical volume."""
        return tuple(float(s) for s in self.image.GetSpacing())

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.hu.shape)

    @property
    def original_orientation(self) -> str:
        return _sitk().DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.original.GetDirection())

    def physical_point(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """Physical LPS point (mm) of a continuous canonical voxel index (voxel centres at integers)."""
        return tuple(float(v) for v in self.image.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z))))

    def original_index(self, point: Sequence[float]) -> tuple[float, float, float]:
        """Continuous voxel index (i, j, k) in the input file's own grid of a physical point."""
        return tuple(float(v) for v in self.original.TransformPhysicalPointToContinuousIndex(tuple(float(p) for p in point)))

    def original_slice_axis(self) -> int:
        """Which axis (0, 1, 2) of the input's voxel grid is the canonical z (slice) axis."""
        d = np.asarray(self.original.GetDirection(), dtype=float).reshape(3, 3)
        zc = np.asarray(self.image.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
        return int(np.argmax(np.abs(d.T @ zc)))

    def original_slice_index(self, z: int) -> int:
        """Index of canonical slice ``z`` along the input's slice axis (the ``k`` of a NIfTI, the
        position in the sorted DICOM series)."""
        p = self.physical_point(0, 0, z)
        return int(round(self.original_index(p)[self.original_slice_axis()]))

    def geometry(self) -> dict:
        """JSON-ready description of both grids."""

        def desc(img):
            return {
                "size": [int(v) for v in img.GetSize()],
                "spacing": [float(v) for v in img.GetSpacing()],
                "origin": [float(v) for v in img.GetOrigin()],
                "direction": [float(v) for v in img.GetDirection()],
            }

        orig = desc(self.original)
        orig["orientation"] = _sitk().DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.original.GetDirection())
        canon = desc(self.image)
        canon["orientation"] = CANONICAL
        canon["array_axes"] = "hu[z, y, x]: x right->left, y anterior->posterior, z inferior->superior"
        return {"coordinate_system": "LPS", "original": orig, "canonical": canon}


def _check_geometry(img, source: str) -> None:
    if img.GetDimension() == 2:
        raise A3DError(f"{source}: a single 2D image; a3d predict needs a CT volume with several axial slices")
    if img.GetDimension() != 3:
        raise A3DError(f"{source}: {img.GetDimension()}-D image; expected a 3D CT volume")
    size = img.GetSize()
    if min(size) < 2:
        raise A3DError(f"{source}: image of size {tuple(size)} is a single 2D slice; expected a 3D CT volume with several slices")
    sp = img.GetSpacing()
    if not all(math.isfinite(s) and s > 0 for s in sp):
        raise A3DError(f"{source}: invalid voxel spacing {tuple(sp)}; expected positive spacing in mm")


def _geometry_only(img):
    sitk = _sitk()
    g = sitk.Image([int(v) for v in img.GetSize()], sitk.sitkUInt8)
    g.CopyInformation(img)
    return g


def _replace_non_finite(scan: Scan) -> None:
    """NaN/infinite voxels (float NIfTI) become air (NON_FINITE_HU), with a warning naming the slices."""
    bad = ~np.isfinite(scan.hu)
    if not bad.any():
        return
    per_slice = bad.sum(axis=(1, 2))
    zs = np.nonzero(per_slice)[0]
    scan.hu[bad] = NON_FINITE_HU
    named = sorted((scan.original_slice_index(int(z)), int(per_slice[z])) for z in zs)
    listed = ", ".join(f"{k} ({n})" for k, n in named[:10]) + (f" ... and {len(named) - 10} more" if len(named) > 10 else "")
    scan.warnings.append(f"{scan.source}: {int(bad.sum())} NaN or infinite voxels on {len(zs)} slices "
                         f"(slice (voxels): {listed}); replaced by {NON_FINITE_HU:g} HU (air)")


def finish_scan(img, source: str, kind: str, name: str, **kw) -> Scan:
    """Orient to canonical LPS, convert to float32 HU array."""
    sitk = _sitk()
    _check_geometry(img, source)
    original = img
    canon = sitk.DICOMOrient(img, CANONICAL)
    hu = sitk.GetArrayFromImage(canon).astype(np.float32, copy=False)
    # keep only the geometry of both images (uint8 placeholders): the voxels live in ``hu``
    scan = Scan(hu=np.ascontiguousarray(hu), image=_geometry_only(canon), original=_geometry_only(original),
                source=str(source), kind=kind, name=name, **kw)
    del canon, original
    _replace_non_finite(scan)
    lo, hi = np.percentile(scan.hu[:: max(1, scan.hu.shape[0] // 16)], [1, 99])
    if lo > -500 or hi < -200:
        scan.warnings.append(
            f"intensities (1st-99th percentile {lo:.0f}..{hi:.0f}) do not look like CT Hounsfield units (air about -1000)"
        )
    return scan
