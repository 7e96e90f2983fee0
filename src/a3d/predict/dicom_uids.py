"""``--dicom`` on sources without instance UIDs (anonymised exports): refused by default, since a
SEG or SR references its source images by Study, Series and SOP Instance UID and their Frame of
Reference; with ``--new-uids`` the missing UIDs are generated, set on the source headers the SEG
and SR are built from, recorded in ``predictions.json`` (``files.dicom_new_uids``) and written, with
the source images' pixels unchanged, as copies in ``dicom/images/``: the input files are never
changed, so the SEG and SR are to be loaded together with those copies (one consistent study for
a viewer or a PACS, which would refuse the UID-less originals anyway)."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from a3d.data.scans import Scan
from a3d.errors import A3DError
from a3d.io import write_bytes_atomic
from a3d.predict.dicom_refs import dcm_bytes

REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
IMAGES_DIR = "dicom/images"


def _sources(scan: Scan) -> dict[str, object]:
    """Source file path -> its header (one per file, multi-frame files once)."""
    out = {}
    for path, ds in zip(scan.slice_files or [], scan.source_headers or []):
        if path is not None and ds is not None:
            out.setdefault(path, ds)
    return out


def _lacking(ds) -> list[str]:
    return [k for k in REFERENCE_UIDS if not str(ds.get(k, "") or "").strip()]


def missing_reference_uids(scan: Scan) -> list[str]:
    """The reference UIDs some source image of the scan lacks (empty when a SEG/SR can reference them)."""
    return sorted({k for ds in _sources(scan).values() for k in _lacking(ds)}, key=REFERENCE_UIDS.index)


def check_references(scan: Scan, new_uids: bool) -> None:
    """Before any work: ``--dicom`` on sources without UIDs needs ``--new-uids`` (A3DError)."""
    missing = missing_reference_uids(scan)
    if missing and not new_uids:
        raise A3DError(f"{scan.source}: --dicom: the source images have no {'/'.join(missing)}; a SEG/SR cannot "
                       "reference instances without UIDs: pass --new-uids to generate them (written with copies of "
                       "the images into dicom/images/; the input files are not changed)")


def _relative(path: str, scan: Scan) -> str:
    return os.path.relpath(path, scan.source) if os.path.isdir(scan.source) else os.path.basename(path)


def assign_new_uids(scan: Scan) -> dict:
    """Generate the missing UIDs and set them on the scan's source headers (one study, series and
    Frame of Reference for the series: the ones present, else new; a new SOP Instance UID per file
    that has none); returns the record for ``predictions.json``."""
    sources = _sources(scan)

    def present(key: str) -> str:
        return next((v for v in (str(ds.get(key, "") or "").strip() for ds in sources.values()) if v), "")

    shared = {k: present(k) or generate_uid() for k in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")}
    instances = {}
    for path, ds in sources.items():
        for key in _lacking(ds):
            setattr(ds, key, shared.get(key) or generate_uid())
        instances[_relative(path, scan)] = str(ds.SOPInstanceUID)
    return {"study_instance_uid": shared["StudyInstanceUID"], "series_instance_uid": shared["SeriesInstanceUID"],
            "frame_of_reference_uid": shared["FrameOfReferenceUID"], "images": IMAGES_DIR + "/", "instances": instances}


def write_image_copies(scan: Scan, folder: Path) -> None:
    """Each source file, pixels and transfer syntax unchanged, with the UIDs of its header, into
    ``folder/dicom/images/`` (named after its path relative to the input, separators as ``_``)."""
    for path, header in _sources(scan).items():
        ds = pydicom.dcmread(path)
        for key in REFERENCE_UIDS:
            setattr(ds, key, header[key].value)
        ds.file_meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
        name = _relative(path, scan).replace(os.sep, "_")
        write_bytes_atomic(folder / IMAGES_DIR / (name if name.lower().endswith(".dcm") else name + ".dcm"),
                           dcm_bytes(ds))

