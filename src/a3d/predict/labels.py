"""The NIfTI label volume: candidate id per voxel, in the input file's exact geometry."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from a3d.predict.results import PredictionResult


def label_volume(res: PredictionResult):
    """SimpleITK uint16 image, candidate id per voxel (0: none), with the input's exact geometry."""
    import SimpleITK as sitk  # lazy: keeps `import a3d.predict` light

    scan = res.scan
    arr = np.zeros(scan.hu.shape, dtype=np.uint16)
    for c in sorted(res.candidates, key=lambda c: -c.id):  # higher-scoring (lower id) drawn last
        for d in c.detections:
            if d.mask is None:
                continue
            x0, y0 = d.mask_origin
            hh, ww = d.mask.shape
            view = arr[d.z, y0 : y0 + hh, x0 : x0 + ww]
            view[d.mask] = c.id
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(scan.image)
    orig = scan.original
    code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(orig.GetDirection())
    back = sitk.DICOMOrient(img, code)
    moved = back.GetSize() != orig.GetSize() or (
        np.abs(np.subtract(back.GetOrigin(), orig.GetOrigin())).max() > 1e-3 * max(orig.GetSpacing())
    )
    if moved:  # re-orienting did not land on the input's grid: resample onto it
        back = sitk.Resample(img, orig, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    back.CopyInformation(orig)  # exact same header geometry as the input
    return back


def write_labels(res: PredictionResult, path: Path) -> None:
    """``label_volume`` written atomically to ``path`` (.nii.gz)."""
    import SimpleITK as sitk  # lazy: keeps `import a3d.predict` light

    tmp = path.parent / f".{path.name.split('.')[0]}.tmp.nii.gz"  # SimpleITK picks the writer from the suffix
    try:
        sitk.WriteImage(label_volume(res), str(tmp), True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
