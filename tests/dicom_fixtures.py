"""DICOM test series with every geometry fault the reader must catch: slices at chosen positions,
tilted or oblique stacks, per-slice tags (AcquisitionNumber, ImageType, GantryDetectorTilt),
truncated files, and real CT volumes written as DICOM."""

from __future__ import annotations

from pathlib import Path

import numpy as np

STUDY_UID = "1.2.826.0.1.3680043.8.498.77"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def _ds(v: float):
    """A decimal string of at most 16 characters (DICOM's DS), as a scanner writes it."""
    from pydicom.valuerep import DSfloat

    return DSfloat(float(v), auto_format=True)


def write_slices(folder: Path, vol_zyx: np.ndarray, spacing=(0.7, 0.8, 2.0), origin=(-40.0, -30.0, 100.0),
                 positions=None, iop=(1, 0, 0, 0, 1, 0), drift=(0.0, 0.0, 0.0), series_uid=None, modality="CT",
                 per_slice=None, study_uid=STUDY_UID, prefix="ct", stored="int16") -> list[Path]:
    """One file per slice k of ``vol_zyx`` (HU, stored as int16 with RescaleIntercept 0, or with
    ``stored="uint12"`` as most scanners write it: unsigned 12-bit, HU + 1024), file names
    ``{prefix}_{k:03d}.dcm``. Slice k lies at ``origin + positions[k] * normal + k * drift``
    (positions default to k * spacing[2]); ``spacing`` is (x = between columns, y = between rows, z).
    ``per_slice``: {k: {tag: value}} set on slice k (None removes the tag). Returns the paths in k order."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    iop = np.asarray(iop, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    n = vol_zyx.shape[0]
    positions = np.arange(n) * spacing[2] if positions is None else np.asarray(positions, dtype=float)
    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT_IMAGE
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{prefix}_{k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = study_uid + ".9"
        ds.Modality, ds.PatientID, ds.PatientName = modality, "A3D-TEST", "Test^Phantom"
        ds.PatientBirthDate, ds.PatientSex, ds.AccessionNumber, ds.StudyID = "", "O", "", "1"
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName = "20260101", "120000", ""
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 3, k + 1, 1
        ds.SeriesDescription, ds.ImageType = "test series", ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ipp = np.asarray(origin, dtype=float) + positions[k] * normal + k * np.asarray(drift, dtype=float)
        ds.ImagePositionPatient = [_ds(v) for v in ipp]
        ds.SliceThickness = _ds(spacing[2])
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.Rows, ds.Columns = vol_zyx.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleType = 1, "HU"
        if stored == "uint12":
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.RescaleIntercept = -1024
            ds.PixelData = (np.round(vol_zyx[k]) + 1024).clip(0, 4095).astype("<u2").tobytes()
        else:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept = 0
            ds.PixelData = np.round(vol_zyx[k]).clip(-32768, 32767).astype("<i2").tobytes()
        for tag, value in (per_slice or {}).get(k, {}).items():
            if value is None:
                delattr(ds, tag)
            else:
                setattr(ds, tag, value)
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def truncate(path: Path, keep: int | None = None, cut: int = 500) -> None:
    """Cut a file: keep its first ``keep`` bytes, or drop its last ``cut`` bytes (inside the pixels)."""
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep is not None else data[:-cut])


def real_ct_as_dicom(nifti: Path, folder: Path, mirrored: bool = False, **kw) -> tuple[list[Path], object]:
    """A real CT NIfTI written as an axial DICOM series. The volume is re-oriented to LPS first; the
    series has rows along +x and columns along +y (identity orientation) or, ``mirrored``, rows
    along -x and columns along -y (ImageOrientationPatient -1 0 0 0 -1 0: each image is the LPS
    slice turned by 180 degrees, the same anatomy at the same patient positions).
    Returns (paths in slice order, the LPS SimpleITK image)."""
    import SimpleITK as sitk

    img = sitk.DICOMOrient(sitk.ReadImage(str(nifti)), "LPS")
    vol = sitk.GetArrayFromImage(img).astype(np.float32)
    sp, origin = img.GetSpacing(), np.asarray(img.GetOrigin(), dtype=float)
    if mirrored:
        _, h, w = vol.shape
        vol = vol[:, ::-1, ::-1]
        origin = origin + np.array([(w - 1) * sp[0], (h - 1) * sp[1], 0.0])
        kw["iop"] = (-1, 0, 0, 0, -1, 0)
    return write_slices(folder, vol, spacing=sp, origin=tuple(origin), **kw), img


REAL_LESIONS = (((190.0, 200.0, 1.5), (14.0, 10.0, 5.0)), ((330.0, 260.0, 2.5), (9.0, 9.0, 4.0)))  # px, px, slice; mm
LESION_HU, DETECT_HU = 1800.0, 1500.0  # above any voxel of the real CT (max 1207 HU): only planted lesions


def real_looking_series(nifti: Path, folder: Path, slices: int = 4, stored: str = "uint12",
                        **kw) -> tuple[list[Path], np.ndarray]:
    """``slices`` middle slices of a real CT as a scanner writes them: 512 x 512 pixels of 0.75 mm
    (the 3 mm CT upsampled 4x in-plane, centred, padded with air), CT noise (sigma 8 HU, fixed
    seed), two planted lesions of LESION_HU, stored unsigned 12-bit with RescaleIntercept -1024 (or
    ``stored="int16"``: signed 16-bit HU, as other scanners write it).
    Returns (paths in slice order, the HU volume (z, y, x) the files hold)."""
    import cv2
    import SimpleITK as sitk

    img = sitk.DICOMOrient(sitk.ReadImage(str(nifti)), "LPS")
    vol = sitk.GetArrayFromImage(img).astype(np.float32)
    z0 = vol.shape[0] // 2 - slices // 2
    vol = np.stack([cv2.resize(s, None, fx=4, fy=4, interpolation=cv2.INTER_LINEAR) for s in vol[z0:z0 + slices]])
    out = np.full((slices, 512, 512), -1024.0, dtype=np.float32)
    h, w = vol.shape[1:]
    y0, x0 = (512 - h) // 2, (512 - w) // 2
    out[:, y0:y0 + h, x0:x0 + w] = vol
    out += np.random.default_rng(7).normal(0, 8, out.shape).astype(np.float32)
    zz, yy, xx = np.mgrid[:slices, :512, :512]
    for (cx, cy, cz), (rx, ry, rz) in REAL_LESIONS:
        inside = ((xx - cx) * 0.75 / rx) ** 2 + ((yy - cy) * 0.75 / ry) ** 2 + ((zz - cz) * 3.0 / rz) ** 2 <= 1
        out[inside] = LESION_HU
    out = np.round(out).clip(-1024, 3071)
    origin = np.asarray(img.GetOrigin(), dtype=float) + np.array([-x0 * 0.75, -y0 * 0.75, z0 * 3.0])
    paths = write_slices(folder, out, spacing=(0.75, 0.75, 3.0), origin=tuple(origin), stored=stored, **kw)
    return paths, out


ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def _item(**attrs):
    from pydicom.dataset import Dataset

    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def enhanced_ct(single: list[Path], path: Path, order=None, intercepts=None) -> Path:
    """An Enhanced CT Image (one multi-frame file) from single-frame files: shared functional groups
    (pixel measures, orientation, frame type), per-frame plane position, pixel value transformation
    and frame content. ``order``: frame i holds slice ``order[i]`` (default: slice order);
    ``intercepts``: per-frame RescaleIntercept (the stored values are shifted to keep the same HU)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    srcs = [pydicom.dcmread(p) for p in single]
    order = list(range(len(srcs))) if order is None else list(order)
    first = srcs[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ENHANCED_CT, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    for key in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName", "Rows", "Columns",
                "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
                "PixelRepresentation", "SeriesDescription"):
        setattr(ds, key, first.get(key))
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = generate_uid(), "CT", 4, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.ContentQualification, ds.BurnedInAnnotation, ds.LossyImageCompression = "PRODUCT", "NO", "00"
    ds.AcquisitionDateTime, ds.ContentDate, ds.ContentTime = "20260101120000", "20260101", "120000"
    ds.PresentationLUTShape, ds.NumberOfFrames = "IDENTITY", len(order)
    ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber, ds.SoftwareVersions = "a3d", "test", "0", "0"
    dim_uid = generate_uid()
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=dim_uid)])
    ds.DimensionIndexSequence = Sequence([_item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=0x00200032,
                                                FunctionalGroupPointer=0x00209113)])
    ds.SharedFunctionalGroupsSequence = Sequence([_item(
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=first.PixelSpacing, SliceThickness=first.SliceThickness)]),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=first.ImageOrientationPatient)]),
        CTImageFrameTypeSequence=Sequence([_item(FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"])]))])
    frames, per_frame = [], []
    base = float(first.RescaleIntercept)
    for i, k in enumerate(order):
        src = srcs[k]
        b = float(intercepts[i]) if intercepts is not None else base
        stored = np.round(src.pixel_array.astype(np.float64) + (float(src.RescaleIntercept) - b))
        frames.append(stored.astype(src.pixel_array.dtype).tobytes())
        per_frame.append(_item(
            PlanePositionSequence=Sequence([_item(ImagePositionPatient=src.ImagePositionPatient)]),
            PixelValueTransformationSequence=Sequence([_item(RescaleIntercept=b, RescaleSlope=1, RescaleType="HU")]),
            FrameContentSequence=Sequence([_item(DimensionIndexValues=[int(k) + 1], FrameAcquisitionDateTime="20260101120000",
                                                 FrameReferenceDateTime="20260101120000", FrameAcquisitionDuration=0)])))
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = b"".join(frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def legacy_enhanced_ct(single: list[Path], path: Path) -> Path:
    """A Legacy Converted Enhanced CT Image from single-frame files, by highdicom."""
    import highdicom as hd
    import pydicom

    lce = hd.legacy.LegacyConvertedEnhancedCTImage([pydicom.dcmread(p) for p in single], series_instance_uid=hd.UID(),
                                                   series_number=5, sop_instance_uid=hd.UID(), instance_number=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    lce.save_as(str(path), enforce_file_format=True)
    return path
