"""Where a prediction lies on the source DICOM images: the instance behind each slice, image
coordinates on it, and the label frames of the source images.

DICOM image coordinates (SCOORD) are (column, row) with (0, 0) the top-left corner of the first
pixel, the same pixel-edge convention as a3d's ``box_px``; they are obtained through the patient
position (canonical slice -> LPS -> the series' own grid), so any in-plane flip of the series is
undone exactly. Interpolated slices (``scan.interpolated``) have no source image: nothing is ever
placed on them. A multi-frame source (Enhanced / Legacy Converted Enhanced CT) is referenced by its
SOP Instance UID and the frame number of each slice (``scan.source_frames``).
"""

from __future__ import annotations

import copy
import io

import numpy as np
from pydicom.dataset import Dataset

from a3d.data.scans import Scan
from a3d.errors import A3DError
from a3d.predict.labels import label_volume
from a3d.predict.results import PredictionResult

# Patient/study attributes a derived object copies from its source; type 2 (present, may be
# empty): filled with empty values when the source leaves them out.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def dcm_bytes(ds) -> bytes:
    """A dataset as a DICOM file (preamble and file meta), in memory: written atomically by the caller."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def check_dicom_source(scan: Scan) -> None:
    if scan.kind != "dicom" or not scan.source_headers:
        raise A3DError(f"{scan.source}: --dicom writes DICOM SEG/SR referencing the source images; "
                       f"it needs a DICOM series input (this is {scan.kind})")
    ks = source_slices(scan)
    framed = {scan.slice_files[k] for k in ks if source_frame(scan, k) is not None}
    if framed and (len(framed) > 1 or len(framed) < len({scan.slice_files[k] for k in ks})):
        raise A3DError(f"{scan.source}: --dicom: the series is spread over {len({scan.slice_files[k] for k in ks})} "
                       "files of which some are multi-frame; a DICOM SEG references one multi-frame image or "
                       "single-frame images (choose one multi-frame file's series, or convert the series)")


def source_frame(scan: Scan, k: int) -> int | None:
    """The 1-based frame number of original slice ``k`` in its multi-frame source, or None (single-frame)."""
    frames = scan.source_frames
    return frames[k] if frames and 0 <= k < len(frames) else None


def source_dataset(scan: Scan, k: int) -> Dataset:
    """The header of original slice ``k``'s source image, with the type-2 patient/study attributes
    present (empty when the source leaves them out), as highdicom copies them."""
    h = scan.source_headers[k] if 0 <= k < len(scan.source_headers) else None
    if h is None:
        raise A3DError(f"{scan.source}: slice {k} is interpolated (no source image); nothing can reference it")
    ds = copy.deepcopy(h)
    for key in _TYPE2:
        if key not in ds:
            setattr(ds, key, "")
    return ds


def source_slices(scan: Scan) -> list[int]:
    """Original slice indices that have a source image, in order."""
    return [k for k, h in enumerate(scan.source_headers) if h is not None]


def image_point(scan: Scan, x: float, y: float, z: int) -> tuple[int, float, float]:
    """Canonical pixel-edge point (x, y) on canonical slice z -> (original slice k, column, row) in
    DICOM image coordinates of that slice's source image."""
    i, j, k = scan.original_index(scan.physical_point(x - 0.5, y - 0.5, z))
    return int(round(k)), i + 0.5, j + 0.5


def image_polyline(scan: Scan, points_xy: np.ndarray, z: int) -> tuple[int, np.ndarray]:
    """(original slice k, (N, 2) float32 column/row) for canonical pixel-edge points on slice z."""
    mapped = [image_point(scan, float(x), float(y), z) for x, y in np.asarray(points_xy, dtype=float).reshape(-1, 2)]
    return mapped[0][0], np.array([[c, r] for _, c, r in mapped], dtype=np.float32)


def label_frames(res: PredictionResult) -> tuple[np.ndarray, list[int]]:
    """(n_source, rows, cols) uint16 candidate ids on the source images (the label volume of
    ``labels.nii.gz`` at those slices, in the series' own row/column layout) and their slice indices."""
    import SimpleITK as sitk  # lazy: keeps `import a3d.predict` light

    vol = sitk.GetArrayFromImage(label_volume(res))  # (slices, rows, cols) of the series' grid
    ks = source_slices(res.scan)
    return vol[ks], ks
