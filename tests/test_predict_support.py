"""Shared helpers for the predict tests: synthetic CT writers (NIfTI, DICOM) with planted lesions,
and a deterministic stand-in detector with the detector's output format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def shared_ct(name: str = "example_ct_sm.nii.gz") -> Path:
    p = SHARED_DATA / name
    if not p.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real CT test data missing: looked for {p} (../shared/data from the repo root)")
        pytest.skip(f"real CT test data not found: looked for {p} (../shared/data from the repo root)")
    return p


# --------------------------------------------------------------------------------------------
# synthetic volumes


def phantom(shape_zyx=(24, 80, 96), seed=0) -> np.ndarray:
    """Body-like phantom in HU (z, y, x): air outside, soft tissue ellipse, noise."""
    z, h, w = shape_zyx
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    body = ((xx - w / 2) / (0.45 * w)) ** 2 + ((yy - h / 2) / (0.42 * h)) ** 2 <= 1
    vol = np.full(shape_zyx, -1000.0, dtype=np.float32)
    vol[:, body] = 40.0
    vol += rng.normal(0, 5, size=shape_zyx).astype(np.float32)
    return vol


def make_image(vol_zyx: np.ndarray, spacing, origin, direction):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(vol_zyx)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(o) for o in origin))
    img.SetDirection(tuple(float(d) for d in direction))
    return img


def plant_ellipsoids(img, lesions, hu=250.0):
    """Set voxels inside physical ellipsoids (center LPS mm, radii mm) to ``hu``.
    Returns (image, planted label array zyx in the image's own grid)."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img)
    size = img.GetSize()
    kk, jj, ii = np.meshgrid(np.arange(size[2]), np.arange(size[1]), np.arange(size[0]), indexing="ij")
    idx = np.stack([ii.ravel(), jj.ravel(), kk.ravel()], axis=1).astype(np.float64)
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    sp = np.asarray(img.GetSpacing())
    pts = np.asarray(img.GetOrigin()) + (idx * sp) @ d.T
    label = np.zeros(arr.shape, dtype=np.uint8)
    for n, (c, r) in enumerate(lesions, 1):
        q = (((pts - np.asarray(c)) / np.asarray(r)) ** 2).sum(axis=1) <= 1
        label.reshape(-1)[q] = n
    arr[label > 0] = hu
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out, label


RAS_DIRECTION = (-1, 0, 0, 0, -1, 0, 0, 0, 1)


def synthetic_nifti(path: Path, lesions=None, spacing=(1.5, 1.5, 2.5), shape_zyx=(24, 80, 96)):
    """NIfTI (RAS-stored like most NIfTI files) with planted bright ellipsoids; returns
    (path, lesions, planted label array zyx in the file's grid, image)."""
    import SimpleITK as sitk

    origin = (70.0, 50.0, -20.0)
    img = make_image(phantom(shape_zyx), spacing, origin, RAS_DIRECTION)
    if lesions is None:
        # centres in physical LPS mm: x in (origin_x - 96*1.5, origin_x], y in (50-120, 50], z in [-20, 37.5]
        lesions = [((20.0, 0.0, 10.0), (9.0, 6.0, 6.0)), ((-40.0, -20.0, 20.0), (6.0, 6.0, 5.0))]
    img, label = plant_ellipsoids(img, lesions)
    img = sitk.Cast(img, sitk.sitkInt16)
    sitk.WriteImage(img, str(path))
    return path, lesions, label, img


def write_dicom_series(folder: Path, vol_zyx: np.ndarray, spacing=(0.7, 0.7, 2.5), origin=(-40.0, -30.0, 100.0),
                       modality="CT", slope=0.5, intercept=-1024.0, series_uid=None, shuffle=True,
                       drop=(), study_uid="1.2.826.0.1.3680043.8.498.1"):
    """Axial DICOM series (identity orientation, slices ascending in z) with rescale slope/intercept.
    Stored value = (HU - intercept) / slope as uint16. ``drop``: tags to leave out."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    n = vol_zyx.shape[0]
    order = np.random.default_rng(1).permutation(n) if shuffle else np.arange(n)
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        sop = generate_uid()
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        fn = folder / f"s{series_uid.replace('.', '')[-6:]}_{k:03d}.dcm"
        ds = FileDataset(str(fn), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = sop
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = study_uid + ".1"
        ds.Modality = modality
        ds.PatientID = "SYNTH"
        ds.PatientName = "Synthetic^Phantom"
        ds.SeriesDescription = "synthetic"
        ds.InstanceNumber = int(n - k)  # reversed on purpose: sorting must use positions
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [float(origin[0]), float(origin[1]), float(origin[2] + k * spacing[2])]
        ds.SliceThickness = float(spacing[2])
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.Rows, ds.Columns = vol_zyx.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        stored = np.round((vol_zyx[k] - intercept) / slope).clip(0, 65535).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        for tag in drop:
            if tag in ds:
                delattr(ds, tag)
        ds.save_as(str(fn), enforce_file_format=True)
    return series_uid


# --------------------------------------------------------------------------------------------
# stand-in detector


class BlobDetector(nn.Module):
    """Deterministic stand-in for the detector: on the key (middle) slice, connected components
    brighter than ``hu`` are detections (score from size), masks exact. Same output format as the
    detector: list of dicts boxes (N, 4) x1y1x2y2 pixel-edge coords, scores, labels, masks (N,1,H,W)."""

    def __init__(self, hu: float = 150.0, min_pixels: int = 4):
        super().__init__()
        self.level = (min(max(hu, -1024), 2050) + 1024) * 255 / 3074 - 50
        self.min_pixels = min_pixels
        self.calls = []
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, images, thickness=None):
        import cv2

        self.calls.append((tuple(images.shape), None if thickness is None else thickness.tolist()))
        out = []
        d = images.shape[2]
        for img in images[:, 0, d // 2].cpu().numpy():
            m = (img > self.level).astype(np.uint8)
            n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
            boxes, scores, masks = [], [], []
            for i in range(1, n):
                x, y, w, h, area = stats[i]
                if area < self.min_pixels:
                    continue
                boxes.append([x, y, x + w, y + h])
                scores.append(min(0.99, 0.5 + area / 2000))
                masks.append((lab == i).astype(np.float32)[None])
            H, W = img.shape
            out.append({
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor(scores, dtype=torch.float32),
                "labels": torch.ones(len(boxes), dtype=torch.int64),
                "masks": torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, 1, H, W)),
            })
        return out
