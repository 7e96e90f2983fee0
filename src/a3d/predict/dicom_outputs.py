"""``--dicom``: the SEG and the SR of one scan written into ``dicom/`` of the output folder."""

from __future__ import annotations

import logging
from pathlib import Path

import highdicom as hd

from a3d.io import write_bytes_atomic
from a3d.predict.dicom_refs import check_dicom_source, dcm_bytes
from a3d.predict.dicom_seg import segmentation
from a3d.predict.dicom_sr import measurement_report
from a3d.predict.dicom_uids import assign_new_uids, check_references, missing_reference_uids, write_image_copies
from a3d.predict.outputs import DicomSeries
from a3d.predict.results import PredictionResult

# highdicom logs every attribute module it copies at INFO: the CLI's INFO log is for a3d's progress
logging.getLogger("highdicom").setLevel(logging.WARNING)

SEG_FILE = "dicom/seg.dcm"
SR_FILE = "dicom/sr.dcm"


def write_dicom(res: PredictionResult, folder: Path, new_uids: bool = False, series: DicomSeries | None = None) -> dict:
    """Write ``dicom/seg.dcm`` and ``dicom/sr.dcm``; returns their names for ``files`` in
    predictions.json. Without candidates neither is written (None; a warning says why): a SEG needs
    a segment and a TID 1500 report a measurement group. ``new_uids``: sources without UIDs get new
    ones, written with copies of the images into ``dicom/images/`` (:mod:`a3d.predict.dicom_uids`). ``series``: the
    SEG's and SR's Series Instance UIDs and Instance Number (default: new series, instance 1)."""
    check_dicom_source(res.scan)
    check_references(res.scan, new_uids)
    if not res.candidates:
        res.scan.warnings.append("no candidates: no DICOM SEG/SR written (--dicom; a SEG needs a segment, "
                                 "a TID 1500 report a measurement)")
        return {"dicom_seg": None, "dicom_sr": None}
    files = {}
    if new_uids and missing_reference_uids(res.scan):
        files["dicom_new_uids"] = assign_new_uids(res.scan)
        write_image_copies(res.scan, folder)
    tracking = {c.id: hd.UID() for c in res.candidates}  # one finding, one UID, in the SEG and the SR
    series = series or DicomSeries(hd.UID(), hd.UID())
    seg = segmentation(res, tracking, series.seg_uid, series.instance_number)
    sr = measurement_report(res, tracking, seg, series.sr_uid, series.instance_number)
    write_bytes_atomic(folder / SEG_FILE, dcm_bytes(seg))
    write_bytes_atomic(folder / SR_FILE, dcm_bytes(sr))
    return {"dicom_seg": SEG_FILE, "dicom_sr": SR_FILE, **files}
