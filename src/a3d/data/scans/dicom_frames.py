"""The images (slices) of DICOM files: a single-frame CT file is one image; an Enhanced or Legacy
Converted Enhanced CT file is one image per frame, each with its own position, orientation, pixel
spacing, rescale, frame type and tilt from the functional groups (per-frame first, then shared;
DICOM PS3.3 C.7.6.16)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from a3d.data.scans.dicom_files import DicomFile

# functional group sequence -> the attribute a3d reads from its item
_GROUPS = {
    "ImagePositionPatient": "PlanePositionSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "PixelSpacing": "PixelMeasuresSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "FrameType": "CTImageFrameTypeSequence",
    "GantryDetectorTilt": "CTAcquisitionDetailsSequence",
    "FrameAcquisitionNumber": "FrameContentSequence",
}


def _floats(v, n: int) -> np.ndarray | None:
    try:
        out = np.asarray([float(x) for x in v], dtype=float) if v is not None else None
    except (TypeError, ValueError):
        return None
    return out if out is not None and len(out) == n else None


def _strings(v) -> list[str]:
    if v is None:
        return []
    return [str(t).upper() for t in (v if isinstance(v, (list, pydicom.multival.MultiValue)) else [v])]


@dataclass
class DicomImage:
    """One slice: a single-frame file (``frame`` None) or frame ``frame`` (0-based) of a multi-frame
    file. ``pixel_spacing`` is DICOM's (between rows, between columns) in mm; HU = stored x slope +
    intercept."""

    file: DicomFile
    frame: int | None
    ipp: np.ndarray | None  # (3,) ImagePositionPatient, mm LPS
    iop: np.ndarray | None  # (6,) ImageOrientationPatient: row direction, column direction
    pixel_spacing: tuple[float, float] | None
    slope: float
    intercept: float
    image_type: list[str]
    tilt: float | None
    acquisition_number: int | None

    @property
    def path(self) -> str:
        return self.file.path

    @property
    def name(self) -> str:
        return self.file.name if self.frame is None else f"{self.file.name} frame {self.frame + 1}"

    @property
    def key(self) -> tuple[str, int | None]:
        return (self.file.path, self.frame)

    @property
    def instance(self) -> tuple[str, int | None] | None:
        """(SOPInstanceUID, frame): the same image wherever its file lies; None without a UID."""
        return (self.file.sop_uid, self.frame) if self.file.sop_uid else None

    @property
    def rows(self) -> int:
        return int(self.file.ds.get("Rows", 0) or 0)

    @property
    def columns(self) -> int:
        return int(self.file.ds.get("Columns", 0) or 0)

    def acquisition(self) -> int | None:
        return self.acquisition_number

    def orientation(self) -> np.ndarray | None:
        return self.iop

    def position(self) -> np.ndarray | None:
        return self.ipp


def _lookup(ds: Dataset, frame: int | None, per_frame, shared):
    """attribute -> value for one frame: per-frame functional groups, then shared, then the top level."""

    def get(attr: str):
        if frame is not None:
            for groups in (per_frame[frame] if per_frame is not None and frame < len(per_frame) else None,
                           shared[0] if shared else None):
                seq = groups.get(_GROUPS[attr]) if groups is not None else None
                if seq and attr in seq[0]:
                    return seq[0][attr].value
        return ds.get(attr)

    return get


def _optional_number(v, kind):
    try:
        return kind(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _image(f: DicomFile, frame: int | None, per_frame, shared) -> DicomImage:
    get = _lookup(f.ds, frame, per_frame, shared)
    ps = _floats(get("PixelSpacing"), 2)
    slope, intercept = get("RescaleSlope"), get("RescaleIntercept")
    image_type = _strings(get("FrameType")) if frame is not None and get("FrameType") else _strings(f.ds.get("ImageType"))
    acq = get("FrameAcquisitionNumber") if frame is not None else None
    return DicomImage(
        f, frame, _floats(get("ImagePositionPatient"), 3), _floats(get("ImageOrientationPatient"), 6),
        (float(ps[0]), float(ps[1])) if ps is not None else None,
        float(slope) if slope not in (None, "") else 1.0, float(intercept) if intercept not in (None, "") else 0.0,
        image_type, _optional_number(get("GantryDetectorTilt"), float),
        _optional_number(acq if acq not in (None, "") else f.ds.get("AcquisitionNumber"), int))


def is_multi_frame(f: DicomFile) -> bool:
    """A multi-frame file with functional groups (Enhanced / Legacy Converted Enhanced CT)."""
    return f.n_frames > 1 or "PerFrameFunctionalGroupsSequence" in f.ds


def file_images(f: DicomFile) -> list[DicomImage]:
    """The images of one file: itself, or each of its frames."""
    if not is_multi_frame(f):
        return [_image(f, None, None, None)]
    per_frame = f.ds.get("PerFrameFunctionalGroupsSequence")
    shared = f.ds.get("SharedFunctionalGroupsSequence")
    return [_image(f, i, per_frame, shared) for i in range(f.n_frames)]
