"""NIfTI's own checks (.nii, .nii.gz), which ITK leaves out: complete data, positive pixdim, an
orientation, NaN/infinite voxels (ITK turns them into 0). :func:`a3d.data.scans.volume.read_volume`
reads every volume file and calls :func:`check_nifti` for NIfTI."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from a3d.data.scans.geometry import _sitk
from a3d.errors import A3DError


def check_nifti(path: Path, img, dim: int) -> tuple[object, list[str]]:
    """(the image with NaN/infinite voxels restored, warnings) after the NIfTI header checks."""
    _check_nifti_complete(path, img)
    hdr = _nifti_header(path)
    warnings = []
    if hdr is not None:
        pixdim, qform, sform = hdr
        if any(not (p > 0) for p in pixdim[: min(dim, 3)]):
            raise A3DError(f"{path}: NIfTI header has no voxel spacing (pixdim {list(pixdim[:3])}); expected positive spacing in mm")
        if qform <= 0 and sform <= 0:
            warnings.append(f"{path}: NIfTI header has no orientation (qform_code = sform_code = 0); axes assumed as stored")
    return _restore_non_finite(path, img), warnings


_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 / float64


def _restore_non_finite(path: Path, img):
    """ITK's NIfTI reader (nifti_fix_float) turns NaN and infinite voxels into 0 (water) silently:
    find them in the file's raw float data and put NaN back, for finish_scan to name and replace."""
    found = _nifti1_header(path)
    if found is None:
        return img
    raw, end = found
    dtype = _FLOAT_TYPES.get(struct.unpack(end + "h", raw[70:72])[0])
    if dtype is None:
        return img
    vox_offset = int(struct.unpack(end + "f", raw[108:112])[0])
    n = int(np.prod(img.GetSize()))
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        f.seek(vox_offset)
        data = np.frombuffer(f.read(n * int(dtype[1])), dtype=end + dtype, count=n)
    bad = ~np.isfinite(data)
    if not bad.any():
        return img
    arr = _sitk().GetArrayFromImage(img).astype(np.float32)
    arr.reshape(-1)[bad] = np.nan  # the file's order (x fastest) is the array's C order (z, y, x)
    out = _sitk().GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def _check_nifti_complete(path: Path, img) -> None:
    """ITK reads a truncated NIfTI (gzip or not) without complaint, padding it: check the length."""
    total = 0
    try:
        if str(path).lower().endswith(".gz"):
            with gzip.open(path, "rb") as f:
                while True:
                    chunk = f.read(1 << 22)
                    if not chunk:
                        break
                    total += len(chunk)
        else:
            total = os.path.getsize(path)
    except (OSError, EOFError, zlib.error) as e:
        raise A3DError(f"{path}: corrupt or truncated NIfTI file ({type(e).__name__}: {str(e)[:120]})") from e
    hdr = _nifti_raw(path)
    if hdr is not None:
        vox_offset, nbytes = hdr
        if total < vox_offset + nbytes:
            raise A3DError(f"{path}: truncated NIfTI file ({total} bytes of image data, expected {int(vox_offset + nbytes)})")


def _nifti1_header(path: Path):
    """(raw 348-byte NIfTI-1 header, struct byte-order prefix), or None (unreadable, NIfTI-2, other)."""
    try:
        opener = gzip.open if str(path).lower().endswith(".gz") else open
        with opener(path, "rb") as f:
            raw = f.read(348)
    except (OSError, EOFError):
        return None
    if len(raw) < 348:
        return None
    for end in ("<", ">"):
        if struct.unpack(end + "i", raw[:4])[0] == 348:
            return raw, end
    return None


def _nifti_raw(path: Path):
    """(vox_offset, voxel data bytes) from a NIfTI-1 header, or None."""
    found = _nifti1_header(path)
    if found is None:
        return None
    raw, end = found
    dims = struct.unpack(end + "8h", raw[40:56])
    bitpix = struct.unpack(end + "h", raw[72:74])[0]
    vox_offset = struct.unpack(end + "f", raw[108:112])[0]
    n = 1
    for d in dims[1 : 1 + max(0, min(dims[0], 7))]:
        n *= max(int(d), 1)
    return float(vox_offset), n * max(int(bitpix), 0) // 8


def _nifti_header(path: Path):
    """(pixdim[1:4], qform_code, sform_code) from a NIfTI-1 header (ITK replaces zero pixdims by 1)."""
    found = _nifti1_header(path)
    if found is None:
        return None  # NIfTI-2 or unknown: trust ITK
    raw, end = found
    pixdim = struct.unpack(end + "8f", raw[76:108])[1:4]
    qform, sform = struct.unpack(end + "hh", raw[252:256])
    return pixdim, qform, sform
