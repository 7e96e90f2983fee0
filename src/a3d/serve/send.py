"""Sending a job's results: C-STORE to a DICOM node (``AE@host:port``) or STOW-RS to a DICOMweb
server (``https://.../dicom-web``), and the bounded backoff between attempts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from a3d.errors import A3DError

_DIMSE = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:@]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})$")
# C-STORE statuses that mean "stored": success and the warnings (coercion, elements discarded)
_STORED = {0x0000, 0xB000, 0xB006, 0xB007}


class SendError(Exception):
    """One attempt failed; its message goes to the log and to ``a3d serve status``."""


@dataclass(frozen=True)
class Destination:
    """Where results go: ``name`` is how the queue and the log name it (the text the user gave)."""

    name: str
    ae_title: str = ""
    host: str = ""
    port: int = 0
    url: str = ""  # STOW-RS base URL (the DICOMweb root, without /studies)

    @property
    def stow(self) -> bool:
        return bool(self.url)


def parse_send_to(text: str) -> Destination:
    """``--send-to AE@host:port`` (A3DError otherwise)."""
    m = _DIMSE.match(text.strip())
    if not m or not 0 < int(m["port"]) < 65536 or m["ae"] != m["ae"].strip():
        raise A3DError(f"--send-to {text!r}: expected AE@host:port (an AE title of at most 16 characters, "
                       "e.g. PACS@10.0.0.5:104)")
    return Destination(text.strip(), ae_title=m["ae"], host=m["host"].strip("[]"), port=int(m["port"]))


def parse_stow(url: str) -> Destination:
    if not re.match(r"^https?://[^/\s]+", url):
        raise A3DError(f"--stow {url!r}: expected the DICOMweb base URL, e.g. https://pacs.example/dicom-web")
    return Destination(url, url=url.rstrip("/"))


def retry_delay(attempts: int, base_s: float, cap_s: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones: doubling from ``base_s``, at most ``cap_s``."""
    return min(cap_s, base_s * 2 ** max(0, attempts - 1))


def send(dest: Destination, files: list[Path], calling_ae: str, timeout_s: float = 60.0) -> None:
    """Send every file to ``dest`` (SendError on the first that is not stored)."""
    datasets = [pydicom.dcmread(f) for f in files]
    if dest.stow:
        _stow(dest, datasets, timeout_s)
    else:
        _c_store(dest, datasets, calling_ae, timeout_s)


def _c_store(dest: Destination, datasets: list, calling_ae: str, timeout_s: float) -> None:
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    if not assoc.is_established:
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "no answer or connection refused"
        raise SendError(f"association to {dest.name} failed ({why})")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code not in _STORED:
                raise SendError(f"C-STORE of {ds.SOPInstanceUID} to {dest.name}: "
                                + (f"status 0x{code:04X}" if code is not None else "no response"))
    finally:
        if assoc.is_established:
            assoc.release()


def _stow(dest: Destination, datasets: list, timeout_s: float) -> None:
    client = DICOMwebClient(url=dest.url, timeout=timeout_s)
    try:
        response = client.store_instances(datasets=datasets)
    except requests.RequestException as e:
        raise SendError(f"STOW-RS to {dest.name}: {type(e).__name__}: {str(e).splitlines()[0][:160]}") from None
    failed = response.get("FailedSOPSequence") if response is not None else None
    if failed:
        reason = failed[0].get("FailureReason", "?")
        raise SendError(f"STOW-RS to {dest.name}: {len(failed)} instances not stored (failure reason {reason})")
