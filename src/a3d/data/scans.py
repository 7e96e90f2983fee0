"""Reading whole CT scans for inference: DICOM series, NIfTI files, DeepLesion PNG series.

Every reader returns a :class:`Scan`: the volume in Hounsfield units brought to one canonical
axial orientation, plus the geometry needed to map anything found in it back to the input file
(voxel indices) and to the patient (physical LPS millimetres, as ITK and DICOM use).

Canonical orientation (``CANONICAL = "LPS"``): the SimpleITK image is re-oriented with
``DICOMOrient(image, "LPS")`` so that, for an axial acquisition, the direction matrix is the
identity in LPS. In the numpy array ``hu[z, y, x]``:

- ``x`` (columns) runs from the patient's right to the patient's left: image left = patient right,
  as radiologists view axial slices;
- ``y`` (rows) runs from anterior to posterior: image top = anterior;
- ``z`` (slices) runs from inferior to superior: slice 0 is the lowest (feet side).

Oblique acquisitions keep their (permuted, sign-corrected) direction cosines; the physical
coordinates reported always come from the image geometry, so they stay correct.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from a3d.errors import A3DError

log = logging.getLogger(__name__)

CANONICAL = "LPS"
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DL_PNG_OFFSET = 32768  # DeepLesion PNG: HU = value - 32768
_CT_MODALITIES = {"CT"}


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder."""

    uid: str
    files: list[str]
    modality: str = ""
    description: str = ""

    @property
    def n_files(self) -> int:
        return len(self.files)


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
    slice_files: list[str] | None = None  # DICOM/PNG: file of each original slice (original order)
    warnings: list[str] = field(default_factory=list)

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
        import SimpleITK as sitk

        return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.original.GetDirection())

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

        import SimpleITK as sitk

        orig = desc(self.original)
        orig["orientation"] = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(self.original.GetDirection())
        canon = desc(self.image)
        canon["orientation"] = CANONICAL
        canon["array_axes"] = "hu[z, y, x]: x right->left, y anterior->posterior, z inferior->superior"
        return {"coordinate_system": "LPS", "original": orig, "canonical": canon}


# --------------------------------------------------------------------------------------------
# helpers


def _sitk():
    import SimpleITK as sitk

    return sitk


def is_nifti(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(NIFTI_SUFFIXES)


def _is_dicom_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) >= 132 and head[128:132] == b"DICM" or path.suffix.lower() == ".dcm"


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except PermissionError as e:
        raise A3DError(f"{folder}: folder cannot be read (permission denied)") from e
    except OSError as e:
        raise A3DError(f"{folder}: folder cannot be read ({e.strerror or e})") from e


def classify_input(path: str | os.PathLike) -> str:
    """'nifti', 'dicom', 'deeplesion-png' or 'batch' (a folder holding several scans)."""
    p = Path(path)
    if not p.exists():
        raise A3DError(f"{p}: input does not exist (expected a DICOM folder, a .nii/.nii.gz file or a folder of scans)")
    if p.is_file():
        if is_nifti(p):
            return "nifti"
        if _is_dicom_file(p):
            raise A3DError(f"{p}: a single DICOM file is a 2D image; give the folder holding the whole series")
        if p.suffix.lower() == ".png":
            raise A3DError(f"{p}: a single PNG is a 2D image; give the DeepLesion series folder holding all its slices")
        raise A3DError(f"{p}: unsupported input file (expected .nii, .nii.gz, a DICOM series folder or a DeepLesion PNG folder)")
    if not os.access(p, os.R_OK | os.X_OK):
        raise A3DError(f"{p}: folder cannot be read (permission denied)")
    entries = [e for e in _listdir(p) if not e.name.startswith(".")]
    files = [e for e in entries if e.is_file()]
    if any(_is_dicom_file(f) for f in files[:50]):
        return "dicom"
    pngs = [f for f in files if f.suffix.lower() == ".png"]
    if pngs and len(pngs) >= len(files) - 1:  # tolerate e.g. a stray DL_info.csv beside them
        return "deeplesion-png"
    if scan_entries(p):
        return "batch"
    raise A3DError(f"{p}: no DICOM series, NIfTI file or DeepLesion PNG series found in this folder")


def scan_entries(folder: Path) -> list[Path]:
    """The scans inside a batch folder: NIfTI files and sub-folders holding DICOM or PNG series."""
    out = []
    for e in _listdir(Path(folder)):
        if e.name.startswith("."):
            continue
        if e.is_file() and is_nifti(e):
            out.append(e)
        elif e.is_dir():
            try:
                sub = [f for f in _listdir(e) if f.is_file() and not f.name.startswith(".")]
            except A3DError:
                out.append(e)  # reported when read
                continue
            if any(_is_dicom_file(f) for f in sub[:50]) or any(f.suffix.lower() == ".png" for f in sub):
                out.append(e)
    return out


