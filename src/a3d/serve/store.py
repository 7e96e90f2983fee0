"""Keeping a received instance: checked, written durably under ``received/``, then recorded in the
queue; only then does the C-STORE answer success. Every other outcome is a failure status."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID

from a3d.data.scans.dicom_pixels import CT_SOP_CLASSES
from a3d.io import write_bytes_durable
from a3d.serve.queue import Queue

log = logging.getLogger("a3d.serve")

RECEIVED_DIR = "received"
SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122  # refused: the node reads CT only
NOT_CT = 0xA900  # a CT SOP class whose Modality is not CT
CANNOT_UNDERSTAND = 0xC000  # no usable Study/Series/SOP Instance UID
OUT_OF_RESOURCES = 0xA700  # the instance could not be written or recorded

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class Outcome:
    """A C-STORE's status, and the reason for a failure (for the association's log line)."""

    status: int
    reason: str = ""


def _uid(ds, key: str) -> str | None:
    value = str(ds.get(key, "") or "").strip()
    return value if len(value) <= 64 and _UID.match(value) else None


class InstanceStore:
    """Files go to ``work_dir/received/<Study UID>/<Series UID>/<SOP Instance UID>.dcm``: one folder
    per series, which is what a job reads."""

    def __init__(self, work_dir: str | Path, queue: Queue):
        self.root = Path(work_dir) / RECEIVED_DIR
        self.queue = queue

    def series_dir(self, study_uid: str, series_uid: str) -> Path:
        return self.root / study_uid / series_uid

    def keep(self, header, encoded: bytes) -> Outcome:
        """Store one instance: ``header`` its dataset (pixel data not needed), ``encoded`` the file as
        received (preamble and file meta included; pixel data never decoded, so any transfer syntax)."""
        sop_class = str(header.get("SOPClassUID", ""))
        if sop_class not in CT_SOP_CLASSES:
            return Outcome(SOP_CLASS_NOT_SUPPORTED, f"{_sop_name(sop_class)}: not a CT image")
        modality = str(header.get("Modality", "") or "")
        if modality != "CT":
            return Outcome(NOT_CT, f"Modality {modality or 'missing'}: not CT")
        uids = [_uid(header, k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
        if None in uids:
            return Outcome(CANNOT_UNDERSTAND, "no valid Study, Series or SOP Instance UID")
        study, series, sop = uids
        path = self.series_dir(study, series) / f"{sop}.dcm"
        try:
            write_bytes_durable(path, encoded)
        except OSError as e:
            log.error("cannot write instance %s of series %s: %s", sop, series, e.strerror or e)
            return Outcome(OUT_OF_RESOURCES, f"cannot write: {e.strerror or e}")
        try:
            self.queue.add_instance(study, series, sop, str(path))
        except Exception as e:  # a full disk or a locked database: the sender must try again
            log.error("cannot record instance %s of series %s: %s", sop, series, e)
            return Outcome(OUT_OF_RESOURCES, f"cannot record: {e}")
        return Outcome(SUCCESS)


def _sop_name(uid: str) -> str:
    name = UID(uid).name if uid else ""
    return name if name and name != uid else f"SOP class {uid or 'missing'}"
