"""``--dicom``: the SEG and the SR of one scan written into ``dicom/`` of the output folder."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd

from a3d.io import write_bytes_atomic
from a3d.predict.dicom_refs import check_dicom_source
from a3d.predict.dicom_seg import segmentation
from a3d.predict.dicom_sr import measurement_report
from a3d.predict.results import PredictionResult

SEG_FILE = "dicom/seg.dcm"
SR_FILE = "dicom/sr.dcm"


def _dcm_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write_dicom(res: PredictionResult, folder: Path) -> dict[str, str | None]:
    """Write ``dicom/seg.dcm`` (when there are candidates: a SEG needs a segment) and
    ``dicom/sr.dcm``; returns their names for ``files`` in predictions.json (None: not written)."""
    check_dicom_source(res.scan)
    tracking = {c.id: hd.UID() for c in res.candidates}  # one finding, one UID, in the SEG and the SR
    seg = segmentation(res, tracking) if res.candidates else None
    sr = measurement_report(res, tracking, seg)
    if seg is not None:
        write_bytes_atomic(folder / SEG_FILE, _dcm_bytes(seg))
    write_bytes_atomic(folder / SR_FILE, _dcm_bytes(sr))
    return {"dicom_seg": SEG_FILE if seg is not None else None, "dicom_sr": SR_FILE}