def scan_name(path: str | os.PathLike) -> str:
    name = Path(path).name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            name = name[: -len(suf)]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "scan"


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


def _finish(img, source: str, kind: str, name: str, **kw) -> Scan:
    """Orient to canonical LPS, convert to float32 HU array."""
    sitk = _sitk()
    _check_geometry(img, source)
    original = img
    canon = sitk.DICOMOrient(img, CANONICAL)
    hu = sitk.GetArrayFromImage(canon).astype(np.float32, copy=False)
    if not np.isfinite(hu).all():
        raise A3DError(f"{source}: voxel values contain NaN or infinity")
    # keep only the geometry of both images (uint8 placeholders): the voxels live in ``hu``
    scan = Scan(hu=np.ascontiguousarray(hu), image=_geometry_only(canon), original=_geometry_only(original),
                source=str(source), kind=kind, name=name, **kw)
    del canon, original
    lo, hi = np.percentile(hu[:: max(1, hu.shape[0] // 16)], [1, 99])
    if lo > -500 or hi < -200:
        scan.warnings.append(
            f"intensities (1st-99th percentile {lo:.0f}..{hi:.0f}) do not look like CT Hounsfield units (air about -1000)"
        )
    return scan


# --------------------------------------------------------------------------------------------
# NIfTI


def read_nifti(path: str | os.PathLike) -> Scan:
    sitk = _sitk()
    path = Path(path)
    if not os.access(path, os.R_OK):
        raise A3DError(f"{path}: file cannot be read (permission denied)")
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.SetImageIO("NiftiImageIO")
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        size = reader.GetSize()
        img = reader.Execute()
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((ln.strip() for ln in first if "rror" in ln or "annot" in ln), first[-1] if first else "")
        raise A3DError(f"{path}: not a readable NIfTI file ({detail[:160]})") from e
    if dim == 4 and size[3] == 1:
        img = img[:, :, :, 0]
    elif dim > 3:
        raise A3DError(f"{path}: {dim}-D NIfTI of size {tuple(size)}; expected a single 3D CT volume")
    _check_nifti_complete(path, img)
    hdr = _nifti_header(path)
    warnings = []
    if hdr is not None:
        pixdim, qform, sform = hdr
        if any(not (p > 0) for p in pixdim[: min(dim, 3)]):
            raise A3DError(f"{path}: NIfTI header has no voxel spacing (pixdim {list(pixdim[:3])}); expected positive spacing in mm")
        if qform <= 0 and sform <= 0:
            warnings.append(f"{path}: NIfTI header has no orientation (qform_code = sform_code = 0); axes assumed as stored")
    scan = _finish(img, str(path), "nifti", scan_name(path))
    scan.warnings[:0] = warnings
    return scan


def _check_nifti_complete(path: Path, img) -> None:
    """ITK reads a truncated NIfTI (gzip or not) without complaint, padding it: check the length."""
    import gzip
    import zlib

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
    import gzip
    import struct

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
    import struct

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
    import struct

    found = _nifti1_header(path)
    if found is None:
        return None  # NIfTI-2 or unknown: trust ITK
    raw, end = found
    pixdim = struct.unpack(end + "8f", raw[76:108])[1:4]
    qform, sform = struct.unpack(end + "hh", raw[252:256])
    return pixdim, qform, sform


# --------------------------------------------------------------------------------------------
# DICOM


def list_dicom_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """All DICOM series in ``folder`` (not recursive), largest first."""
    sitk = _sitk()
    folder = Path(folder)
    _listdir(folder)
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as e:
        raise A3DError(f"{folder}: DICOM folder cannot be scanned ({str(e).strip().splitlines()[-1][:160]})") from e
    out = []
    for uid in uids:
        files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        modality, desc = _dicom_header(files[0]) if files else ("", "")
        out.append(SeriesInfo(uid=uid, files=files, modality=modality, description=desc))
    out.sort(key=lambda s: (-s.n_files, s.uid))
    return out


def _dicom_header(path: str) -> tuple[str, str]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # pydicom raises many types on corrupt files
        raise A3DError(f"{path}: corrupt or unreadable DICOM file ({type(e).__name__}: {str(e)[:120]})") from e
    return str(getattr(ds, "Modality", "") or ""), str(getattr(ds, "SeriesDescription", "") or "")


def _slice_gaps(files: list[str], first) -> np.ndarray | None:
    """Distances (mm) between consecutive slices along the slice normal, from ImagePositionPatient."""
    import pydicom

    try:
        iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
        normal = np.cross(iop[:3], iop[3:])
        pos = []
        for f in files:
            d = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["ImagePositionPatient"])
            pos.append(float(np.dot(normal, [float(v) for v in d.ImagePositionPatient])))
    except Exception:  # a header problem here is reported by the reader itself
        return None
    return np.abs(np.diff(np.sort(np.asarray(pos))))


def read_dicom_series(folder: str | os.PathLike, series_uid: str | None = None) -> Scan:
    """Read one series of a DICOM folder: ``series_uid`` or else the one with most files.

    HU: SimpleITK's GDCM reader applies RescaleSlope/RescaleIntercept (checked by the tests).
    """
    import pydicom

    sitk = _sitk()
    folder = Path(folder)
    series = list_dicom_series(folder)
    if not series:
        raise A3DError(f"{folder}: no readable DICOM series in this folder (files corrupt or not DICOM)")
    if series_uid is not None:
        match = [s for s in series if s.uid == series_uid]
        if not match:
            listed = ", ".join(f"{s.uid} ({s.n_files} files)" for s in series)
            raise A3DError(f"{folder}: no series with --series {series_uid}; found: {listed}")
        chosen = match[0]
    else:
        chosen = series[0]
        if len(series) > 1:
            log.info("%s: %d series, using the largest %s (%d files)", folder, len(series), chosen.uid, chosen.n_files)
    if chosen.n_files < 2:
        raise A3DError(f"{folder}: series {chosen.uid} holds a single 2D image; expected a CT volume with several slices")
    # metadata checks with pydicom: modality, spacing
    first = chosen.files[0]
    try:
        ds = pydicom.dcmread(first, stop_before_pixels=True)
    except Exception as e:
        raise A3DError(f"{first}: corrupt or unreadable DICOM file ({type(e).__name__}: {str(e)[:120]})") from e
    modality = str(getattr(ds, "Modality", "") or "")
    if modality and modality not in _CT_MODALITIES:
        raise A3DError(f"{first}: DICOM Modality is {modality}; a3d predict expects CT (Modality CT)")
    if "PixelSpacing" not in ds:
        raise A3DError(f"{first}: DICOM PixelSpacing (0028,0030) missing; expected the in-plane spacing in mm")
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        raise A3DError(f"{first}: DICOM ImagePositionPatient/ImageOrientationPatient missing; slice spacing unknown")
    warnings = []
    if series_uid is None and len(series) > 1:
        others = ", ".join(f"{s.uid} ({s.n_files} files)" for s in series[1:4]) + (" ..." if len(series) > 4 else "")
        warnings.append(f"{folder}: {len(series)} series; used the largest, {chosen.uid} ({chosen.n_files} files); "
                        f"others: {others}; choose one with --series UID")
    if not modality:
        warnings.append(f"{first}: DICOM Modality missing; assumed CT")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(chosen.files)
    try:
        img = reader.Execute()
    except RuntimeError as e:
        raise A3DError(f"{folder}: DICOM series {chosen.uid} cannot be read ({str(e).strip().splitlines()[-1][:160]})") from e
    if img.GetDimension() == 3 and img.GetSize()[2] != len(chosen.files):
        raise A3DError(f"{folder}: DICOM series {chosen.uid}: read {img.GetSize()[2]} slices from {len(chosen.files)} files")
    scan = _finish(img, str(folder), "dicom", scan_name(folder), series_uid=chosen.uid, slice_files=list(chosen.files))
    gaps = _slice_gaps(chosen.files, ds)
    if gaps is not None and len(gaps) and (gaps.max() - gaps.min()) > 0.1 * max(float(np.median(gaps)), 1e-6):
        warnings.append(
            f"{folder}: non-uniform slice spacing ({gaps.min():.2f}..{gaps.max():.2f} mm; missing slices?); "
            f"the volume uses {img.GetSpacing()[2]:.2f} mm throughout"
        )
    scan.warnings[:0] = warnings
    return scan


# --------------------------------------------------------------------------------------------
# DeepLesion PNG series


def parse_spacing(text: str) -> tuple[float, float, float]:
    """'0.8,0.8,5' -> (0.8, 0.8, 5.0); x, y, z in mm."""
    try:
        vals = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or not all(math.isfinite(v) and v > 0 for v in vals):
        raise A3DError(f"--spacing {text!r}: expected three positive numbers x,y,z in mm, e.g. 0.8,0.8,5")
    return vals  # type: ignore[return-value]


def _dl_info_spacing(csv_path: Path, series_dir: str) -> tuple[float, float, float] | None:
    """Spacing of a DeepLesion series from DL_info.csv (first row of that series)."""
    try:
        from a3d.data.dl_info import read_dl_info  # the data engineer's reader, when present

        for rec in read_dl_info(csv_path):
            if rec.series_dir == series_dir:
                return tuple(float(v) for v in rec.spacing)
        return None
    except ImportError:
        pass
    try:
        with open(csv_path, newline="") as f:
            rows = csv.reader(f)
            header = next(rows, None)
            if not header or "File_name" not in header[0]:
                raise A3DError(f"{csv_path}: not a DL_info.csv (first column should be File_name)")
            col = next((i for i, h in enumerate(header) if h.startswith("Spacing")), 12)
            for row in rows:
                if row and row[0].rsplit("_", 1)[0] == series_dir:
                    return parse_spacing(row[col].replace(" ", ""))
    except OSError as e:
        raise A3DError(f"{csv_path}: cannot read DL_info.csv ({e.strerror or e})") from e
    return None


def read_deeplesion_png(
    folder: str | os.PathLike, spacing: Sequence[float] | None = None, dl_info: str | os.PathLike | None = None
) -> Scan:
    """A DeepLesion series folder (``NNN.png``, 16-bit, HU = value - 32768).

    Geometry: DeepLesion slices are stored in radiological display (image top anterior, image left
    patient right), so in-plane the direction is LPS; increasing file index is taken as increasing
    z (inferior -> superior, an assumption: the PNGs do not say), origin 0.
    """
    import cv2

    sitk = _sitk()
    folder = Path(folder)
    pngs = [p for p in _listdir(folder) if p.suffix.lower() == ".png"]
    indexed = []
    for p in pngs:
        m = re.fullmatch(r"(\d+)", p.stem)
        if not m:
            raise A3DError(f"{p}: DeepLesion slice names are numbers (e.g. 109.png)")
        indexed.append((int(m.group(1)), p))
    indexed.sort()
    if len(indexed) < 2:
        raise A3DError(f"{folder}: a single PNG slice is a 2D image; expected a DeepLesion series folder with several slices")
    if spacing is None and dl_info is not None:
        spacing = _dl_info_spacing(Path(dl_info), folder.name)
        if spacing is None:
            raise A3DError(f"{dl_info}: no row for series {folder.name}; give its spacing with --spacing x,y,z")
    if spacing is None:
        raise A3DError(f"{folder}: DeepLesion PNGs carry no voxel spacing; give --dl-info DL_info.csv or --spacing x,y,z (mm)")
    slices = []
    for _, p in indexed:
        a = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if a is None:
            raise A3DError(f"{p}: corrupt or unreadable PNG")
        if a.ndim != 2 or a.dtype != np.uint16:
            raise A3DError(f"{p}: expected a 16-bit grayscale DeepLesion PNG, got {a.dtype} {a.shape}")
        slices.append(a)
    if len({s.shape for s in slices}) != 1:
        raise A3DError(f"{folder}: slices differ in size; expected one series")
    vol = (np.stack(slices).astype(np.int32) - DL_PNG_OFFSET).astype(np.int16)
    img = sitk.GetImageFromArray(vol)
    img.SetSpacing(tuple(float(s) for s in spacing))
    scan = _finish(img, str(folder), "deeplesion-png", scan_name(folder), slice_files=[str(p) for _, p in indexed])
    idx = [i for i, _ in indexed]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        scan.warnings.append(f"{folder}: slice numbers are not contiguous ({idx[0]}..{idx[-1]}, {len(idx)} files)")
    return scan


# --------------------------------------------------------------------------------------------
# entry point


def read_scan(
    path: str | os.PathLike,
    series_uid: str | None = None,
    spacing: Sequence[float] | None = None,
    dl_info: str | os.PathLike | None = None,
) -> Scan:
    """Read any supported single-scan input (not a batch folder)."""
    kind = classify_input(path)
    if kind == "nifti":
        return read_nifti(path)
    if kind == "dicom":
        return read_dicom_series(path, series_uid)
    if kind == "deeplesion-png":
        return read_deeplesion_png(path, spacing=spacing, dl_info=dl_info)
    raise A3DError(f"{path}: folder holds several scans; read them one by one (batch mode)")


# --------------------------------------------------------------------------------------------
# resampling along z (the model's own context slices use a3d.data.slices.interpolation_plan)


def resample_z(volume: np.ndarray, spacing_z: float, target: float = 2.0) -> np.ndarray:
    """Whole volume resampled along z to ``target`` mm by linear interpolation, blending like the
    dataset's neighbour interpolation (positions k * target / spacing, clamped to the volume)."""
    n = volume.shape[0]
    length = (n - 1) * spacing_z
    m = int(math.floor(length / target + 1e-6)) + 1
    pos = np.clip(np.arange(m) * (target / spacing_z), 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo).astype(np.float32).reshape(-1, *([1] * (volume.ndim - 1)))
    return volume[lo] * (1 - w) + volume[hi] * w
