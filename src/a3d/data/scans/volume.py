"""Volume files (NIfTI, NRRD, MetaImage) -> :class:`Scan`: one reader for everything ITK reads as
one file (plus, for ``.nhdr``/``.mhd``, the data files their header names).

The same checks for every format: the file (and its data files) readable, a 3D image (4D with one
volume), one value per voxel, positive spacing (:func:`a3d.data.scans.geometry.finish_scan`), all
the voxel data present; NIfTI adds its own header checks (:func:`a3d.data.scans.nifti.check_nifti`),
NRRD and MetaImage theirs (:func:`a3d.data.scans.itk_headers.check_volume_data`). The geometry is
ITK's for every format (NRRD's space directions and origin, MetaImage's TransformMatrix and Offset,
NIfTI's qform/sform), so the same volume gives the same :class:`Scan` whichever file holds it.
"""

from __future__ import annotations

import os
from pathlib import Path

from a3d.data.scans.files import scan_name, volume_kind
from a3d.data.scans.geometry import Scan, _sitk, finish_scan
from a3d.data.scans.itk_headers import check_volume_data
from a3d.data.scans.nifti import check_nifti
from a3d.errors import A3DError

_IMAGE_IO = {"nifti": "NiftiImageIO", "nrrd": "NrrdImageIO", "metaimage": "MetaImageIO"}
FORMAT_NAMES = {"nifti": "NIfTI", "nrrd": "NRRD", "metaimage": "MetaImage"}


def _itk_reason(e: RuntimeError) -> str:
    """The informative line of an ITK exception: the innermost of teem's ``[nrrd]`` chain, else the
    first line saying "error" or "cannot" (the first lines are source file locations)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    nrrd = [ln[len("[nrrd]"):].strip() for ln in lines if ln.startswith("[nrrd]")]
    detail = nrrd[-1] if nrrd else next((ln for ln in lines if "rror" in ln or "annot" in ln), lines[-1] if lines else "")
    return detail[:160]


def _read_image(path: Path, kind: str):
    """(SimpleITK image, its dimension, its size, components per voxel), as ITK reads it."""
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.SetImageIO(_IMAGE_IO[kind])
    try:
        reader.ReadImageInformation()
        dim, size, comps = reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents()
        return reader.Execute(), dim, size, comps
    except RuntimeError as e:
        raise A3DError(f"{path}: not a readable {FORMAT_NAMES[kind]} file ({_itk_reason(e)})") from e


def read_volume(path: str | os.PathLike) -> Scan:
    """Read a NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr) or MetaImage (.mha, .mhd) volume.
    A3DError naming the file for anything unreadable, incomplete or not a 3D scalar volume."""
    path = Path(path)
    kind = volume_kind(path)
    if kind is None:
        raise A3DError(f"{path}: not a volume file (expected .nii, .nii.gz, .nrrd, .nhdr, .mha or .mhd)")
    fmt = FORMAT_NAMES[kind]
    if not os.access(path, os.R_OK):
        raise A3DError(f"{path}: file cannot be read (permission denied)")
    if kind != "nifti":
        check_volume_data(path, kind, fmt)
    img, dim, size, comps = _read_image(path, kind)
    if comps != 1:
        raise A3DError(f"{path}: {fmt} image with {comps} values per voxel (a vector or colour image, or a 3D Slicer "
                       "segmentation whose overlapping segments fill several layers); expected one value per voxel "
                       "(a CT volume, or a label map: in Slicer, export the segmentation to a labelmap)")
    if dim == 4 and size[3] == 1:
        img = img[:, :, :, 0]
    elif dim > 3:
        raise A3DError(f"{path}: {dim}-D {fmt} of size {tuple(size)}; expected a single 3D CT volume")
    warnings: list[str] = []
    if kind == "nifti":
        img, warnings = check_nifti(path, img, dim)
    scan = finish_scan(img, str(path), kind, scan_name(path))
    scan.warnings[:0] = warnings
    return scan
